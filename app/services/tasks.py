"""Tasks: import "bring your own generations" lines (all-or-nothing), create tasks from generations, list them.

A line: {"prompt": str | [{"role", "content"}, ...], "responses": [str, ...], "kind": "pairwise"|"ranking"|"rating",
"overlap": int, "priority": int, "meta": {...}, "gold": {...}} (`messages` is accepted for a chat prompt).
Responses become Generation rows with no model version and source "imported"; the prompt is shared by content hash.
`gold` makes it a gold task with its known answer, in response indices (app.services.gold.parse_gold_field).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from app.inputs import shown_text_problem
from app.models import Assignment, Generation, GoldAnswer, Prompt, Task, TaskPosition, utcnow
from app.services.errors import ServiceError
from app.services.gold import GoldSpec, answer_in_ids, parse_gold_field
from app.services.prompt_fit import current_policy_context
from app.services.prompts import PromptError, get_or_create_prompt, prompt_hash, validate_messages
from domain.vocabulary import TASK_RESPONSES

LINE_FIELDS = {"prompt", "messages", "responses", "kind", "overlap", "priority", "meta", "gold"}
MAX_OVERLAP = 1000
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
MAX_REPORTED_ERRORS = 50


class TaskImportError(ServiceError):
    """Bad lines: nothing was stored. `errors` is [(line number, reason), ...] for every bad line."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {n}: {reason}" for n, reason in errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{len(errors)} bad line(s), nothing imported: {shown}{more}")


@dataclass
class TaskSpec:
    line: int
    text: str | None
    messages: list[dict[str, str]] | None
    responses: list[str]
    kind: str
    overlap: int = 1
    priority: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    gold: GoldSpec | None = None


@dataclass
class ImportResult:
    task_ids: list[int]
    prompts_created: int
    warnings: list[str] = field(default_factory=list)  # "line N: reason" of tasks the trainer will skip


def _length_problems(session: Session, specs: list[TaskSpec]) -> tuple[list[tuple[int, str]], list[str]]:
    """Against the current policy's context (app.services.prompt_fit): a prompt that can never be answered is a
    bad line; a response that with its prompt is longer than the context is a warning (training skips it)."""
    fit = current_policy_context(session)
    if fit is None:
        return [], []
    errors, warnings = [], []
    prompt_tokens = fit.prompt_tokens([(s.text, s.messages) for s in specs])
    response_tokens = fit.prompt_tokens([(r, None) for s in specs for r in s.responses])
    cursor = 0
    for spec, n_prompt in zip(specs, prompt_tokens):
        longest = max(response_tokens[cursor : cursor + len(spec.responses)])
        cursor += len(spec.responses)
        verdict = fit.problem(n_prompt)
        if verdict is not None and verdict[0] == "refuse":
            errors.append((spec.line, verdict[1]))
        elif n_prompt + longest + 1 > fit.context and len(warnings) < MAX_REPORTED_ERRORS:
            warnings.append(
                f"line {spec.line}: prompt and longest response are about {n_prompt + longest + 1} tokens, more than "
                f"the current policy's {fit.context}: reward and DPO training skip this task's comparisons"
            )
    return errors, warnings


def _too_long(value: str, max_text_bytes: int) -> bool:
    return len(value.encode("utf-8")) > max_text_bytes


