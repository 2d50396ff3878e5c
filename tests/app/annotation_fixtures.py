"""Tasks for the annotator tests, made through the real import service (helper A's tests)."""

from __future__ import annotations

import json
import uuid

from app.services.tasks import import_task_specs, parse_task_items


def task_line(
    kind: str = "pairwise",
    *,
    n: int | None = None,
    overlap: int = 1,
    priority: int = 0,
    prompt: str | None = None,
    responses: list[str] | None = None,
    **extra,
) -> dict:
    n = n or {"pairwise": 2, "ranking": 3, "rating": 2}[kind]
    tag = uuid.uuid4().hex[:8]
    return {
        "prompt": prompt or f"prompt {tag}",
        "responses": responses or [f"response {i} of {tag}" for i in range(n)],
        "kind": kind,
        "overlap": overlap,
        "priority": priority,
        **extra,
    }


def make_tasks(db, *lines: dict) -> list[int]:
    """Import these task lines (committed); returns their task ids in order."""
    result = import_task_specs(db, specs=parse_task_items(list(lines), max_text_bytes=64 * 1024))
    db.commit()
    return result.task_ids


def jsonl(*lines: dict) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def make_annotators(db, n: int, *, is_ai: bool = False) -> list:
    """Users without a password (no argon2 cost): for service-level tests that never log in."""
    from app.models import User
    from app.security import new_public_id

    users = [
        User(
            username=f"ann-{uuid.uuid4().hex[:10]}",
            role="annotator",
            password_hash=None,
            is_ai=is_ai,
            public_id=new_public_id(),
        )
        for _ in range(n)
    ]
    db.add_all(users)
    db.commit()
    return users
