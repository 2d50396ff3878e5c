import math

import torch

from trainer.preference_loss import bradley_terry_loss


def test_bradley_terry_loss_values():
    rb, rw = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    plain = bradley_terry_loss(rb, rw)
    assert torch.allclose(plain, torch.full((3,), math.log1p(math.exp(-1.0))), atol=1e-6)  # 0.3133
    with_margin = bradley_terry_loss(rb, rw, margin=torch.tensor([0.5, 0.0, 0.0]))
    assert math.isclose(float(with_margin[0]), math.log1p(math.exp(-0.5)), abs_tol=1e-6)  # 0.4741
    tie = bradley_terry_loss(rb, rw, target=torch.tensor([0.5, 1.0, 1.0]))
    want_tie = 0.5 * math.log1p(math.exp(-1.0)) + 0.5 * math.log1p(math.exp(1.0))
    assert math.isclose(float(tie[0]), want_tie, abs_tol=1e-6)
    centered = bradley_terry_loss(rb, rw, center_coef=0.01)
    assert math.isclose(float(centered[0]), math.log1p(math.exp(-1.0)) + 0.01 * 9.0, abs_tol=1e-6)
