"""The Bradley–Terry loss on the two scores of a preference pair.

The reward model trains its scores with it; DPO trains the policy with it on implicit rewards β (log π - log π_ref).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_better: torch.Tensor,
    r_worse: torch.Tensor,
    margin: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss [N]: -[y log σ(d) + (1-y) log σ(-d)], d = r_better - r_worse - margin,
    plus center_coef * (r_better + r_worse)^2 (TRL's center_rewards_coefficient)."""
    d = r_better - r_worse
    if margin is not None:
        d = d - margin
    loss = -F.logsigmoid(d)
    if target is not None:
        loss = -(target * F.logsigmoid(d) + (1 - target) * F.logsigmoid(-d))
    if center_coef:
        loss = loss + center_coef * (r_better + r_worse) ** 2
    return loss
