"""Judges: what scores a policy's responses, as a batch `(prompts, responses, conversations=None) -> scores`.

`rm:DIR` is a reward model (with its likelihood feature when it has one: trainer.reward_scoring), reading prompt +
response with its own tokenizer as reward training does (a chat prompt's messages, when given, through its own chat
template; else the prompt's text); `py:module:function` is any importable callable `(prompt: str, response: str)
-> float`. Used by `evaluate` (mean judge score, win-rate), best-of-n (which sample is best) and the service's AI
feedback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from trainer.config import UsageError
from trainer.masks import pad_sequences
from trainer.preference_data import encode_response
from trainer.reward_scoring import load_reward_scorer
from trainer.runtime import autocast, load_tokenizer

Conversations = list[list[dict] | None] | None  # each prompt's chat messages (None for a text prompt)


def load_judge(spec: str, device, precision: str) -> Callable[..., list[float]]:
    """A batch judge `(prompts, responses, conversations=None) -> scores` from `rm:DIR` or `py:module:function`.

    prompts are texts as the policy saw them (a chat prompt rendered by the policy's template); a reward model reads
    a chat prompt from its messages instead when `conversations` gives them."""
    if spec.startswith("rm:"):
        return _rm_judge(spec[3:], device, precision)
    if spec.startswith("py:"):
        module, _, name = spec[3:].rpartition(":")
        if not module or not name:
            raise UsageError(f"--judge {spec!r}: expected py:module:function")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"--judge {spec!r}: {e}") from None
        if not callable(fn):
            raise UsageError(f"--judge {spec!r}: not callable")
        return lambda prompts, responses, conversations=None: [float(fn(p, r)) for p, r in zip(prompts, responses)]
    raise UsageError(f"--judge must be rm:DIR or py:module:function, got {spec!r}")


def _rm_judge(path: str, device, precision: str):
    tok = load_tokenizer(path)
    scorer = load_reward_scorer(path, tok, device)

    @torch.no_grad()
    def judge(prompts: list[str], responses: list[str], conversations: Conversations = None) -> list[float]:
        # a chat prompt is rendered with the answer by this model's own template, exactly as in reward training
        # (a template may put a space before the answer or trim it: the prompt's text + the answer is not that text)
        chats = conversations or [None] * len(prompts)
        encoded = [encode_response(tok, c if c is not None else p, r) for p, c, r in zip(prompts, chats, responses)]
        seqs, prompt_lengths = [e[0] for e in encoded], [e[1] for e in encoded]
        out = []
        for i in range(0, len(seqs), 32):
            ids, mask = pad_sequences(seqs[i : i + 32], pad_token_id=tok.pad_token_id)
            lengths = torch.tensor(prompt_lengths[i : i + 32], device=device)
            with autocast(device, precision):
                out += scorer(ids.to(device), mask.to(device), lengths).float().cpu().tolist()
        return out

    return judge