def _int_field(obj: dict, name: str, default: int, low: int, high: int) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_task(obj: Any, *, line: int, max_text_bytes: int) -> TaskSpec:
    """One line's object -> TaskSpec, or ValueError with the reason."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = sorted(set(obj) - LINE_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(LINE_FIELDS))})")
    if "prompt" in obj and "messages" in obj:
        raise ValueError("give either prompt or messages, not both")
    raw_prompt = obj.get("prompt", obj.get("messages"))
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    if isinstance(raw_prompt, str):
        if not raw_prompt.strip():
            raise ValueError("prompt is empty")
        text = raw_prompt
        problem = shown_text_problem(text)
        if problem:
            raise ValueError(f"prompt {problem}")
        if _too_long(text, max_text_bytes):
            raise ValueError(f"prompt is longer than {max_text_bytes} bytes")
    elif isinstance(raw_prompt, list):
        try:
            messages = validate_messages(raw_prompt)
        except PromptError as exc:
            raise ValueError(str(exc)) from None
        for i, m in enumerate(messages):
            if _too_long(m["content"], max_text_bytes):
                raise ValueError(f"messages[{i}].content is longer than {max_text_bytes} bytes")
    elif raw_prompt is None:
        raise ValueError("prompt is missing (a string, or a list of {role, content}; `messages` also works)")
    else:
        raise ValueError("prompt must be a string or a list of {role, content}")

    responses = obj.get("responses")
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise ValueError("responses must be a list of strings")
    for i, r in enumerate(responses):
        if not r.strip():
            raise ValueError(f"responses[{i}] is empty")
        problem = shown_text_problem(r)
        if problem:
            raise ValueError(f"responses[{i}] {problem}")
        if _too_long(r, max_text_bytes):
            raise ValueError(f"responses[{i}] is longer than {max_text_bytes} bytes")

    kind = obj.get("kind")
    if kind not in TASK_RESPONSES:
        raise ValueError(f"kind must be pairwise, ranking or rating, not {kind!r}")
    low, high = TASK_RESPONSES[kind]
    if not low <= len(responses) <= high:
        wanted = f"exactly {low}" if low == high else f"{low} to {high}"
        raise ValueError(f"a {kind} task needs {wanted} responses, got {len(responses)}")

    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("meta must be a JSON object")
    gold = None if obj.get("gold") is None else parse_gold_field(obj["gold"], kind=kind, responses=len(responses))
    return TaskSpec(
        line=line,
        text=text,
        messages=messages,
        responses=responses,
        kind=kind,
        overlap=_int_field(obj, "overlap", 1, 1, MAX_OVERLAP),
        priority=_int_field(obj, "priority", 0, PRIORITY_MIN, PRIORITY_MAX),
        meta=meta,
        gold=gold,
    )


def _parse_numbered(
    numbered: Iterable[tuple[int, Any]], errors: list[tuple[int, str]], *, max_text_bytes: int, empty: str
) -> list[TaskSpec]:
    """(line number, decoded object) pairs -> specs; raises TaskImportError listing every bad line (decoding
    errors the caller already found included), so one bad line stores nothing."""
    specs: list[TaskSpec] = []
    for number, obj in numbered:
        try:
            specs.append(parse_task(obj, line=number, max_text_bytes=max_text_bytes))
        except ValueError as exc:
            errors.append((number, str(exc)))
    if errors:
        raise TaskImportError(sorted(errors))
    if not specs:
        raise TaskImportError([(0, empty)])
    return specs


def parse_task_lines(lines: Iterable[str | bytes], *, max_text_bytes: int) -> list[TaskSpec]:
    """JSONL -> specs; blank lines are ignored. Raises TaskImportError listing every bad line."""
    errors: list[tuple[int, str]] = []

    def decoded() -> Iterator[tuple[int, Any]]:
        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError:
                    errors.append((number, "not UTF-8 text"))
                    continue
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append((number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            except ValueError as exc:  # an integer of more than 4300 digits
                errors.append((number, f"invalid JSON: {exc}"))

    return _parse_numbered(decoded(), errors, max_text_bytes=max_text_bytes, empty="no tasks: the input is empty")


def parse_task_items(items: Any, *, max_text_bytes: int) -> list[TaskSpec]:
    """The API's JSON list; item i is reported as line i (1-based), like the JSONL lines."""
    if not isinstance(items, list):
        raise TaskImportError([(0, "the body must be a JSON list of task objects")])
    return _parse_numbered(
        enumerate(items, start=1), [], max_text_bytes=max_text_bytes, empty="no tasks: the list is empty"
    )


def _eval_prompt_lines(session: Session, specs: list[TaskSpec]) -> list[tuple[int, str]]:
    """Held-out (eval split) prompts never become tasks: checked before anything is written."""
    by_hash: dict[str, list[int]] = {}
    for spec in specs:
        by_hash.setdefault(prompt_hash(text=spec.text, messages=spec.messages), []).append(spec.line)
    hashes = list(by_hash)
    errors = []
    for start in range(0, len(hashes), 500):
        chunk = hashes[start : start + 500]
        for digest in session.scalars(
            select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk), Prompt.split == "eval")
        ):
            errors += [
                (line, "this prompt is in the eval split (held out): it never becomes a task")
                for line in by_hash[digest]
            ]
    return sorted(errors)


def _prompt_ids(session: Session, specs: list[TaskSpec]) -> tuple[list[int], int]:
    """The prompt id of each spec: existing ones looked up by content hash in bulk, new ones made by
    get_or_create_prompt (the one place that defines prompt identity). Returns (ids, how many were created)."""
    hashes = [prompt_hash(text=spec.text, messages=spec.messages) for spec in specs]
    known: dict[str, int] = {}
    distinct = list(dict.fromkeys(hashes))
    for start in range(0, len(distinct), 500):
        known.update(
            session.execute(
                select(Prompt.content_hash, Prompt.id).where(Prompt.content_hash.in_(distinct[start : start + 500]))
            )
            .tuples()
            .all()
        )
    created = 0
    for spec, digest in zip(specs, hashes):
        if digest not in known:
            prompt, new = get_or_create_prompt(session, text=spec.text, messages=spec.messages, source="import")
            known[digest] = prompt.id
            created += new
    return [known[h] for h in hashes], created


def _insert_ids(session: Session, model, rows: list[dict]) -> list[int]:
    """Bulk INSERT ... RETURNING id, ids in the order of `rows`."""
    ids: list[int] = []
    for start in range(0, len(rows), 1000):
        ids += session.scalars(
            insert(model).returning(model.id, sort_by_parameter_order=True), rows[start : start + 1000]
        ).all()
    return ids


