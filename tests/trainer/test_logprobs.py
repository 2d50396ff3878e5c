import math

import torch

from trainer.logprobs import completion_mask, kl_estimate
from trainer.masks import pad_sequences


def test_kl_estimators():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert math.isclose(float(kl_estimate(lp, ref, "k1")), math.log(2), abs_tol=1e-6)
    assert math.isclose(float(kl_estimate(lp, ref, "k3")), 0.5 - 1 - math.log(0.5), abs_tol=1e-6)
    # both are unbiased estimates of KL(p||q) from samples of p; k3 is never negative
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), -1)
    q = torch.softmax(torch.randn(6, generator=g), -1)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    exact = float((p * (p.log() - q.log())).sum())
    k1 = kl_estimate(p.log()[x], q.log()[x], "k1")
    k3 = kl_estimate(p.log()[x], q.log()[x], "k3")
    assert abs(float(k1.mean()) - exact) < 0.02 and abs(float(k3.mean()) - exact) < 0.02
    assert float(k3.min()) >= 0 and float(k1.min()) < 0


def test_completion_mask_covers_completion_labels_only():
    # sequence p p c c e (prompt 2 tokens): labels 1..4 -> completion labels are positions 2, 3, 4
    _, mask = pad_sequences([[1, 2, 3, 4, 5], [1, 3, 5]], pad_token_id=0)
    m = completion_mask(mask, torch.tensor([2, 1]))
    assert m.tolist() == [[False, True, True, True], [True, True, False, False]]
    # the same rows left-padded: the same completion tokens, shifted with their row
    _, left = pad_sequences([[1, 2, 3, 4, 5], [1, 3, 5]], pad_token_id=0, side="left")
    assert completion_mask(left, torch.tensor([2, 1])).tolist() == [
        [False, True, True, True],
        [False, False, True, True],
    ]
