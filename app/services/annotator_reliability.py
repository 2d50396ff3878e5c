"""How reliable each annotator is, and what their labels weigh in the reward model's loss: pure functions over
plain data (no database), so each can be checked on synthetic annotations.

A preference label is turned into binary judgements: an `item` is one pair of responses of one task (task id, the
lower generation id, the higher one) and the judgement says whether the lower id won. A pairwise choice is one
judgement; a ranking of K, K(K-1)/2.

`dawid_skene` estimates each annotator's accuracy without gold, from the items two or more annotators judged: the
one-coin Dawid-Skene model for binary labels (Dawid & Skene 1979, with one accuracy per annotator: a pair's two
orders are arbitrary, so "first wins" and "second wins" are judged alike). EM: the posterior of each item's true
order given every label on it (E), then each annotator's accuracy as their expected share of right labels,
smoothed by a Beta prior (M), until the accuracies stop moving. An annotator who labels at random lands near 0.5,
one who inverts below it.

`weight_from_accuracy` maps an accuracy p to the weight 2p - 1, floored at 0: the expected sign agreement of one
label with the truth. A label right 95% of the time counts 0.9, a coin flip 0, and a label more often wrong than
right (adversarial) is not used at all rather than inverted (an inversion learnt on a few overlaps would be a
large bet on a small sample). The same map turns gold accuracy into weights.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# Beta(a, b) prior on every annotator's accuracy: mean 2/3, worth 6 labels. An annotator with few overlapped labels
# stays near it (weight 1/3 when none), one with many is judged by them.
PRIOR = (4.0, 2.0)
MAX_ITERATIONS = 200
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Judgement:
    """One annotator's verdict on one binary item: whether its first member won."""

    item: Hashable
    annotator: int
    first_wins: bool


@dataclass(frozen=True)
class Reliability:
    """Each annotator's estimated accuracy, the overlapped judgements it rests on, and how EM ended."""

    accuracy: dict[int, float]
    judgements: dict[int, int]
    items: int
    iterations: int
    converged: bool


def choice_judgements(task_id: int, shown: Sequence[int], chosen_id: int) -> list[Judgement]:
    """A pairwise choice between the two shown generations (any order); none when the choice is not one of them.
    The annotator is filled in by `with_annotator`."""
    if len(shown) != 2 or chosen_id not in shown:
        return []
    low, high = sorted(shown)
    return [Judgement((task_id, low, high), -1, chosen_id == low)]


def ranking_judgements(task_id: int, ranking: Sequence[int]) -> list[Judgement]:
    """Every pair of a ranking (best first)."""
    out = []
    for i, better in enumerate(ranking):
        for worse in ranking[i + 1 :]:
            low, high = sorted((better, worse))
            out.append(Judgement((task_id, low, high), -1, better == low))
    return out


def with_annotator(judgements: Iterable[Judgement], annotator: int) -> list[Judgement]:
    return [Judgement(j.item, annotator, j.first_wins) for j in judgements]


def dawid_skene(
    judgements: Iterable[Judgement],
    *,
    prior: tuple[float, float] = PRIOR,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
) -> Reliability:
    """One-coin Dawid-Skene over the items judged by at least two distinct annotators (the module docstring).
    An annotator with no overlapped judgement is absent from `accuracy` (weights give them the prior's)."""
    by_item: dict[Hashable, dict[int, bool]] = defaultdict(dict)
    for j in judgements:
        by_item[j.item][j.annotator] = j.first_wins  # one verdict per annotator and item: the last
    items = [labels for labels in by_item.values() if len(labels) >= 2]
    counts: dict[int, int] = defaultdict(int)
    for labels in items:
        for annotator in labels:
            counts[annotator] += 1
    if not items:
        return Reliability({}, {}, 0, 0, True)
    a, b = prior
    # start from the majority vote (a tie: 0.5), as Dawid and Skene do
    posterior = [sum(labels.values()) / len(labels) for labels in items]
    accuracy: dict[int, float] = {}
    iterations, converged = 0, False
    while iterations < max_iterations:
        iterations += 1
        right: dict[int, float] = defaultdict(float)
        for q, labels in zip(posterior, items):
            for annotator, first in labels.items():
                right[annotator] += q if first else 1.0 - q
        new = {u: (right[u] + a - 1.0) / (counts[u] + a + b - 2.0) for u in counts}  # the Beta posterior's mode
        prevalence = min(max(sum(posterior) / len(posterior), 1e-6), 1 - 1e-6)
        posterior = [_posterior(labels, new, prevalence) for labels in items]
        moved = max((abs(new[u] - accuracy.get(u, math.inf)) for u in new), default=0.0)
        accuracy = new
        if moved < tolerance:
            converged = True
            break
    return Reliability(accuracy, dict(counts), len(items), iterations, converged)


def _posterior(labels: Mapping[int, bool], accuracy: Mapping[int, float], prevalence: float) -> float:
    """P(the first member truly wins | the labels), in log space (many confident annotators underflow otherwise)."""
    log_first, log_second = math.log(prevalence), math.log(1.0 - prevalence)
    for annotator, first in labels.items():
        p = min(max(accuracy[annotator], 1e-6), 1 - 1e-6)
        log_first += math.log(p if first else 1.0 - p)
        log_second += math.log(1.0 - p if first else p)
    top = max(log_first, log_second)
    e1, e2 = math.exp(log_first - top), math.exp(log_second - top)
    return e1 / (e1 + e2)


def weight_from_accuracy(accuracy: float) -> float:
    """2p - 1, floored at 0 (the module docstring)."""
    return max(0.0, min(1.0, 2.0 * accuracy - 1.0))


def prior_weight(prior: tuple[float, float] = PRIOR) -> float:
    """The weight of an annotator nothing is known about: the prior's mean accuracy."""
    a, b = prior
    return weight_from_accuracy(a / (a + b))


def weights_from_accuracy(accuracy: Mapping[int, float]) -> dict[int, float]:
    return {annotator: weight_from_accuracy(p) for annotator, p in accuracy.items()}
