"""Bring data labelled elsewhere: `trl`, `kto` or `rankings` JSONL -> prompts, generations, tasks, annotations.

Each line becomes its own task, already done (imported tasks are never offered to annotators), annotated by the
named annotator (created if unknown; it cannot log in) with the given source, so it trains together with ours and
exports like ours. The responses point at the registry entry `imported` (stage `imported`).

    trl        {"prompt": str | messages, "chosen": str | [assistant msg], "rejected": ..., "margin"?: number,
                "tie"?: bool}   -> a pairwise task; a margin on the strength scale (1/3, 2/3, 1) becomes that strength,
                any other margin is kept as is and exported again unchanged
    kto        {"prompt", "completion", "label": bool}               -> a rating task with one response
    rankings   {"prompt", "completions": [best, ..., worst] (2..8)}  -> a ranking task

All or nothing: every line is checked first, any bad line refuses the file with `file:line: reason`. Prompts are
shared by content hash; a prompt held out for evaluation is refused. Importing the same file again as the same
annotator is refused (each line's idempotency key is the file's sha256 and the line number).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Annotation, Generation, Prompt, Task, TaskPosition, User
from app.security import new_public_id
from app.services.exports.margins import strength_for
from app.services.models_registry import imported_model
from app.services.prompt_import import LineError, PromptImportError
from app.services.prompts import PromptError, prompt_hash, validate_messages
from app.services.users import USERNAME_RE
from domain.vocabulary import SOURCES, TASK_RESPONSES

FORMATS = ("trl", "kto", "rankings")
MAX_REPORTED = 20


class AnnotationImportError(PromptImportError):
    """The file was refused; nothing was stored. Same shape as a prompt file's refusal (file:line: reason)."""


@dataclass
class ParsedLine:
    line: int
    raw_hash: str
    text: str | None
    messages: list[dict[str, str]] | None
    responses: list[str]
    kind: str  # pairwise | ranking | rating
    choice: str | None = None
    strength: int | None = None
    margin: float | None = None
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnnotationImportResult:
    lines: int = 0
    prompts_created: int = 0
    generations: int = 0
    tasks: int = 0
    annotations: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _response(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], dict)
        and value[0].get("role") == "assistant"
        and isinstance(value[0].get("content"), str)
    ):
        return value[0]["content"]
    raise PromptError(f'`{name}` must be a string or [{{"role": "assistant", "content": str}}]')


def _prompt(obj: dict) -> tuple[str | None, list[dict[str, str]] | None]:
    prompt = obj.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt, None
    if isinstance(prompt, list):
        return None, validate_messages(prompt)
    raise PromptError("`prompt` must be a non-empty string or a messages list")


def _parse_line(fmt: str, line: int, raw: str) -> ParsedLine:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PromptError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise PromptError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PromptError("each line must be a JSON object")
    text, messages = _prompt(obj)
    parsed = ParsedLine(
        line=line,
        raw_hash=hashlib.sha256(raw.encode()).hexdigest(),
        text=text,
        messages=messages,
        responses=[],
        kind="pairwise",
    )
    if "annotation_id" in obj:
        parsed.extra["source_annotation_id"] = obj["annotation_id"]
    if fmt == "trl":
        parsed.responses = [_response(obj.get("chosen"), "chosen"), _response(obj.get("rejected"), "rejected")]
        tie = obj.get("tie", False)
        if not isinstance(tie, bool):
            raise PromptError("`tie` must be true or false")
        margin = obj.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise PromptError("`margin` must be a number")
        if tie:
            parsed.choice = "tie"
        else:
            parsed.choice = "chosen"
            if margin:
                parsed.strength = strength_for(float(margin))
                if parsed.strength is None:
                    parsed.margin = float(margin)
    elif fmt == "kto":
        parsed.kind = "rating"
        parsed.responses = [_response(obj.get("completion"), "completion")]
        if not isinstance(obj.get("label"), bool):
            raise PromptError("`label` must be true (good) or false (bad)")
        parsed.label = "good" if obj["label"] else "bad"
    else:
        parsed.kind = "ranking"
        completions = obj.get("completions")
        low, high = TASK_RESPONSES["ranking"]
        if not isinstance(completions, list) or not low <= len(completions) <= high:
            raise PromptError(f"`completions` must be a list of {low}..{high} responses, best first")
        parsed.responses = [_response(c, f"completions[{i}]") for i, c in enumerate(completions)]
    return parsed


