"""Judges: what scores a policy's responses, as a batch `(prompts, responses) -> scores`.

`rm:DIR` is a reward model (with its likelihood feature when it has one: trainer.reward_scoring), reading prompt +
response text with its own tokenizer; `py:module:function` is any importable callable `(prompt: str, response: str)
-> float`. Used by `evaluate` (mean judge score, win-rate), best-of-n (which sample is best) and the service's AI
feedback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from trainer.config import UsageError
from trainer.masks import pad_sequences
from trainer.reward_scoring import load_reward_scorer
from trainer.runtime import autocast, load_tokenizer


def load_judge(spec: str, device, precision: str) -> Callable[[list[str], list[str]], list[float]]:
    """A batch judge from `rm:DIR` or `py:module:function`."""
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
        return lambda prompts, responses: [float(fn(p, r)) for p, r in zip(prompts, responses)]
    raise UsageError(f"--judge must be rm:DIR or py:module:function, got {spec!r}")


def _rm_judge(path: str, device, precision: str):
    tok = load_tokenizer(path)
    scorer = load_reward_scorer(path, tok, device)

    @torch.no_grad()
    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        # the judge's own tokenizer, on prompt + response text, EOS appended (as in reward training)
        seqs = [tok(p + r)["input_ids"] + [tok.eos_token_id] for p, r in zip(prompts, responses)]
        prompt_lengths = [min(len(tok(p)["input_ids"]), len(s) - 1) for p, s in zip(prompts, seqs)]
        out = []
        for i in range(0, len(seqs), 32):
            ids, mask = pad_sequences(seqs[i : i + 32], pad_token_id=tok.pad_token_id)
            lengths = torch.tensor(prompt_lengths[i : i + 32], device=device)
            with autocast(device, precision):
                out += scorer(ids.to(device), mask.to(device), lengths).float().cpu().tolist()
        return out

    return judge
