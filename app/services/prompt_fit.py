"""Whether imported prompts fit the current policy's context (docs/design.md, "Inputs longer than the context").

A prompt that takes the whole context can never be answered: the import refuses it, naming the line. One that
leaves less than RESPONSE_ROOM tokens is taken with a warning: the rounds' sampling steps will skip it
(trainer.context_fit) until a policy with a longer context is current.

Tokens are counted with the current policy's own `tokenizer.json` (the `tokenizers` library) and its chat
template (Jinja, as transformers renders it), and the context is read from its `config.json`, so the web process
never imports torch or transformers. Without a current policy, or with one whose files cannot be read this way,
nothing is checked: the trainer's rule still holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy.orm import Session

from app.services.models_registry import current_model

# The rounds' default response budget (max new tokens of rejection sampling, next tasks, evaluation and PPO).
RESPONSE_ROOM = 32
UNRENDERABLE = -1  # a token count that says the chat template refused the messages
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")  # as trainer.runtime.model_context reads them


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` (transformers marks assistant spans with it): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise(message: str):
    raise TemplateError(message)


def _chat_environment() -> ImmutableSandboxedEnvironment:
    """The environment transformers renders chat templates in (sandboxed, trimmed blocks, its extra tag)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag])
    env.globals["raise_exception"] = _raise
    return env


@dataclass(frozen=True)
class PolicyContext:
    """The current policy's context and a token counter for prompts as the trainer renders them."""

    name: str
    context: int
    tokenizer: Any  # tokenizers.Tokenizer
    chat_template: str | None
    special: dict[str, str]

    def prompt_tokens(self, prompts: list[tuple[str | None, list[dict[str, str]] | None]]) -> list[int]:
        """Token counts of (text, messages) prompts; plain texts are encoded in one batch (100k prompts: seconds)."""
        texts = [text or "" for text, messages in prompts if messages is None]
        # special tokens as the tokenizer adds them, as trainer.prompt_data encodes a text prompt
        counts = iter([len(e.ids) for e in self.tokenizer.encode_batch(texts)] if texts else [])
        return [next(counts) if messages is None else self._chat_tokens(messages) for _, messages in prompts]

    def _chat_tokens(self, messages: list[dict[str, str]]) -> int:
        if self.chat_template is None:
            rendered = "\n".join(m["content"] for m in messages)
        else:
            template = _chat_environment().from_string(self.chat_template)
            try:
                rendered = template.render(messages=messages, add_generation_prompt=True, **self.special)
            except TemplateError:
                return UNRENDERABLE
        return len(self.tokenizer.encode(rendered, add_special_tokens=False).ids)

    def problem(self, n_tokens: int) -> tuple[str, str] | None:
        """("refuse" | "warn", reason) when the prompt does not leave room for an answer."""
        if n_tokens == UNRENDERABLE:
            return "refuse", f"the current policy {self.name!r}'s chat template cannot render these messages"
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


def _special_tokens(config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


@lru_cache(maxsize=4)
def _load(path: str, name: str, mtime: float) -> PolicyContext | None:
    from tokenizers import Tokenizer

    directory = Path(path)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        tok_config_file = directory / "tokenizer_config.json"
        tok_config = json.loads(tok_config_file.read_text(encoding="utf-8")) if tok_config_file.is_file() else {}
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception:  # any unreadable file (the tokenizers library raises plain Exception): no check here
        return None
    context = next((config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int) and config[k] > 0), None)
    if context is None:
        return None
    template_file = directory / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else tok_config.get("chat_template")
    return PolicyContext(
        name, context, tokenizer, template if isinstance(template, str) else None, _special_tokens(tok_config)
    )


def current_policy_context(session: Session) -> PolicyContext | None:
    """The current policy's context and token counter (cached per model directory), or None when there is none."""
    model = current_model(session, kind="policy")
    if model is None:
        return None
    config_file = Path(model.path) / "config.json"
    try:
        mtime = config_file.stat().st_mtime
    except OSError:
        return None
    return _load(model.path, model.name, mtime)
