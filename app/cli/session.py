"""A database session for a CLI command: connection and migration problems, and any refusal of a service
(ServiceError), become a one-line exit 2; the transaction rolls back."""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from app.cli.errors import fail
from app.db import DatabaseNotMigrated, DatabaseUnreachable, check_migrated, get_engine, session_scope
from app.services.errors import ServiceError


@contextmanager
def cli_session() -> Iterator[Session]:
    try:
        check_migrated(get_engine())
    except (DatabaseUnreachable, DatabaseNotMigrated) as exc:
        fail(str(exc))
    try:
        with session_scope() as session:
            yield session
    except ServiceError as exc:
        fail(str(exc))
