"""Id lists for bulk commands: ids as arguments and/or `--file` (one or more a line, commas or spaces)."""

from __future__ import annotations

from pathlib import Path

from app.cli.errors import fail
from app.services.errors import ServiceError
from app.services.retirement import parse_ids


def read_ids(ids: list[str], file: Path | None, what: str) -> list[int]:
    """The ids, deduplicated; a bad one is exit 2 naming FILE:LINE (or its position among the arguments)."""
    values = list(ids)
    if file is not None:
        if not file.is_file():
            fail(f"{file}: no such file")
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            bad = [p for p in line.replace(",", " ").split() if not p.isdigit() or int(p) < 1]
            if bad:
                fail(f"{file}:{n}: {bad[0]!r} is not a {what} id")
            values.append(line)
    try:
        return parse_ids(values, what=what)
    except ServiceError as exc:
        fail(str(exc))
