import random

import pytest

from app.services.annotator_reliability import (
    Judgement,
    choice_judgements,
    dawid_skene,
    prior_weight,
    ranking_judgements,
    weight_from_accuracy,
    weights_from_accuracy,
    with_annotator,
)


def synthetic_judgements(accuracies: dict[int, float], *, items: int, per_item: int, seed: int) -> list[Judgement]:
    """Each item has a true order; `per_item` annotators drawn at random judge it, each right with their accuracy."""
    rng = random.Random(seed)
    out = []
    for item in range(items):
        truth = rng.random() < 0.5
        for annotator in rng.sample(sorted(accuracies), per_item):
            right = rng.random() < accuracies[annotator]
            out.append(Judgement(item, annotator, truth if right else not truth))
    return out


def test_careless_and_adversarial_annotators_get_clearly_lower_weights():
    honest = {1: 0.9, 2: 0.85, 3: 0.9, 4: 0.8}
    careless = {5: 0.5, 6: 0.5}  # random choices
    adversarial = {7: 0.15}  # inverted choices, mostly
    people = {**honest, **careless, **adversarial}
    found = dawid_skene(synthetic_judgements(people, items=400, per_item=3, seed=0))
    assert found.converged
    for annotator, truth in people.items():
        assert found.accuracy[annotator] == pytest.approx(truth, abs=0.12), annotator  # ~170 labels each
    weights = weights_from_accuracy(found.accuracy)
    assert min(weights[u] for u in honest) > 0.5
    assert max(weights[u] for u in careless) < 0.2
    assert weights[7] == 0.0  # worse than a coin is not used at all


def test_only_overlapped_items_count_and_no_overlap_estimates_nothing():
    alone = [Judgement(("t", i), 1, True) for i in range(50)]  # one annotator per item: nothing to compare
    found = dawid_skene(alone)
    assert found.accuracy == {} and found.items == 0
    shared = [Judgement("x", 1, True), Judgement("x", 2, True), Judgement("y", 1, False)]
    found = dawid_skene(shared)
    assert found.items == 1 and found.judgements == {1: 1, 2: 1}
    # two annotators who agree once are barely known: close to the prior's mean (2/3), a little above
    assert 2 / 3 < found.accuracy[1] < 0.8


def test_weights_from_accuracy():
    assert weight_from_accuracy(0.95) == pytest.approx(0.9)
    assert weight_from_accuracy(0.5) == 0.0
    assert weight_from_accuracy(0.2) == 0.0
    assert weight_from_accuracy(1.0) == 1.0
    assert prior_weight() == pytest.approx(1 / 3)
    assert weights_from_accuracy({3: 0.75}) == {3: 0.5}


def test_choices_and_rankings_become_judgements_on_ordered_pairs():
    assert choice_judgements(7, [12, 10], 10) == [Judgement((7, 10, 12), -1, True)]
    assert choice_judgements(7, [12, 10], 12) == [Judgement((7, 10, 12), -1, False)]
    assert choice_judgements(7, [12, 10], 99) == []
    ranked = ranking_judgements(3, [5, 2, 9])  # 5 > 2 > 9
    assert ranked == [
        Judgement((3, 2, 5), -1, False),
        Judgement((3, 5, 9), -1, True),
        Judgement((3, 2, 9), -1, True),
    ]
    assert {j.annotator for j in with_annotator(ranked, 4)} == {4}
