"""What every input must be, declared once for the API's models and parameters and for the services' own parsers.

- Ids and offsets fit the signed 64-bit integer both databases store: a larger one would reach the driver and end
  in OverflowError (a 500), so it is refused as bad input (422) first.
- Text can be stored: no lone surrogate (JSON's "\\ud800" escape makes one; UTF-8 cannot encode it).
- Text shown to annotators (prompts, responses) holds no NUL and no bidi override or isolate: those make what an
  annotator reads differ from what is stored ("Trojan Source").
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

DB_INT_MAX = 2**63 - 1

DbId = Annotated[int, Field(ge=1, le=DB_INT_MAX, description="a database id")]
Offset = Annotated[int, Field(ge=0, le=DB_INT_MAX, description="rows to skip")]
PageNumber = Annotated[int, Field(ge=1, le=DB_INT_MAX // 1000, description="1-based page of a listing")]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# NUL, the bidi embeddings and overrides (U+202A-U+202E) and the bidi isolates (U+2066-U+2069).
_HIDDEN_CONTROL = re.compile("[\x00\u202a-\u202e\u2066-\u2069]")


def storable_problem(value: str) -> str | None:
    """Why this text cannot be stored, or None."""
    found = _LONE_SURROGATE.search(value)
    if found:
        return f"holds a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}: not valid Unicode"
    return None


def shown_text_problem(value: str) -> str | None:
    """Why this text may not be shown to annotators (or stored), or None."""
    found = _HIDDEN_CONTROL.search(value)
    if found:
        what = "a NUL character" if found.group() == "\x00" else "a bidi override character"
        return f"holds {what} (U+{ord(found.group()):04X}) at character {found.start()}"
    return storable_problem(value)


def _storable(value: str) -> str:
    problem = storable_problem(value)
    if problem:
        raise ValueError(f"the text {problem}")
    return value


Text = Annotated[str, AfterValidator(_storable)]