def import_task_specs(session: Session, *, specs: list[TaskSpec]) -> ImportResult:
    """Store validated specs; raises TaskImportError (before writing) if a prompt is held out. Bulk inserts
    (a 50 MiB upload must not hold the database for minutes). The caller commits."""
    length_errors, warnings = _length_problems(session, specs)
    errors = sorted(_eval_prompt_lines(session, specs) + length_errors)
    if errors:
        raise TaskImportError(errors)
    prompt_ids, created = _prompt_ids(session, specs)
    now = utcnow()
    gen_ids = _insert_ids(
        session,
        Generation,
        [
            {"prompt_id": pid, "model_version_id": None, "text": r, "source": "imported", "created_at": now}
            for spec, pid in zip(specs, prompt_ids)
            for r in spec.responses
        ],
    )
    task_ids = _insert_ids(
        session,
        Task,
        [
            {
                "prompt_id": pid,
                "kind": spec.kind,
                "overlap": spec.overlap,
                "priority": spec.priority,
                "meta": spec.meta,
                "done_count": 0,
                "completed": False,
                "gold": spec.gold is not None,
                "created_at": now,
            }
            for spec, pid in zip(specs, prompt_ids)
        ],
    )
    positions, golds, cursor = [], [], 0
    for spec, task_id in zip(specs, task_ids):
        ids = gen_ids[cursor : cursor + len(spec.responses)]
        positions += [{"task_id": task_id, "position": i, "generation_id": g} for i, g in enumerate(ids)]
        if spec.gold is not None:
            golds.append(
                {
                    "task_id": task_id,
                    "answer": answer_in_ids(spec.gold.answer, ids),
                    "explanation": spec.gold.explanation,
                    "qualification": spec.gold.qualification,
                    "created_at": now,
                }
            )
        cursor += len(spec.responses)
    for start in range(0, len(positions), 1000):
        session.execute(insert(TaskPosition), positions[start : start + 1000])
    for start in range(0, len(golds), 1000):
        session.execute(insert(GoldAnswer), golds[start : start + 1000])
    if session.get_bind().dialect.name == "postgresql":
        # Fresh statistics at once: planned on "empty" tables, the queue query scanned and sorted every open
        # task (measured 12 ms instead of 0.05 ms at 5000 tasks) until autovacuum got round to it.
        session.execute(text("ANALYZE tasks, task_positions, generations, prompts"))
    return ImportResult(task_ids=task_ids, prompts_created=created, warnings=warnings)


def import_tasks(session: Session, *, lines: Iterable[str | bytes], max_text_bytes: int) -> ImportResult:
    """JSONL lines -> tasks, all or nothing (the caller commits, or rolls back on TaskImportError)."""
    return import_task_specs(session, specs=parse_task_lines(lines, max_text_bytes=max_text_bytes))


@dataclass
class TaskRow:
    id: int
    kind: str
    prompt: str
    overlap: int
    priority: int
    done_count: int
    leased: int
    skipped: int
    completed: bool
    created_at: datetime
    gold: bool = False
    flag_reason: str | None = None  # a round's reward-hacking flag (app.services.rounds.flagged): admins only


def count_tasks(session: Session) -> dict[str, int]:
    total, completed, retired = session.execute(
        select(
            func.count(Task.id),
            func.count(Task.id).filter(Task.completed.is_(True), Task.retired_at.is_(None)),
            func.count(Task.id).filter(Task.retired_at.is_not(None)),
        )
    ).one()
    return {"total": total, "completed": completed, "retired": retired, "open": total - completed - retired}


def list_tasks(session: Session, *, limit: int = 50, offset: int = 0, now: datetime | None = None) -> list[TaskRow]:
    """Newest first, with live counts: done (human, not undone), leased (unexpired) and skipped."""
    now = now or utcnow()
    leased = (
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.task_id == Task.id, Assignment.status == "leased", Assignment.lease_expires_at > now)
        .scalar_subquery()
    )
    skipped = (
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.task_id == Task.id, Assignment.status == "skipped")
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Task.id,
            Task.kind,
            Prompt.text,
            Prompt.messages,
            Task.overlap,
            Task.priority,
            Task.done_count,
            leased,
            skipped,
            Task.completed,
            Task.created_at,
            Task.gold,
            Task.flag_reason,
        )
        .join(Prompt, Prompt.id == Task.prompt_id)
        .order_by(Task.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    out = []
    for r in rows:
        prompt = r[2] if r[3] is None else " / ".join(m["content"] for m in r[3] if m.get("role") == "user")
        out.append(
            TaskRow(
                id=r[0],
                kind=r[1],
                prompt=prompt or "",
                overlap=r[4],
                priority=r[5],
                done_count=r[6],
                leased=r[7],
                skipped=r[8],
                completed=bool(r[9]),
                created_at=r[10],
                gold=bool(r[11]),
                flag_reason=r[12],
            )
        )
    return out
