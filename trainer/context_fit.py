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

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SKIPPED_METRIC = "skipped_too_long"
SHOWN_LINES = 5


def prompt_limit(context: int, max_new_tokens: int) -> int:
    """The most prompt tokens that leave --max-new-tokens of room in the context (0: none can)."""
    return max(0, context - max_new_tokens)


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


# ----------------------------------------------------------------------------- counting without torch


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")  # as trainer.runtime.model_context reads them


def config_json_dir(directory: Path) -> Path:
    """Where a model directory's config.json is: its own, or for a peft adapter directory its base's (followed by
    reading JSON only, as trainer.adapters.model_config_dir does with the trainer loaded)."""
    for _ in range(8):  # an adapter of an adapter at most a few levels deep
        adapter = directory / "adapter_config.json"
        if not adapter.is_file():
            return directory
        base = Path(json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"])
        directory = base if base.is_absolute() else directory / base
    return directory


@dataclass(frozen=True)
class PromptCounter:
    """A model directory's context and its prompts' token counts, from the directory's `config.json` and
    `tokenizer.json` (the `tokenizers` library): light enough for a web process that never imports torch or
    transformers. Text prompts count as `trainer.prompt_data` encodes them; chat prompts by their messages' text."""

    context: int
    tokenizer: Any  # tokenizers.Tokenizer

    @classmethod
    def from_model_dir(cls, path: str | Path) -> PromptCounter | None:
        """None when the directory cannot be read this way (no tokenizer.json, no context in its config)."""
        from tokenizers import Tokenizer

        directory = Path(path)
        try:
            config = json.loads((config_json_dir(directory) / "config.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception:  # any unreadable file (the tokenizers library raises plain Exception): no counter
            return None
        context = next((config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0), None)
        if context is None:
            return None
        return cls(context, tokenizer)

    def prompt_tokens(self, prompts: list[tuple[str | None, list[dict[str, str]] | None]]) -> list[int]:
        """Token counts of (text, messages) prompts; plain texts are encoded in one batch (100k prompts: seconds)."""
        texts = [text or "" for text, messages in prompts if messages is None]
        # special tokens as the tokenizer adds them, as trainer.prompt_data encodes a text prompt
        counts = iter([len(e.ids) for e in self.tokenizer.encode_batch(texts)] if texts else [])
        return [next(counts) if messages is None else self._chat_tokens(messages) for _, messages in prompts]

    def _chat_tokens(self, messages: list[dict[str, str]]) -> int:
        # the messages' own text: a lower bound (the template adds a few tokens of scaffolding), so a refusal is
        # never wrong; rendering the template here would need Jinja in the service, which stays free of it
        return len(self.tokenizer.encode("\n".join(m["content"] for m in messages), add_special_tokens=False).ids)
