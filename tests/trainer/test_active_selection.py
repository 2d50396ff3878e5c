import pytest
import torch

from trainer.active_selection import best_groups, pair_scores, select_groups


def test_uncertainty_pairs_are_the_closest_rewards_and_same_texts_come_last():
    rewards = torch.tensor([[0.0, 3.0, 0.1, 5.0]])  # [M=1, N=4]
    scores = pair_scores(rewards, "uncertainty", ["a", "b", "c", "d"])
    assert float(scores[0, 2]) == pytest.approx(1 - abs(2 * torch.sigmoid(torch.tensor(-0.1)).item() - 1))
    groups = best_groups(scores, 2, 2, "uncertainty")
    assert [sorted(g.samples) for g in groups] == [[0, 2], [1, 3]]  # 0.1 apart first, then 2.0 apart
    same = pair_scores(rewards, "uncertainty", ["a", "b", "a", "d"])
    assert sorted(best_groups(same, 2, 1, "uncertainty")[0].samples) != [0, 2]  # one text twice: nothing to compare


def test_disagreement_is_the_spread_between_models():
    rewards = torch.tensor([[0.0, 2.0, 4.0], [0.0, 2.0, -4.0]])  # the models agree on 0 vs 1, not on 2
    scores = pair_scores(rewards, "disagreement", ["a", "b", "c"])
    assert float(scores[0, 1]) == pytest.approx(0.0, abs=1e-6)
    assert set(best_groups(scores, 2, 1, "disagreement")[0].samples) == {0, 2}


def test_a_random_share_of_prompts_is_drawn_and_the_rest_are_the_most_uncertain():
    # prompt i's two best candidates are i/10 apart: the lower i, the more uncertain
    rewards = [torch.tensor([[0.0, i / 10, 9.0, -9.0]]) for i in range(10)]
    texts = [["a", "b", "c", "d"]] * 10
    chosen = select_groups(
        rewards, texts, criterion="uncertainty", group_size=2, n_groups=1, keep_prompts=5, random_share=0.2, seed=3
    )
    drawn = [p for p, gs in chosen.items() if gs[0].selection == "random"]
    picked = sorted(p for p, gs in chosen.items() if gs[0].selection == "uncertainty")
    assert len(chosen) == 5 and len(drawn) == 1  # 20% of 5
    assert all(chosen[p][0].samples == [0, 1] for p in drawn)  # sample order, as without selection
    assert picked == sorted(p for p in range(10) if p not in drawn)[:4]
    again = select_groups(
        rewards, texts, criterion="uncertainty", group_size=2, n_groups=1, keep_prompts=5, random_share=0.2, seed=3
    )
    assert {p: [g.samples for g in gs] for p, gs in again.items()} == {
        p: [g.samples for g in gs] for p, gs in chosen.items()
    }
