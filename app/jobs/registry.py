"""Job kinds and periodic hooks.

A job kind is a function run in the worker's child process:

    @job_kind("generate")
    def run_generate(ctx: JobContext) -> dict: ...   # the returned dict is stored as job.result

A periodic hook is a function the worker loop calls on every poll (e.g. the round schedule check):

    @periodic_hook
    def check_round_schedule(session: Session, settings: Settings) -> None: ...

Hooks run in the worker process itself (never in the web process); they must be quick and idempotent, since
every worker calls them. The worker commits the session after each hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.jobs.context import JobContext
    from app.settings import Settings

KindFunction = Callable[["JobContext"], "dict[str, Any] | None"]
HookFunction = Callable[["Session", "Settings"], None]

_KINDS: dict[str, KindFunction] = {}
_HOOKS: list[HookFunction] = []


class JobFailed(Exception):
    """A job failed for a reason worth showing as is (no traceback), e.g. a trainer's last stderr lines.

    `stage` names the step that failed, `summary` its one meaningful line, `log` the file that tells more;
    `retry` says another attempt may succeed (a trainer killed by a signal): the job goes back to the queue
    while it has attempts left. Without `retry` the failure is final at once: it would repeat."""

    def __init__(
        self,
        message: str = "",
        *,
        stage: str | None = None,
        summary: str | None = None,
        log: str | None = None,
        retry: bool = False,
    ):
        super().__init__(message)
        self.stage, self.summary, self.log, self.retry = stage, summary, log, retry


class UnknownJobKind(LookupError):
    pass


def job_kind(name: str) -> Callable[[KindFunction], KindFunction]:
    if not name or len(name) > 32:
        raise ValueError(f"job kind name must be 1-32 characters: {name!r}")

    def register(fn: KindFunction) -> KindFunction:
        existing = _KINDS.get(name)
        if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
            raise ValueError(f"job kind {name!r} is already registered by {_qualname(existing)}")
        _KINDS[name] = fn
        return fn

    return register


def get_kind(name: str) -> KindFunction:
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise UnknownJobKind(f"unknown job kind {name!r} (registered: {known})") from None


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


def periodic_hook(fn: HookFunction) -> HookFunction:
    if all(_qualname(h) != _qualname(fn) for h in _HOOKS):
        _HOOKS.append(fn)
    return fn


def periodic_hooks() -> list[HookFunction]:
    return list(_HOOKS)


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
