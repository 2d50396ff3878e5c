"""Reading user data files. Every problem is reported as `file:line: message` (CLI exit 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from trainer.config import UsageError


class DataError(Exception):
    """Bad input data at a known place; str() is `path:line: message`."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) — decoded line by line so an encoding error names its line."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, lineno, "not valid UTF-8") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, object) for each non-blank line of a JSONL file."""
    for lineno, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline) for each non-blank line of a text file."""
    for lineno, raw in _lines(path):
        line = raw.rstrip("\r\n")
        if line.strip():
            yield lineno, line


def require_str(obj: dict, key: str, path: str | Path, line: int) -> str:
    """obj[key] as a string, or DataError naming the file and line."""
    if key not in obj:
        raise DataError(path, line, f'missing "{key}"')
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, line, f'"{key}" must be a string, got {type(value).__name__}')
    return value


def require_messages(obj: dict, path: str | Path, line: int, key: str = "messages") -> list[dict]:
    """A chat `messages` list of {"role", "content"} dicts, or DataError."""
    msgs = obj.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(path, line, f'"{key}" must be a non-empty list')
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(path, line, f'"{key}"[{i}] must be an object with string "role" and "content"')
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(path, line, f'"{key}"[{i}].role must be system|user|assistant, got {m["role"]!r}')
    return msgs
