"""What a failed job tells its reader: its first meaningful error line in plain words (not a traceback tail), and
whether trying again could help."""

from __future__ import annotations

import re

SUMMARY_CHARS = 300
# An exception line of a traceback: `IndexError: index out of range in self`, `torch.OutOfMemoryError: ...`.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_NOISE = re.compile(r"^(Traceback \(most recent call last\):|File \"|[\^~]+$|During handling|The above exception)")


def error_summary(text: str) -> str:
    """The line that says what went wrong: the `error: ...` line of a trainer's user-facing error (exit 2); else
    the exception that ended a traceback (the last one: earlier ones only led to it), as "message (ExceptionName)";
    else the first line that is not traceback scaffolding."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return _cut(line.removeprefix("error: "))
    for line in reversed(lines):
        match = _EXCEPTION.match(line)
        if match:
            name, message = match.group(1), (match.group(2) or "").strip()
            return _cut(f"{message} ({name})" if message else name)
    for line in lines:
        if not _NOISE.match(line):
            return _cut(line)
    return ""


def will_repeat(returncode: int) -> bool:
    """A process that exited with a status ran to its own end (2: bad input or config, 1: a bug the same input
    hits again), so another attempt fails the same way. One killed by a signal (the OOM killer, a shutdown) may
    succeed when tried again."""
    return returncode >= 0


def _cut(line: str) -> str:
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"