def parse_annotation_file(data: bytes | str, *, name: str, fmt: str) -> list[ParsedLine]:
    if fmt not in FORMATS:
        raise AnnotationImportError(name, [LineError(0, f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")])
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise AnnotationImportError(
                name, [LineError(data[: exc.start].count(b"\n") + 1, "not UTF-8 text")]
            ) from None
    parsed, errors, total = [], [], 0
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            parsed.append(_parse_line(fmt, number, raw))
        except PromptError as exc:
            total += 1
            if len(errors) < MAX_REPORTED:
                errors.append(LineError(number, str(exc)))
    if errors:
        raise AnnotationImportError(name, errors, total)
    if not parsed:
        raise AnnotationImportError(name, [LineError(0, "the file holds no lines")])
    return parsed


def _annotator(session: Session, *, username: str, source: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is not None:
        return user
    if not USERNAME_RE.match(username):
        raise AnnotationImportError(
            "--annotator", [LineError(0, "annotator name must be 1-64 letters, digits or _ . @ -")]
        )
    user = User(
        username=username, role="annotator", password_hash=None, is_ai=source == "ai", public_id=new_public_id()
    )
    session.add(user)
    session.flush()
    return user


def import_annotations(
    session: Session, *, data: bytes | str, name: str, fmt: str, source: str, annotator: str
) -> AnnotationImportResult:
    """Check every line, then store it all (flushes; the caller commits, or rolls back on error)."""
    if source not in SOURCES:
        raise AnnotationImportError(name, [LineError(0, f"source must be human or ai, not {source!r}")])
    lines = parse_annotation_file(data, name=name, fmt=fmt)
    file_hash = hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()[:16]
    user = _annotator(session, username=annotator, source=source)
    keys = [f"import:{file_hash}:{p.line}" for p in lines]
    if (
        session.scalar(
            select(Annotation.id)
            .where(Annotation.user_id == user.id, Annotation.idempotency_key.in_(keys[:1000]))
            .limit(1)
        )
        is not None
    ):
        raise AnnotationImportError(name, [LineError(0, f"this file was already imported as {annotator}")])
    # Prompts by content hash: existing ones are reused (unless held out), new ones created once.
    prompts: dict[str, Prompt | None] = {}
    errors = []
    for p in lines:
        digest = prompt_hash(text=p.text, messages=p.messages)
        if digest not in prompts:
            prompts[digest] = session.scalar(select(Prompt).where(Prompt.content_hash == digest))
        existing = prompts[digest]
        if existing is not None and existing.split == "eval":
            errors.append(LineError(p.line, "this prompt is in the eval split (held out): it never becomes a task"))
    if errors:
        raise AnnotationImportError(name, errors[:MAX_REPORTED], len(errors))
    result = AnnotationImportResult(lines=len(lines))
    model = imported_model(session)
    for p, key in zip(lines, keys):
        digest = prompt_hash(text=p.text, messages=p.messages)
        prompt = prompts[digest]
        if prompt is None:
            prompt = Prompt(
                text=p.text,
                messages=p.messages,
                content_hash=digest,
                source=f"import:{fmt}",
                tags=[],
                split="train",
                meta={},
            )
            session.add(prompt)
            session.flush()
            prompts[digest] = prompt
            result.prompts_created += 1
        gens = [
            Generation(prompt_id=prompt.id, model_version_id=model.id, text=t, source="imported") for t in p.responses
        ]
        session.add_all(gens)
        task = Task(
            prompt_id=prompt.id,
            kind=p.kind,
            overlap=1,
            done_count=1 if source == "human" else 0,
            completed=True,
            meta={"imported": name, "line": p.line},
        )
        session.add(task)
        session.flush()
        session.add_all([TaskPosition(task_id=task.id, position=i, generation_id=g.id) for i, g in enumerate(gens)])
        ids = [g.id for g in gens]
        meta = {"imported": name, "line": p.line, **p.extra}
        if p.margin is not None:
            meta["margin"] = p.margin
        annotation = Annotation(
            task_id=task.id,
            user_id=user.id,
            source=source,
            kind=p.kind,
            positions=ids,
            idempotency_key=key,
            request_hash=p.raw_hash,
            meta=meta,
        )
        if p.kind == "pairwise":
            annotation.choice = p.choice
            annotation.chosen_id = ids[0] if p.choice == "chosen" else None
            annotation.strength = p.strength
        elif p.kind == "ranking":
            annotation.ranking = ids
        else:
            annotation.ratings = {str(ids[0]): p.label}
        session.add(annotation)
        result.generations += len(gens)
        result.tasks += 1
        result.annotations += 1
    session.flush()
    return result
