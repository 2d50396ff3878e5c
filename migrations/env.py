"""Alembic environment: the URL comes from the caller's config or from RLHF settings."""

from alembic import context
from sqlalchemy import event, pool, text

from app.db import is_sqlite, make_engine
from app.models import Base
from app.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url


def _foreign_keys_off(dbapi_connection, _record) -> None:
    # SQLite batch mode alters a table by copying it and dropping the old one; with foreign keys on, that DROP
    # deletes the old rows first, so ON DELETE CASCADE / SET NULL would empty or unlink the referencing tables (and
    # a plain reference refuses the drop). The pragma is ignored inside a transaction: set it as the connection
    # opens, after app.db's pragmas turned it on.
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _broken_references(connection) -> set[tuple]:
    """(table, rowid, referenced table) of each row whose reference points nowhere."""
    return {tuple(row[:3]) for row in connection.execute(text("PRAGMA foreign_key_check"))}


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url(), poolclass=pool.NullPool)
    sqlite = is_sqlite(engine)
    if sqlite:
        event.listen(engine, "connect", _foreign_keys_off)
    with engine.connect() as connection:
        # render_as_batch: SQLite can only ALTER tables by copying them; batch mode does that for later revisions.
        # transactional_ddl: SQLite's DDL is transactional (app.db issues BEGIN itself), so an upgrade is all or
        # nothing there too, and a failed reference check below rolls it back.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True, transactional_ddl=True
        )
        with context.begin_transaction():
            # With enforcement off, the references are checked once the migrations ran: any they broke fails them
            # (rolled back). Ones the database had before (written with foreign keys off) are not theirs.
            before = _broken_references(connection) if sqlite else set()
            context.run_migrations()
            broken = _broken_references(connection) - before if sqlite else set()
            if broken:
                raise RuntimeError(f"the migration broke references (table, rowid, referenced): {sorted(broken)[:10]}")
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
