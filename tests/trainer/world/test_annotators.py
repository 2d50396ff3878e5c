"""Simulated annotators: agreement with the gold judge matches their noise; biases push the way they
say; labels are reproducible."""

from __future__ import annotations

import math
import random

import pytest

from trainer.world import annotators, judge, questions, styles
from trainer.world.annotators import Annotator


def _pairs(n: int, seed: int = 0) -> list[tuple[str, list[str], list[float]]]:
    """(prompt, two responses in different styles, their gold scores), from the world itself."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        kind, slots, question = questions.sample_question(rng)
        a, b = rng.sample(styles.STYLES, 2)
        responses = [
            styles.compose(s, kind.core(slots), kind.short(slots), kind.wrong(slots, rng), rng) for s in (a, b)
        ]
        gold = [judge.score(question, r) for r in responses]
        if gold[0] != gold[1]:
            out.append((question, responses, gold))
    return out


PAIRS = _pairs(3000)


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_pair_agreement_matches_the_noise_level(noise):
    annotator = Annotator(name="a", noise=noise, seed=1)
    labels = [annotators.label(annotator, q, r, key=str(i), gold=g) for i, (q, r, g) in enumerate(PAIRS)]
    measured = annotators.pair_agreement(labels)
    expected = annotators.expected_pair_agreement(annotator, [(r, g) for _, r, g in PAIRS])
    # 3000 Bernoulli draws: standard error <= 0.009
    assert abs(measured - expected) < 0.03, (noise, measured, expected)


def test_more_noise_means_less_agreement():
    values = []
    for noise in (0.0, 0.05, 0.2, 1.0):
        annotator = Annotator(name="a", noise=noise, seed=2)
        labels = [annotators.label(annotator, q, r, key=str(i), gold=g) for i, (q, r, g) in enumerate(PAIRS)]
        values.append(annotators.pair_agreement(labels))
    assert values[0] == 1.0
    assert values[0] > values[1] > values[2] > values[3] > 0.5


def test_position_bias_favours_the_first_response():
    pairs = [(q, r, [0.7, 0.7]) for q, r, _ in PAIRS[:2000]]  # equal gold: only the bias decides
    plain = Annotator(name="a", noise=0.1, seed=3)
    biased = Annotator(name="a", noise=0.1, position_bias=0.1, seed=3)

    def share_first(ann: Annotator) -> float:
        return sum(
            annotators.label(ann, q, r, key=str(i), gold=g).choice == 0 for i, (q, r, g) in enumerate(pairs)
        ) / len(pairs)

    assert abs(share_first(plain) - 0.5) < 0.05
    assert abs(share_first(biased) - annotators.choice_probability(biased, ["x", "x"], [0.7, 0.7])) < 0.04
    assert share_first(biased) > 0.65


def test_length_bias_favours_the_longer_response():
    short, long = "Paris.", "Sure! Let me think about this for a moment. The capital of France is Paris, a city."
    biased = Annotator(name="a", noise=0.1, length_bias=0.05, seed=4)
    picks = [
        annotators.label(biased, "What is the capital of France?", [short, long], key=str(i), gold=[0.8, 0.8]).choice
        for i in range(1000)
    ]
    assert sum(p == 1 for p in picks) / len(picks) > 0.7


def test_rankings_are_plackett_luce_and_best_first_without_noise():
    responses = ["a", "b", "c", "d"]
    gold = [0.2, 0.9, 0.5, 0.7]
    exact = annotators.label(Annotator(name="a", noise=0.0), "q", responses, key="k", gold=gold)
    assert exact.ranking == (1, 3, 2, 0)
    noisy = Annotator(name="a", noise=0.2, seed=5)
    firsts = [annotators.label(noisy, "q", responses, key=str(i), gold=gold).ranking[0] for i in range(4000)]
    # P(first = i) = softmax(gold / τ)_i under Plackett–Luce
    weights = [math.exp(g / 0.2) for g in gold]
    for i in range(4):
        assert abs(firsts.count(i) / len(firsts) - weights[i] / sum(weights)) < 0.03


def test_good_bad_follows_the_threshold():
    ann = Annotator(name="a", noise=0.05, good_threshold=0.8, seed=6)
    high = [annotators.label(ann, "q", ["x"], key=str(i), gold=[0.95]).good[0] for i in range(500)]
    low = [annotators.label(ann, "q", ["x"], key=str(i), gold=[0.5]).good[0] for i in range(500)]
    assert sum(high) / 500 > 0.9 and sum(low) / 500 < 0.05


def test_critiques_and_rewrites_come_at_their_rates_and_come_from_the_judge():
    ann = Annotator(name="a", noise=0.1, critique_rate=0.3, rewrite_rate=0.2, seed=7)
    prompt = "User: What is the capital of Italy?\nAssistant:"
    labels = [
        annotators.label(
            ann, prompt, [" The capital of Italy is Milan.", " Sure! The capital of Italy is Rome."], key=str(i)
        )
        for i in range(1000)
    ]
    critiques = [lab.critique for lab in labels if lab.critique]
    rewrites = [lab.rewrite for lab in labels if lab.rewrite]
    assert abs(len(critiques) / 1000 - 0.3) < 0.05 and abs(len(rewrites) / 1000 - 0.2) < 0.05
    assert all(rw == judge.ideal_response(prompt) for rw in rewrites)
    assert judge.score(prompt, rewrites[0]) == 1.0
    wrong_critiques = [text for index, text in critiques if index == 0]
    assert wrong_critiques and all("Rome" in text for text in wrong_critiques)


def test_same_key_same_label_and_gold_defaults_to_the_judge():
    ann = Annotator(name="a", noise=0.3, seed=8)
    prompt, responses = "What is 2 plus 2?", ["2 plus 2 is 4.", "2 plus 2 is 5."]
    first = annotators.label(ann, prompt, responses, key="task-1")
    assert first == annotators.label(ann, prompt, responses, key="task-1")
    assert first.gold == tuple(judge.score(prompt, r) for r in responses)
    different = {annotators.label(ann, prompt, responses, key=f"task-{i}").ranking for i in range(50)}
    assert len(different) == 2  # noisy enough to pick either sometimes


def test_make_annotators_spreads_noise_around_the_mean():
    team = annotators.make_annotators(5, noise=0.2, position_bias=0.05, seed=3)
    assert len({a.name for a in team}) == 5
    assert sum(a.noise for a in team) / 5 == pytest.approx(0.2)
    assert min(a.noise for a in team) < 0.2 < max(a.noise for a in team)
    assert all(a.position_bias == 0.05 for a in team)


def test_careless_and_adversarial_annotators_choose_at_random_or_inverted_at_their_rate():
    team = annotators.make_annotators(6, noise=0.0, seed=3, careless=2, adversarial=1, adversarial_rate=0.5)
    assert [a.behaviour for a in team].count("careless") == 2
    assert [a.behaviour for a in team].count("adversarial") == 1
    honest = [a for a in team if a.behaviour == "honest"]
    # the honest rest keeps the team's mean noise (the turned ones come from the middle of the spread)
    assert sum(a.noise for a in honest) / len(honest) == pytest.approx(0.0)
    pairs = PAIRS[:1500]

    def agreement(annotator):
        return annotators.pair_agreement(
            [annotators.label(annotator, q, r, key=str(i), gold=g) for i, (q, r, g) in enumerate(pairs)]
        )

    careless = next(a for a in team if a.behaviour == "careless")
    adversarial = next(a for a in team if a.behaviour == "adversarial")
    # 1500 draws: standard error <= 0.013
    assert agreement(honest[0]) == 1.0  # noise 0: always by gold
    assert agreement(careless) == pytest.approx(0.5, abs=0.05)  # rate 1.0: a coin on every task
    assert agreement(adversarial) == pytest.approx(0.5, abs=0.05)  # inverted on half of the tasks
    always_wrong = Annotator(name="x", noise=0.0, seed=3, adversarial_rate=1.0)
    assert agreement(always_wrong) == 0.0
    sometimes = Annotator(name="y", noise=0.0, seed=3, careless_rate=0.4)
    assert agreement(sometimes) == pytest.approx(1 - 0.4 / 2, abs=0.05)  # random on 40%: half of those wrong
    # an honest annotator's labels do not depend on who else is careless
    alone = annotators.make_annotators(6, noise=0.1, seed=3)
    turned = annotators.make_annotators(6, noise=0.1, seed=3, careless=2)
    q, r, g = pairs[0]
    assert annotators.label(alone[0], q, r, key="k", gold=g) == annotators.label(turned[0], q, r, key="k", gold=g)
    with pytest.raises(ValueError, match="must fit in 3"):
        annotators.make_annotators(3, careless=2, adversarial=2)
