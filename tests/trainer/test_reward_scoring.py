import torch

from trainer.reward_scoring import ordered_right


def test_identical_responses_count_half():
    credit = ordered_right(torch.tensor([1.0, 0.0, -2.0, 3.0]), torch.tensor([False, False, False, True]))
    assert credit.tolist() == [1.0, 0.0, 0.0, 0.5]
