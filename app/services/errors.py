"""What a service refuses, with the HTTP status it means: routes let these through, and app.main answers them
(JSON for the API, the error page for a browser). The CLI prints the message and exits 2."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; the message is safe to show. `status` is the HTTP status it maps to."""

    status: int = 422

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)


class NotFound(ServiceError):
    """The thing asked for does not exist (or is not the caller's)."""

    status = 404


class Conflict(ServiceError):
    """The request is valid but clashes with the current state (a duplicate, one already running...)."""

    status = 409
