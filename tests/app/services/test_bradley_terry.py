"""The Bradley–Terry fit: known strengths are recovered, the anchor is 0, intervals cover the truth."""

import math
import random

import pytest

from app.services.bradley_terry import ELO_PER_LOGIT, Comparison, fit_strengths


def simulate(truth: dict[int, float], games_per_pair: int, seed: int = 0, tie_share: float = 0.0) -> list[Comparison]:
    rng = random.Random(seed)
    out = []
    players = sorted(truth)
    for i, a in enumerate(players):
        for b in players[i + 1 :]:
            p = 1 / (1 + math.exp(-(truth[a] - truth[b])))
            for _ in range(games_per_pair):
                if rng.random() < tie_share:
                    out.append(Comparison(a, b, 0.5))
                else:
                    out.append(Comparison(a, b, 1.0 if rng.random() < p else 0.0))
    return out


def test_recovers_a_known_ranking_and_strengths_with_the_anchor_at_zero():
    truth = {10: 0.0, 11: 1.0, 12: -0.5, 13: 2.0}
    strengths = fit_strengths(sorted(truth), simulate(truth, 400), anchor=10, rounds=100)
    by = {s.player: s for s in strengths}
    assert by[10].theta == 0.0 and by[10].low == 0.0 and by[10].high == 0.0
    assert sorted(by, key=lambda p: -by[p].theta) == [13, 11, 10, 12]
    for player, value in truth.items():
        assert by[player].theta == pytest.approx(value, abs=0.2)
        assert by[player].low <= value <= by[player].high  # the 95% bootstrap interval covers the truth
    assert by[13].elo == pytest.approx(by[13].theta * ELO_PER_LOGIT)


def test_intervals_narrow_with_more_comparisons():
    truth = {0: 0.0, 1: 0.7}
    few = fit_strengths([0, 1], simulate(truth, 20), anchor=0, rounds=100)[1]
    many = fit_strengths([0, 1], simulate(truth, 2000), anchor=0, rounds=100)[1]
    assert many.high - many.low < (few.high - few.low) / 3


def test_ties_count_half_and_a_clean_sweep_stays_finite():
    even = fit_strengths([0, 1], [Comparison(0, 1, 0.5)] * 50, anchor=0, rounds=0)
    assert even[1].theta == pytest.approx(0.0, abs=1e-9)
    # one side won half and tied the rest: 75% of the points, log-odds log(3) (the prior shrinks it a little)
    mixed = [Comparison(0, 1, 0.0)] * 100 + [Comparison(0, 1, 0.5)] * 100
    assert fit_strengths([0, 1], mixed, anchor=0, rounds=0)[1].theta == pytest.approx(math.log(3), abs=0.02)
    sweep = fit_strengths([0, 1], [Comparison(1, 0, 1.0)] * 30, anchor=0, rounds=20)
    assert math.isfinite(sweep[1].theta) and sweep[1].theta > 3


def test_the_same_data_and_seed_give_the_same_table_and_the_anchor_sets_the_zero():
    truth = {1: 0.0, 2: 1.0, 3: 0.5}
    games = simulate(truth, 50, seed=3)
    assert fit_strengths([1, 2, 3], games, anchor=1, seed=7) == fit_strengths([1, 2, 3], games, anchor=1, seed=7)
    from_1 = {s.player: s.theta for s in fit_strengths([1, 2, 3], games, anchor=1, rounds=0)}
    from_2 = {s.player: s.theta for s in fit_strengths([1, 2, 3], games, anchor=2, rounds=0)}
    assert from_2[2] == 0.0
    # moving the anchor shifts every strength alike (up to the prior's small pull)
    assert from_1[3] - from_1[1] == pytest.approx(from_2[3] - from_2[1], abs=0.05)


def test_no_comparisons_leave_everyone_at_the_anchor():
    assert [(s.theta, s.low, s.high) for s in fit_strengths([1, 2], [], anchor=1)] == [(0.0, 0.0, 0.0)] * 2
