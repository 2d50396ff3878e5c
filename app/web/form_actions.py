"""An admin form's action: the service call commits and answers (a redirect, mostly), or its error rolls the
session back and shows the page again with the message, at the error's status."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi.responses import Response

from app.services.errors import ServiceError

T = TypeVar("T")


def commit_or_show_error(
    db,
    action: Callable[[], T],
    *,
    errors: type[ServiceError],
    page: Callable[..., Response],
    done: Callable[[T], Response],
) -> Response:
    """`page(error=..., status_code=...)` renders the form's page; `done(result)` answers a committed action."""
    try:
        result = action()
    except errors as exc:
        db.rollback()
        return page(error=str(exc), status_code=exc.status)
    db.commit()
    return done(result)
