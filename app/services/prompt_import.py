"""Prompt files: JSONL or CSV, all-or-nothing, duplicates (by content hash) skipped and counted.

One line (or CSV row) is one prompt:
    {"prompt": "text"} or {"messages": [{"role", "content"}, ...]}, optional "tags" (list of strings) and
    "split" ("train" | "eval"; eval prompts are held out and never become training tasks).
Other keys are kept in the prompt's `meta` (nothing the file said is lost).
In CSV, `messages` and `tags` cells hold JSON (`tags` may also be a comma-separated list).

Every line is checked before anything is written; any bad line refuses the whole file with `file:line: reason`
for each (the first MAX_REPORTED). New prompts go in with one multi-row INSERT per chunk, so 100k prompts take
seconds.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.inputs import shown_text_problem
from app.models import Prompt, utcnow
from app.services.errors import ServiceError
from app.services.prompt_fit import current_policy_context
from app.services.prompts import PromptError, prompt_hash, validate_messages
from domain.vocabulary import SPLITS

FORMATS = ("jsonl", "csv")
MAX_REPORTED = 20
CHUNK = 2000  # rows per INSERT and per hash lookup (well under SQLite's bound-parameter limit)
KNOWN_KEYS = {"prompt", "messages", "tags", "split"}


@dataclass
class LineError:
    line: int
    message: str


class PromptImportError(ServiceError):
    """The file was refused; nothing was stored. `errors` name the lines."""

    def __init__(self, name: str, errors: list[LineError], total_errors: int | None = None):
        self.name = name
        self.errors = errors
        self.total_errors = total_errors if total_errors is not None else len(errors)
        first = errors[0] if errors else LineError(0, "no prompts")
        more = f" (and {self.total_errors - 1} more bad lines)" if self.total_errors > 1 else ""
        super().__init__(f"{name}:{first.line}: {first.message}{more}")

    def lines(self) -> list[str]:
        return [f"{self.name}:{e.line}: {e.message}" for e in self.errors]


@dataclass
class ParsedPrompt:
    line: int
    text: str | None
    messages: list[dict[str, str]] | None
    tags: list[str]
    split: str
    meta: dict[str, Any]
    content_hash: str = ""


@dataclass
class PromptImportResult:
    lines: int = 0
    created: int = 0
    duplicates: int = 0  # already stored, or repeated within the file
    warnings: list[str] = field(default_factory=list)  # "name:line: reason" of prompts that leave little room

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "created": self.created,
            "duplicates": self.duplicates,
            "warnings": self.warnings,
        }


def detect_format(filename: str, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise PromptImportError(filename, [LineError(0, f"format must be jsonl or csv, not {explicit!r}")])
        return explicit
    lower = filename.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    raise PromptImportError(filename, [LineError(0, "unknown file type: name it .jsonl or .csv (or give the format)")])


def _records_jsonl(text: str) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}")
        except ValueError as exc:  # an integer of more than 4300 digits
            yield number, ValueError(f"not valid JSON: {exc}")


def _records_csv(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not ({"prompt", "messages"} & set(reader.fieldnames)):
        yield 1, ValueError("CSV header must have a `prompt` or `messages` column")
        return
    for row in reader:
        record: dict[str, Any] = {}
        problem = None
        for key, value in row.items():
            if key is None:
                problem = ValueError("more cells than header columns")
                continue
            if value is None or value == "":
                continue  # an empty cell is an absent value
            if key == "messages":
                try:
                    value = json.loads(value)
                except ValueError:
                    problem = ValueError("messages cell must be a JSON list of {role, content}")
            elif key == "tags":
                try:
                    value = (
                        json.loads(value)
                        if value.lstrip().startswith("[")
                        else [t.strip() for t in value.split(",") if t.strip()]
                    )
                except ValueError:
                    problem = ValueError("tags cell must be a JSON list of strings or comma-separated tags")
            record[key] = value
        yield reader.line_num, problem or record


def _check(line: int, obj: Any) -> ParsedPrompt:
    if isinstance(obj, Exception):
        raise PromptError(str(obj))
    if not isinstance(obj, dict):
        raise PromptError("each line must be a JSON object")
    has_text, has_messages = obj.get("prompt") is not None, obj.get("messages") is not None
    if has_text == has_messages:
        raise PromptError("give exactly one of `prompt` (string) or `messages` (chat list)")
    text = messages = None
    if has_text:
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise PromptError("`prompt` must be a non-empty string")
        problem = shown_text_problem(obj["prompt"])
        if problem:
            raise PromptError(f"`prompt` {problem}")
        text = obj["prompt"]
    else:
        messages = validate_messages(obj["messages"])
    tags = obj.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise PromptError("`tags` must be a list of strings")
    split = obj.get("split") or "train"
    if split not in SPLITS:
        raise PromptError(f"`split` must be train or eval, not {split!r}")
    meta = {k: v for k, v in obj.items() if k not in KNOWN_KEYS}
    return ParsedPrompt(
        line=line,
        text=text,
        messages=messages,
        tags=tags,
        split=split,
        meta=meta,
        content_hash=prompt_hash(text=text, messages=messages),
    )


def parse_prompts(data: bytes | str, *, name: str, fmt: str) -> list[ParsedPrompt]:
    """Every line checked; raises PromptImportError listing the bad lines (nothing is stored by parsing)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PromptImportError(name, [LineError(data[: exc.start].count(b"\n") + 1, "not UTF-8 text")]) from None
    records = _records_jsonl(data) if fmt == "jsonl" else _records_csv(data)
    parsed: list[ParsedPrompt] = []
    errors: list[LineError] = []
    total_errors = 0
    try:
        for line, obj in records:
            try:
                parsed.append(_check(line, obj))
            except (PromptError, ValueError) as exc:
                total_errors += 1
                if len(errors) < MAX_REPORTED:
                    errors.append(LineError(line, str(exc)))
    except csv.Error as exc:
        raise PromptImportError(name, [LineError(0, f"bad CSV: {exc}")]) from None
    if errors:
        raise PromptImportError(name, errors, total_errors)
    if not parsed:
        raise PromptImportError(name, [LineError(0, "the file holds no prompts")])
    return parsed


