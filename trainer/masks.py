"""The one module that builds masks, positions and token gathers for RM, PPO and DPO.

Every off-by-one in RLHF code lives in code like this (reward read one token after EOS, logprob of
token t taken from the logits at t instead of t-1), so it is kept small, shared and golden-tested.
Conventions: `attention_mask` is 1 for real tokens and 0 for padding, on either side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_sequences(
    seqs: Sequence[Sequence[int]], *, pad_token_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [B, T], attention_mask [B, T]) padded on `side` ("left" or "right")."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the same positions as a
    right-padded one (GPT-2 would otherwise give the first real token of a left-padded row position > 0)."""
    pos = attention_mask.long().cumsum(-1) - 1  # [B, T]
    return pos.clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding. [B, T] -> [B] (long).

    A row with no real token gets index 0 (callers never score empty rows)."""
    mask = attention_mask.long()
    T = mask.shape[-1]
    # rightmost 1: first 1 in the flipped row
    return (T - 1 - mask.flip(-1).argmax(-1)).where(mask.any(-1), torch.zeros_like(mask[:, 0]))


def response_token_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """Real tokens past each row's first `prompt_lengths` real tokens (the response, EOS included), for left or
    right padding. attention_mask [B, T], prompt_lengths [B] -> [B, T] bool."""
    real = attention_mask.bool()
    index = attention_mask.long().cumsum(-1) - 1  # [B, T] position among the row's real tokens
    return real & (index >= prompt_lengths.to(index.device)[:, None])


def gather_at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [B, T, ...] at one position per row index [B] -> [B, ...]."""
    return values[torch.arange(values.shape[0], device=values.device), index]


def gather_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of labels[:, t] under logits[:, t-1]. logits [B, T, V], labels [B, T] -> [B, T-1].

    Computed as logit - logsumexp in fp32, which is the same number as log_softmax().gather() without
    materialising a second [B, T, V] tensor."""
    logits = logits[:, :-1].float()  # [B, T-1, V]: position t-1 predicts token t
    targets = labels[:, 1:].unsqueeze(-1)  # [B, T-1, 1]
    picked = logits.gather(-1, targets).squeeze(-1)  # [B, T-1]
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim. [..., V] -> [...]."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def first_eos_index(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Index of the first EOS in each row of tokens [B, T]; T where there is none. -> [B] (long)."""
    is_eos = tokens == eos_token_id
    T = tokens.shape[-1]
    idx = is_eos.long().argmax(-1)
    return torch.where(is_eos.any(-1), idx, torch.full_like(idx, T))


def response_mask_after_eos(tokens: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Mask of the real response tokens: everything up to and including the first EOS. [B, T] -> bool [B, T].

    `pad_token_id` is accepted but never used to find the end of a response: a PAD sampled before EOS is a real
    token (the policy chose it)."""
    del pad_token_id
    T = tokens.shape[-1]
    end = first_eos_index(tokens, eos_token_id)  # [B]
    return torch.arange(T, device=tokens.device).unsqueeze(0) <= end.unsqueeze(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked entries (Bessel-corrected by default, as TRL and OpenAI's lm-human-preferences)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum().to(values.dtype)
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with shift_mean=False the mean is added back."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean
