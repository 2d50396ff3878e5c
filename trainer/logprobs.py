"""Log-probabilities of tokens under a causal LM, and the KL estimates built from them.

Used by PPO (rollout and update logprobs, the KL penalty), DPO (sequence logprobs of the policy and the reference),
the reward model's likelihood feature and `evaluate` (KL of a policy to a reference). The token that the logits at
position t-1 predict is token t: the gathers in trainer.masks keep that convention.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from trainer.masks import entropy_from_logits, gather_logprobs, position_ids_from_mask, response_token_mask


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(π || π_ref) estimate from samples of π (Schulman, "Approximating KL divergence").

    k1 = log π - log π_ref (unbiased, can be negative per token); k3 = (r - 1) - log r with
    r = π_ref / π (unbiased, never negative: guards against the negative-KL reports of trl#1857)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def _accepts_logits_to_keep(model) -> bool:
    return _class_accepts_logits_to_keep(type(model))


@functools.cache
def _class_accepts_logits_to_keep(cls) -> bool:  # inspect.signature costs ~1 ms: once per class
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def response_logprobs(
    model: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    prompt_width: int,
    temperature: float,
    with_entropy: bool = False,
    banned_token: int | None = None,
):
    """Logprobs of the response tokens ids[:, P:] under `model` at `temperature`. -> [B, R] (and entropy [B, R]).

    For left-padded prompts of width P followed by the responses. banned_token: a token the sampler never emits
    (PAD); it is removed from the distribution here too, so these logprobs are those of the distribution the
    rollout really sampled from."""
    R = ids.shape[1] - prompt_width
    extra = {"logits_to_keep": R + 1} if _accepts_logits_to_keep(model) else {}
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False, **extra
    ).logits[:, -(R + 1) :]  # [B, R+1, V]: positions P-1 .. P+R-1
    logits = logits.float() / temperature
    if banned_token is not None:
        # finite, not -inf: PAD labels after EOS must give a finite (masked-out) number, never NaN
        ban = torch.zeros(logits.shape[-1], device=logits.device)
        ban[banned_token] = -1e9
        logits = logits + ban
    lp = gather_logprobs(logits, ids[:, prompt_width - 1 :])  # [B, R]
    if not with_entropy:
        return lp
    with torch.no_grad():  # a statistic only (no entropy bonus): no graph for it
        return lp, entropy_from_logits(logits[:, :-1])


def completion_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """Label positions 1..T-1 (as gather_logprobs returns them) that are completion tokens: past each row's first
    `prompt_lengths` real tokens, EOS included, for left or right padding. [B, T], [B] -> bool [B, T-1]."""
    return response_token_mask(attention_mask, prompt_lengths)[:, 1:]


def completion_logprobs(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, prompt_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob of every token of prompt + completion rows at temperature 1, and the completion mask.

    ids/mask [B, T], prompt_lengths [B] -> (logprobs [B, T-1], completion mask bool [B, T-1])."""
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
    ).logits  # [B, T, V]
    return gather_logprobs(logits, ids), completion_mask(mask, prompt_lengths)
