"""A database session for a CLI command: connection and migration problems become a one-line exit 2."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from app.cli.errors import fail
from app.db import DatabaseNotMigrated, DatabaseUnreachable, check_migrated, get_engine, session_scope


@contextmanager
def cli_session() -> Iterator[Session]:
    try:
        check_migrated(get_engine())
    except (DatabaseUnreachable, DatabaseNotMigrated) as exc:
        fail(str(exc))
    with session_scope() as session:
        yield session
