"""Simulated annotators: how a person with a given noise and biases labels responses.

Pure functions, no HTTP (the `rlhf simulate` command drives the server with them). Each response i
shown at position i gets a utility in logits

    u_i = (gold_i + p·[i is shown first] + q·log2(1 + words_i)) / τ

where gold_i is the gold judge's score in [0, 1], τ the annotator's noise (temperature), p the
position bias and q the length bias, both in gold-score units (p = 0.05: the first slot is worth
0.05 of gold). Rankings are Plackett–Luce draws (sort by u_i + Gumbel noise), so a pairwise choice is
Bradley–Terry: P(A over B) = σ(u_A − u_B). τ = 0 means a noiseless annotator who always ranks by
gold (ties: the earlier position first) and ignores the biases. Good/bad: good with probability
σ((gold − threshold) / τ). Now and then the annotator writes a critique of the worst response (the
judge's critique) or a rewrite (the judge's ideal answer).

Careless and adversarial annotators (`rlhf simulate --careless N --adversarial N`): on a share of their tasks
(`careless_rate`, `adversarial_rate`, both 1.0 by default: every task) a careless annotator ranks in a uniformly
random order and says good or bad by a coin, and an adversarial one inverts what they would honestly have said
(the ranking reversed, good and bad swapped). Which tasks is drawn from its own stream, so an honest annotator's
labels do not change when others in the team turn careless.

Every label is a pure function of (annotator, key, prompt, responses): the same seed gives the same
labels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainer.world import judge

Scorer = Callable[[str, str], float]


@dataclass(frozen=True)
class Annotator:
    name: str
    noise: float = 0.1  # τ
    position_bias: float = 0.0  # p
    length_bias: float = 0.0  # q
    good_threshold: float = 0.8
    critique_rate: float = 0.1
    rewrite_rate: float = 0.05
    seed: int = 0
    careless_rate: float = 0.0  # share of tasks labelled at random
    adversarial_rate: float = 0.0  # share of tasks labelled inverted

    @property
    def behaviour(self) -> str:
        return "careless" if self.careless_rate else "adversarial" if self.adversarial_rate else "honest"


@dataclass(frozen=True)
class Label:
    ranking: tuple[int, ...]  # response indices, best first
    good: tuple[bool, ...]  # per response, in the order shown
    gold: tuple[float, ...]  # the gold scores the choice was made on
    critique: tuple[int, str] | None  # (response index, text)
    rewrite: str | None

    @property
    def choice(self) -> int:
        return self.ranking[0]


def make_annotators(
    count: int,
    *,
    noise: float = 0.1,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    seed: int = 0,
    spread: float = 0.5,
    critique_rate: float = 0.1,
    rewrite_rate: float = 0.05,
    careless: int = 0,
    careless_rate: float = 1.0,
    adversarial: int = 0,
    adversarial_rate: float = 1.0,
) -> list[Annotator]:
    """`count` annotators whose noise is spread evenly over τ·[1 − spread, 1 + spread] (mean τ), so
    some are more careful than others, as people are. Of them, `careless` label at random on `careless_rate` of
    their tasks and `adversarial` invert theirs on `adversarial_rate` (the module docstring); they are taken
    from the middle of the noise spread outwards, so the honest rest keeps a mean noise near τ."""
    if careless < 0 or adversarial < 0 or careless + adversarial > count:
        raise ValueError(f"careless ({careless}) and adversarial ({adversarial}) annotators must fit in {count}")
    for name, rate in (("careless rate", careless_rate), ("adversarial rate", adversarial_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {rate}")
    factors = [1.0] if count == 1 else [1 - spread + 2 * spread * i / (count - 1) for i in range(count)]
    middle_out = sorted(range(count), key=lambda i: (abs(i - (count - 1) / 2), i))
    turned = middle_out[: careless + adversarial]
    rates = {i: (careless_rate, 0.0) for i in turned[:careless]} | {
        i: (0.0, adversarial_rate) for i in turned[careless:]
    }
    return [
        Annotator(
            name=f"sim-{seed}-{i + 1}",
            noise=noise * f,
            position_bias=position_bias,
            length_bias=length_bias,
            critique_rate=critique_rate,
            rewrite_rate=rewrite_rate,
            seed=seed,
            careless_rate=rates.get(i, (0.0, 0.0))[0],
            adversarial_rate=rates.get(i, (0.0, 0.0))[1],
        )
        for i, f in enumerate(factors)
    ]


def _rng(annotator: Annotator, key: str) -> random.Random:
    return random.Random(f"{annotator.seed}|{annotator.name}|{key}")


def utilities(annotator: Annotator, responses: Sequence[str], gold: Sequence[float]) -> list[float]:
    """u_i in logits (see the module docstring); only meaningful for τ > 0."""
    return [
        (g + annotator.position_bias * (i == 0) + annotator.length_bias * math.log2(1 + len(r.split())))
        / annotator.noise
        for i, (r, g) in enumerate(zip(responses, gold))
    ]


def choice_probability(annotator: Annotator, responses: Sequence[str], gold: Sequence[float]) -> float:
    """P(the first of two responses is preferred)."""
    if len(responses) != 2:
        raise ValueError("choice_probability takes exactly two responses")
    if annotator.noise <= 0:
        return 1.0 if gold[0] >= gold[1] else 0.0
    u0, u1 = utilities(annotator, responses, gold)
    return 1.0 / (1.0 + math.exp(-(u0 - u1)))


def rank(annotator: Annotator, responses: Sequence[str], gold: Sequence[float], rng: random.Random) -> tuple[int, ...]:
    """A Plackett–Luce ranking (best first)."""
    if annotator.noise <= 0:
        return tuple(sorted(range(len(gold)), key=lambda i: (-gold[i], i)))
    noisy = [u - math.log(-math.log(rng.random() or 1e-300)) for u in utilities(annotator, responses, gold)]
    return tuple(sorted(range(len(gold)), key=lambda i: -noisy[i]))


def is_good(annotator: Annotator, gold: float, rng: random.Random) -> bool:
    if annotator.noise <= 0:
        return gold >= annotator.good_threshold
    p = 1.0 / (1.0 + math.exp(-(gold - annotator.good_threshold) / annotator.noise))
    return rng.random() < p


def label(
    annotator: Annotator,
    prompt: str,
    responses: Sequence[str],
    *,
    key: str,
    gold: Sequence[float] | None = None,
    scorer: Scorer = judge.score,
) -> Label:
    """How `annotator` labels `responses` (shown in this order) to `prompt`. `key` identifies the
    task (e.g. its id) and seeds the draw; `gold` defaults to `scorer` on each response."""
    if not responses:
        raise ValueError("no responses to label")
    gold = tuple(gold) if gold is not None else tuple(scorer(prompt, r) for r in responses)
    rng = _rng(annotator, key)
    ranking = rank(annotator, responses, gold, rng)
    good = tuple(is_good(annotator, g, rng) for g in gold)
    if annotator.careless_rate or annotator.adversarial_rate:
        ranking, good = _misbehave(annotator, key, ranking, good)
    critique = None
    if rng.random() < annotator.critique_rate:
        worst = ranking[-1]
        critique = (worst, judge.critique(prompt, responses[worst]))
    rewrite = None
    if rng.random() < annotator.rewrite_rate:
        rewrite = judge.ideal_response(prompt)
    return Label(ranking=ranking, good=good, gold=gold, critique=critique, rewrite=rewrite)


def _misbehave(
    annotator: Annotator, key: str, ranking: tuple[int, ...], good: tuple[bool, ...]
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """A careless annotator's random label, or an adversarial one's inverted label, on their share of tasks;
    drawn from a stream of its own so the honest draws stay as they were."""
    rng = random.Random(f"{annotator.seed}|{annotator.name}|{key}|misbehave")
    if rng.random() < annotator.careless_rate:
        shuffled = list(ranking)
        rng.shuffle(shuffled)
        return tuple(shuffled), tuple(rng.random() < 0.5 for _ in good)
    if annotator.adversarial_rate and rng.random() < annotator.adversarial_rate:
        return tuple(reversed(ranking)), tuple(not g for g in good)
    return ranking, good


def agrees_with_gold(lab: Label) -> bool | None:
    """Whether the chosen response has the highest gold score among the top two (None on a gold tie,
    which carries no preference)."""
    first, second = lab.ranking[0], lab.ranking[1]
    if lab.gold[first] == lab.gold[second]:
        return None
    return lab.gold[first] > lab.gold[second]


def pair_agreement(labels: Sequence[Label]) -> float:
    """Share of pairwise labels (two responses) that prefer the response with the higher gold score,
    over the pairs whose gold scores differ."""
    verdicts = [v for v in (agrees_with_gold(lab) for lab in labels) if v is not None]
    return sum(verdicts) / len(verdicts) if verdicts else float("nan")


def expected_pair_agreement(annotator: Annotator, pairs: Sequence[tuple[Sequence[str], Sequence[float]]]) -> float:
    """The agreement a choice model with this noise should reach on these (responses, gold) pairs —
    the label-noise ceiling a perfect reward model can reach on them."""
    probs = []
    for responses, gold in pairs:
        if gold[0] == gold[1]:
            continue
        p_first = choice_probability(annotator, responses, gold)
        probs.append(p_first if gold[0] > gold[1] else 1.0 - p_first)
    return sum(probs) / len(probs) if probs else float("nan")
