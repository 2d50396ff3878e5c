"""The one rule for inputs longer than the model takes, shared by every stage (docs/design.md, "Inputs longer than
the context"):

- A prompt to sample from (generate, best-of-n, ppo, evaluate) must leave room for the response: its tokens plus
  --max-new-tokens must fit the model's context. A prompt that does not is skipped, never cut (a cut prompt asks
  another question).
- A training or scoring sequence (prompt + response + EOS: sft, reward, dpo, evaluate's reward-model accuracy) must
  fit min(--max-length, the model's context). One that does not is skipped with its whole comparison group (a
  ranking stays whole), never cut (a cut response teaches stopping mid-sentence; the score is read at the EOS).

Every stage counts what it skipped as `skipped_too_long` in its metrics (or its JSON result) and names the first
lines on stderr; a file in which nothing fits is a data error (exit 2), as an empty file is.
"""

from __future__ import annotations

import sys
from pathlib import Path

SKIPPED_METRIC = "skipped_too_long"
SHOWN_LINES = 5


def prompt_limit(context: int, max_new_tokens: int) -> int:
    """The most prompt tokens that leave --max-new-tokens of room in the context (0: none can)."""
    return max(0, context - max_new_tokens)


def prompt_fits(n_tokens: int, context: int, max_new_tokens: int) -> bool:
    return n_tokens + max_new_tokens <= context


def sequence_limit(context: int, max_length: int = 0) -> int:
    """The longest training sequence: --max-length when set and shorter, else the model's context."""
    return min(max_length, context) if max_length > 0 else context


def warn_skipped(path: str | Path, what: str, lines: list[int], limit: int) -> None:
    """One stderr line naming the first skipped lines (the count goes into the stage's metrics)."""
    if not lines:
        return
    shown = ", ".join(map(str, lines[:SHOWN_LINES])) + ("..." if len(lines) > SHOWN_LINES else "")
    print(
        f"warning: {path}: {len(lines)} {what} skipped, longer than the model takes ({limit} tokens; lines {shown})",
        file=sys.stderr,
    )