def check_fit(session: Session, prompts: list[ParsedPrompt], *, name: str) -> list[str]:
    """Against the current policy's context (app.services.prompt_fit): a prompt that can never be answered refuses
    the file naming its line; the warnings name prompts that leave little room (the first MAX_REPORTED)."""
    fit = current_policy_context(session)
    if fit is None:
        return []
    errors: list[LineError] = []
    warnings: list[str] = []
    n_errors = n_warnings = 0
    for p, n_tokens in zip(prompts, fit.prompt_tokens([(p.text, p.messages) for p in prompts])):
        verdict = fit.problem(n_tokens)
        if verdict is None:
            continue
        kind, reason = verdict
        if kind == "refuse":
            n_errors += 1
            if len(errors) < MAX_REPORTED:
                errors.append(LineError(p.line, reason))
        else:
            n_warnings += 1
            if len(warnings) < MAX_REPORTED:
                warnings.append(f"{name}:{p.line}: {reason}")
    if errors:
        raise PromptImportError(name, errors, n_errors)
    if n_warnings > len(warnings):
        warnings.append(f"{name}: and {n_warnings - len(warnings)} more prompts that leave little room")
    return warnings


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def store_prompts(session: Session, *, prompts: list[ParsedPrompt], source: str = "import") -> PromptImportResult:
    """Insert the prompts whose content hash is new; count the rest as duplicates. Flushes, never commits."""
    result = PromptImportResult(lines=len(prompts))
    fresh: dict[str, ParsedPrompt] = {}
    for p in prompts:
        if p.content_hash not in fresh:
            fresh[p.content_hash] = p
    hashes = list(fresh)
    for chunk in _chunks(hashes, CHUNK):
        for existing in session.scalars(select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk))):
            fresh.pop(existing, None)
    now = utcnow()
    rows = [
        {
            "text": p.text,
            "messages": p.messages,
            "content_hash": h,
            "source": source,
            "tags": p.tags,
            "split": p.split,
            "meta": p.meta,
            "created_at": now,
        }
        for h, p in fresh.items()
    ]
    session.flush()
    for chunk in _chunks(rows, CHUNK):
        session.execute(insert(Prompt), chunk)
    result.created = len(rows)
    result.duplicates = result.lines - result.created
    return result


def import_prompts(
    session: Session, *, data: bytes | str, name: str, fmt: str | None = None, source: str = "import"
) -> PromptImportResult:
    """Parse and store a prompt file: all or nothing (the caller commits)."""
    parsed = parse_prompts(data, name=name, fmt=detect_format(name, fmt))
    warnings = check_fit(session, parsed, name=name)
    result = store_prompts(session, prompts=parsed, source=source)
    result.warnings = warnings
    return result


def import_prompt_objects(session: Session, *, objects: list[Any], source: str = "api") -> PromptImportResult:
    """The API's JSON body: a list of prompt objects, checked like file lines (line = position, from 1)."""
    errors: list[LineError] = []
    parsed: list[ParsedPrompt] = []
    for i, obj in enumerate(objects, start=1):
        try:
            parsed.append(_check(i, obj))
        except (PromptError, ValueError) as exc:
            errors.append(LineError(i, str(exc)))
    if errors:
        raise PromptImportError("body", errors[:MAX_REPORTED], len(errors))
    if not parsed:
        raise PromptImportError("body", [LineError(0, "no prompts given")])
    warnings = check_fit(session, parsed, name="body")
    result = store_prompts(session, prompts=parsed, source=source)
    result.warnings = warnings
    return result
