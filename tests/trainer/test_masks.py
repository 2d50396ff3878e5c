import math

import torch

from trainer.masks import (
    first_eos_index,
    gather_logprobs,
    last_token_index,
    masked_mean,
    masked_var,
    masked_whiten,
    pad_sequences,
    position_ids_from_mask,
    response_mask_after_eos,
)


def test_pad_sequences_both_sides():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_token_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_token_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]
    assert last_token_index(right.bool()).tolist() == [2, 4, 0]


def test_position_ids_count_real_tokens_only():
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(left).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_gather_logprobs_alignment_against_a_loop():
    torch.manual_seed(0)
    B, T, V = 2, 5, 7
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    got = gather_logprobs(logits, labels)
    assert got.shape == (B, T - 1)
    for b in range(B):
        for t in range(1, T):
            # token t is predicted by the logits at t-1
            want = torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
            assert math.isclose(float(got[b, t - 1]), float(want), abs_tol=1e-5)


def test_gather_logprobs_picks_the_predicted_token():
    # logits at position 0 put all mass on token 3; labels[1] == 3 must get log-prob ~0, not labels[0]
    logits = torch.full((1, 2, 4), -1e4)
    logits[0, 0, 3] = 0.0
    logits[0, 1, 1] = 0.0
    lp = gather_logprobs(logits, torch.tensor([[1, 3]]))
    assert float(lp[0, 0]) > -1e-3


def test_response_mask_truncates_after_first_eos():
    eos, pad = 9, 0
    tokens = torch.tensor([[4, 9, 5, 9], [4, 5, 6, 7], [9, 1, 1, 1]])
    mask = response_mask_after_eos(tokens, eos, pad)
    assert mask.tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]
    assert first_eos_index(tokens, eos).tolist() == [1, 4, 0]


def test_masked_statistics_ignore_masked_entries():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert float(masked_mean(x, m)) == 2.5
    assert math.isclose(float(masked_var(x, m)), torch.tensor([1.0, 2, 3, 4]).var().item(), rel_tol=1e-6)
    w = masked_whiten(x, m)
    sel = w[m.bool()]
    assert abs(float(sel.mean())) < 1e-6
    assert math.isclose(float(sel.std()), 1.0, rel_tol=1e-4)
    w2 = masked_whiten(x, m, shift_mean=False)
    assert math.isclose(float(w2[m.bool()].mean()), 2.5, rel_tol=1e-5)
