"""What a service refuses, with the HTTP status it means: routes let these through, and app.main answers them
(JSON for the API, the error page for a browser). The CLI prints the message and exits 2."""

from __future__ import annotations

from pydantic import ValidationError


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


_NUMBER_ERRORS = {"int_parsing", "float_parsing", "int_type", "float_type", "int_from_float"}


def validation_message(exc: ValidationError) -> str:
    """One readable line for a Pydantic error at a boundary that is not HTTP (a form's strings, CLI values, a stored
    config): "count must be a number, not 'many'"; a model check's own message as it wrote it."""
    parts = []
    for error in exc.errors():
        name = " ".join(str(p) for p in error["loc"]).replace("_", " ")
        if error["type"] in _NUMBER_ERRORS:
            parts.append(f"{name} must be a number, not {error['input']!r}")
        elif error["type"] == "value_error":
            parts.append(str(error["ctx"]["error"]) if "error" in error.get("ctx", {}) else error["msg"])
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown setting {name!r}")
        else:
            parts.append(f"{name}: {error['msg']}" if name else error["msg"])
    return "; ".join(parts) or "invalid values"
