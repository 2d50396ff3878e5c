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


def _check_foreign_keys(connection) -> None:
    """With enforcement off during the migration, the references are checked once it has run."""
    broken = connection.execute(text("PRAGMA foreign_key_check")).all()
    if broken:
        raise RuntimeError(f"the migration left broken references (table, rowid, parent, fk): {broken[:10]}")


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
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
