"""An admin page's forms: each action's service call commits and answers (mostly a redirect with a notice), or
its refusal rolls the session back and shows the page again with the message, at the refusal's status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from app.services.errors import ServiceError

T = TypeVar("T")


@dataclass(frozen=True)
class AdminForms:
    path: str  # the page's URL, where a done action redirects with its notice
    errors: type[ServiceError]  # the refusals shown on the page (any other error goes to app.main's handler)
    page: Callable[..., Response]  # page(request, db, *, error=..., status_code=..., **page_args) renders it

    def act(
        self, request: Request, db, action: Callable[[], T], done: Callable[[T], Response], **page_args: Any
    ) -> Response:
        try:
            result = action()
        except self.errors as exc:
            db.rollback()
            return self.page(request, db, error=str(exc), status_code=exc.status, **page_args)
        db.commit()
        return done(result)

    def notice(self, text: str) -> Response:
        """Back to the page, showing `text` (already URL-encoded: `+` for spaces)."""
        return RedirectResponse(f"{self.path}?notice={text}", status_code=303)
