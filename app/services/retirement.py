"""Retiring prompts and tasks: kept for provenance, never offered to annotators, trained on or exported again.

A retired prompt retires its tasks with it. Live leases on a retired task end at once, so nobody is still shown it.
All or nothing: an unknown id refuses the whole request (404) and nothing is written. Retiring twice is harmless
(counted as already retired).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.inputs import DB_INT_MAX
from app.models import Assignment, Prompt, Task, utcnow
from app.services.errors import NotFound, ServiceError

MAX_IDS = 100_000
CHUNK = 900  # ids per IN (...) list: under SQLite's bound-parameter limit


@dataclass
class RetireResult:
    retired: int = 0  # newly retired
    already: int = 0  # were retired before
    tasks_retired: int = 0  # tasks retired with their prompts (prompts only)

    def as_dict(self) -> dict[str, int]:
        return {"retired": self.retired, "already": self.already, "tasks_retired": self.tasks_retired}


def parse_ids(values: Iterable[str | int], *, what: str) -> list[int]:
    """Ids from the CLI, a form or a file (one or more per line, commas or spaces). Bad input names the item."""
    ids: list[int] = []
    for n, value in enumerate(values, start=1):
        for part in str(value).replace(",", " ").split():
            if not part.isdigit() or not 1 <= int(part) <= DB_INT_MAX:
                raise ServiceError(f"{what} id #{n}: {part!r} is not a positive integer (at most 2**63-1)")
            ids.append(int(part))
    if not ids:
        raise ServiceError(f"give at least one {what} id")
    if len(ids) > MAX_IDS:
        raise ServiceError(f"at most {MAX_IDS} {what} ids at once")
    return sorted(set(ids))


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _existing(session: Session, model, ids: list[int]) -> dict[int, bool]:
    """{id: already retired} for the ids that exist."""
    found: dict[int, bool] = {}
    for chunk in _chunks(ids):
        for row_id, retired_at in session.execute(select(model.id, model.retired_at).where(model.id.in_(chunk))):
            found[row_id] = retired_at is not None
    missing = [i for i in ids if i not in found]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise NotFound(f"no {model.__tablename__[:-1]} {', '.join(map(str, missing[:5]))}{more}; nothing was retired")
    return found


def _retire_task_ids(session: Session, task_ids: list[int], now) -> int:
    n = 0
    for chunk in _chunks(task_ids):
        n += session.execute(
            update(Task).where(Task.id.in_(chunk), Task.retired_at.is_(None)).values(retired_at=now)
        ).rowcount
        session.execute(
            update(Assignment)
            .where(Assignment.task_id.in_(chunk), Assignment.status == "leased", Assignment.lease_expires_at > now)
            .values(lease_expires_at=now)
        )
    return n


def retire_tasks(session: Session, *, ids: list[int]) -> RetireResult:
    """Flushes, never commits."""
    session.flush()
    found = _existing(session, Task, ids)
    now = utcnow()
    retired = _retire_task_ids(session, ids, now)
    session.expire_all()  # bulk UPDATEs: loaded rows read their new retired_at
    return RetireResult(retired=retired, already=sum(found.values()))


def retire_prompts(session: Session, *, ids: list[int]) -> RetireResult:
    """The prompts and every task on them. Flushes, never commits."""
    session.flush()
    found = _existing(session, Prompt, ids)
    now = utcnow()
    retired = 0
    task_ids: list[int] = []
    for chunk in _chunks(ids):
        retired += session.execute(
            update(Prompt).where(Prompt.id.in_(chunk), Prompt.retired_at.is_(None)).values(retired_at=now)
        ).rowcount
        task_ids.extend(session.scalars(select(Task.id).where(Task.prompt_id.in_(chunk))))
    tasks_retired = _retire_task_ids(session, task_ids, now)
    session.expire_all()
    return RetireResult(retired=retired, already=sum(found.values()), tasks_retired=tasks_retired)
