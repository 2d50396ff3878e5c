"""Engine and sessions. SQLite gets WAL, a busy timeout and foreign keys on every connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from app.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseNotMigrated(RuntimeError):
    """The schema is missing or behind: the server and the worker refuse to start on it."""


class DatabaseUnreachable(RuntimeError):
    """The configured database URL cannot be connected to."""


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Python's sqlite3 opens transactions lazily and its own way; turn that off and issue BEGIN ourselves
    # (below) so that SQLAlchemy's transactions are real ones.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes in WAL mode; fsync at checkpoints
    cursor.close()


def make_engine(url: str, *, read_only: bool = False, **kwargs) -> Engine:
    """`read_only` engines begin DEFERRED transactions on SQLite, so long reads (exports, stats) never hold the
    write lock; the default engine begins IMMEDIATE, so a read-then-write transaction can't fail on lock upgrade
    (SQLITE_BUSY that busy_timeout cannot resolve in WAL mode), and takes the writer gate first
    (app.annotate.write_gate)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if read_only:
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        elif database and database != ":memory:" and not database.startswith("file:"):
            # every write transaction takes the writer gate first (see app.annotate.write_gate): no ungated writer holds
            # the write lock the event loop's annotate transactions would wait for
            from app.annotate.write_gate import gate_engine

            gate_engine(engine, database)
        else:
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.ensure_data_dir()
    return make_engine(settings.sqlalchemy_url)


@lru_cache
def get_read_engine() -> Engine:
    """For long reads (exports, stats); the same engine as get_engine() on PostgreSQL."""
    engine = get_engine()
    return make_engine(get_settings().sqlalchemy_url, read_only=True) if is_sqlite(engine) else engine


def database_reachable() -> bool:
    """One `SELECT 1` on the read engine: a read never waits for SQLite's writer (nor for the writer gate)."""
    try:
        with get_read_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any driver error means the database is unreachable
        return False
    return True


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@lru_cache
def get_read_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_read_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (CLI, worker)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error: report the reason, not a traceback
        raise DatabaseUnreachable(
            f"cannot connect to the database {engine.url.render_as_string(hide_password=True)}: {_first_line(exc)}"
        ) from exc


def check_migrated(engine: Engine) -> None:
    """Raise DatabaseNotMigrated unless the database is at Alembic's head revision."""
    from app.migrations_runner import head_revision  # local import: keeps alembic off the hot path

    check_connection(engine)
    with engine.connect() as conn:
        current = None
        if inspect(conn).has_table("alembic_version"):
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    head = head_revision()
    if current != head:
        state = "not migrated" if current is None else f"at revision {current}, head is {head}"
        raise DatabaseNotMigrated(f"the database is {state}: run `rlhf db upgrade` first")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
