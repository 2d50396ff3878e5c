"""Prompts: one row per distinct content (sha256 of a canonical form), plain text or chat messages."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.inputs import shown_text_problem
from app.models import Prompt
from app.services.errors import ServiceError


class PromptError(ServiceError):
    pass


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """A chat prompt: a non-empty list of {"role", "content"} with string values."""
    if not isinstance(messages, list) or not messages:
        raise PromptError("messages must be a non-empty list of {role, content}")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PromptError(f"messages[{i}] must be an object with string role and content")
        if m["role"] not in ("system", "user", "assistant"):
            raise PromptError(f"messages[{i}].role must be system, user or assistant")
        problem = shown_text_problem(m["content"])
        if problem:
            raise PromptError(f"messages[{i}].content {problem}")
        clean.append({"role": m["role"], "content": m["content"]})
    return clean


def prompt_hash(*, text: str | None, messages: list[dict[str, str]] | None) -> str:
    canonical = json.dumps(
        {"text": text} if messages is None else {"messages": messages},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def prompt_display_text(prompt: Prompt) -> str:
    """The prompt as one string: plain text, or the chat rendered role by role."""
    if prompt.messages is None:
        return prompt.text or ""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt.messages)


def get_or_create_prompt(
    session: Session,
    *,
    text: str | None = None,
    messages: list[dict[str, str]] | None = None,
    source: str = "import",
    tags: list[str] | None = None,
    split: str = "train",
    meta: dict | None = None,
) -> tuple[Prompt, bool]:
    """The prompt with this content, created if new. Returns (prompt, created)."""
    if (text is None) == (messages is None):
        raise PromptError("give either a prompt string or a messages list")
    digest = prompt_hash(text=text, messages=messages)
    existing = session.scalar(select(Prompt).where(Prompt.content_hash == digest))
    if existing is not None:
        return existing, False
    prompt = Prompt(
        text=text, messages=messages, content_hash=digest, source=source, tags=tags or [], split=split, meta=meta or {}
    )
    session.add(prompt)
    session.flush()
    return prompt, True


@dataclass
class PromptListing:
    """A page of prompts, newest first, and how many prompts each split holds."""

    counts: dict[str, int]
    prompts: list[Prompt]


def list_prompts(session: Session, *, limit: int, offset: int = 0) -> PromptListing:
    counts = dict(session.execute(select(Prompt.split, func.count()).group_by(Prompt.split)).all())
    rows = session.scalars(select(Prompt).order_by(Prompt.id.desc()).limit(limit).offset(max(0, offset)))
    return PromptListing(counts=counts, prompts=list(rows))
