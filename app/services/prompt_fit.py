"""Whether imported prompts fit the current policy's context (docs/design.md, "Inputs longer than the context").

A prompt that takes the whole context can never be answered: the import refuses it, naming the line. One that
leaves less than RESPONSE_ROOM tokens is taken with a warning: the rounds' sampling steps will skip it
(trainer.context_fit) until a policy with a longer context is current.

Tokens are counted by trainer.context_fit.PromptCounter from the current policy's own files, so the web process
never imports torch or transformers (a chat prompt by its messages' text: a lower bound, never refused wrongly).
Without a current policy, or with one whose files cannot be read this way, nothing is checked here: the trainer's
rule still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from app.services.models_registry import current_model
from trainer.context_fit import PromptCounter

# The rounds' default response budget (max new tokens of rejection sampling, next tasks, evaluation and PPO).
RESPONSE_ROOM = 32


@dataclass(frozen=True)
class PolicyContext:
    """The current policy's name, context and token counter."""

    name: str
    counter: PromptCounter

    @property
    def context(self) -> int:
        return self.counter.context

    def prompt_tokens(self, prompts: list[tuple[str | None, list[dict[str, str]] | None]]) -> list[int]:
        return self.counter.prompt_tokens(prompts)

    def problem(self, n_tokens: int) -> tuple[str, str] | None:
        """("refuse" | "warn", reason) when the prompt does not leave room for an answer."""
        room = self.context - n_tokens
        if room < 1:
            return "refuse", (
                f"prompt is {n_tokens} tokens; the current policy {self.name!r} takes at most {self.context} "
                "(prompt and response together): it can never be answered"
            )
        if room < RESPONSE_ROOM:
            return "warn", (
                f"prompt is {n_tokens} tokens and leaves {room} of the current policy's {self.context}-token "
                f"context for a response: rounds that sample more than {room} new tokens skip it"
            )
        return None


@lru_cache(maxsize=4)
def _counter(path: str, mtime: float) -> PromptCounter | None:
    return PromptCounter.from_model_dir(path)


def current_policy_context(session: Session) -> PolicyContext | None:
    """The current policy's context and token counter (cached per model directory), or None when there is none."""
    model = current_model(session, kind="policy")
    if model is None:
        return None
    try:
        # a LoRA adapter directory has adapter_config.json where a whole model has config.json
        configs = [Path(model.path) / name for name in ("config.json", "adapter_config.json")]
        mtime = next(c for c in configs if c.is_file()).stat().st_mtime
    except (StopIteration, OSError):
        return None
    counter = _counter(model.path, mtime)
    return PolicyContext(model.name, counter) if counter is not None else None
