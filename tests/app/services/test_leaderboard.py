"""The leaderboard: human comparisons between responses of different policies, ranked by Bradley–Terry."""

import pytest

from app.services.bradley_terry import Comparison
from app.services.leaderboard import leaderboard, policy_comparisons
from tests.conftest import BACKENDS
from tests.factories import (
    annotate_pairwise,
    annotate_ranking,
    make_annotator,
    make_generation,
    make_model,
    make_prompt,
    make_task,
)


def _duel(db, first, second, *, winner, user=None, choice="chosen", **kw):
    """One pairwise task between the two policies' responses, judged by a new annotator."""
    prompt = make_prompt(db, split="eval")
    a, b = make_generation(db, prompt, "a", model=first), make_generation(db, prompt, "b", model=second)
    task = make_task(db, prompt, [a, b])
    chosen = {first: a, second: b}.get(winner)
    return annotate_pairwise(db, task, user or make_annotator(db), chosen=chosen, choice=choice, **kw)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_policies_rank_by_their_human_comparisons_with_the_first_sft_at_zero(db):
    sft = make_model(db, "sft", stage="sft")
    better = make_model(db, "policy-r1", stage="rlhf")
    worse = make_model(db, "policy-r2", stage="rlhf")
    make_model(db, "policy-r3", stage="rlhf")  # never compared
    make_model(db, "imported", stage="imported")
    for i in range(10):  # better beats sft 8 of 10; sft beats worse 7 of 10 (one of them a tie)
        _duel(db, sft, better, winner=better if i < 8 else sft)
        _duel(db, worse, sft, winner=sft if i < 6 else worse if i < 9 else None, choice="chosen" if i < 9 else "tie")
    # not comparisons between policies: one policy's own pair, an AI label, an undone one
    prompt = make_prompt(db)
    own = make_task(
        db, prompt, [make_generation(db, prompt, "x", model=worse), make_generation(db, prompt, "y", model=worse)]
    )
    annotate_pairwise(db, own, make_annotator(db), chosen=own.positions[0].generation)
    _duel(db, worse, better, winner=worse, user=make_annotator(db, is_ai=True), source="ai")
    _duel(db, worse, better, winner=worse).deleted_at = sft.created_at
    db.commit()

    board = leaderboard(db, rounds=50)
    assert board.comparisons == 20 and board.anchor_id == sft.id
    names = [r.name for r in board.rows]
    assert names == ["policy-r1", "sft", "policy-r2", "policy-r3"]  # the imported entry is not a policy to rank
    by = {r.name: r for r in board.rows}
    assert by["sft"].elo == 0.0 and by["sft"].anchor and by["sft"].rank == 2
    assert by["policy-r1"].elo > 100 and by["policy-r1"].low < by["policy-r1"].elo < by["policy-r1"].high
    assert by["policy-r2"].elo < -50
    assert (by["policy-r1"].comparisons, by["policy-r1"].wins) == (10, 8.0)
    assert (by["policy-r2"].comparisons, by["policy-r2"].wins) == (10, 3.5)  # a tie counts half
    assert by["policy-r3"].rank is None and by["policy-r3"].elo is None and by["policy-r3"].comparisons == 0


def test_a_ranking_of_several_policies_gives_every_pair_between_different_ones(db):
    one, two, three = (make_model(db, f"p{i}", stage="rlhf") for i in range(3))
    prompt = make_prompt(db, split="eval")
    gens = [make_generation(db, prompt, t, model=m) for t, m in (("a", one), ("b", two), ("c", three), ("d", three))]
    task = make_task(db, prompt, gens, kind="ranking")
    annotate_ranking(db, task, make_annotator(db), ranking=[gens[2], gens[0], gens[3], gens[1]])
    db.commit()
    assert sorted(policy_comparisons(db), key=lambda c: (c.a, c.b)) == sorted(
        [
            Comparison(three.id, one.id, 1.0),
            Comparison(three.id, two.id, 1.0),
            Comparison(one.id, three.id, 1.0),
            Comparison(one.id, two.id, 1.0),
            Comparison(three.id, two.id, 1.0),
        ],
        key=lambda c: (c.a, c.b),
    )
    # no SFT policy: the oldest compared one is the anchor
    board = leaderboard(db, rounds=0)
    assert board.anchor_id == one.id and {r.name: r.elo for r in board.rows}["p0"] == 0.0
