"""Agreement between annotators on overlapped tasks: Krippendorff's alpha and a per-task agreement score.

Values compared (the display order an annotator saw never enters; only generation ids do):
  pairwise  nominal label of the outcome: "lower" / "higher" (the chosen response is the one with the lower /
            higher generation id of the two), "tie", "both_bad";
  ranking   ordinal: each response's rank (1 = best) in each annotator's ranking; a unit is (task, response);
  rating    nominal: "good" / "bad" per response; a unit is (task, response).

Krippendorff's alpha = 1 - D_o / D_e from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
Alpha-Reliability"): units with fewer than two values are not pairable and are left out. The ordinal metric is
the squared sum of the value frequencies between two ranks, minus half of each end's.

Per annotator against the rest: the observed disagreement counts only the pairs (this annotator's value,
another annotator's value) within a unit; the expected disagreement is the overall one. 1 is perfect agreement
with the others, 0 is chance, below 0 systematic disagreement.

Task agreement (for the `min agreement` export filter and the disagreement queue): the share of pairs of
annotations on the task that agree (pairwise: same outcome; ranking: share of response pairs ordered the same
way; rating: share of responses labelled the same). None for a task with fewer than two annotations.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from itertools import combinations
from typing import Any

Unit = dict[Hashable, Any]  # annotator -> value


def _ordinal_metric(values: list, counts: Counter) -> dict[tuple, float]:
    ordered = sorted(values)
    metric: dict[tuple, float] = {}
    for i, c in enumerate(ordered):
        for k in ordered[i:]:
            between = sum(counts[v] for v in ordered if c <= v <= k) - (counts[c] + counts[k]) / 2
            metric[(c, k)] = metric[(k, c)] = between**2
    return metric


def _distance(level: str, values: list, counts: Counter):
    if level == "nominal":
        return lambda a, b: 0.0 if a == b else 1.0
    metric = _ordinal_metric(values, counts)
    return lambda a, b: metric[(a, b)]


def krippendorff_alpha(
    units: Iterable[Unit], *, level: str = "nominal", per_annotator: bool = False
) -> tuple[float | None, dict[Hashable, float | None]]:
    """(alpha over all pairable units, {annotator: alpha against the rest} if per_annotator)."""
    pairable = [u for u in units if len(u) >= 2]
    counts: Counter = Counter()
    for u in pairable:
        counts.update(u.values())
    n = sum(counts.values())
    if n < 2 or len(counts) < 1:
        return None, {}
    delta = _distance(level, list(counts), counts)
    # Observed: each unit's value pairs weighted 1/(m_u - 1).
    d_o = 0.0
    per_obs: dict[Hashable, float] = defaultdict(float)
    per_weight: dict[Hashable, float] = defaultdict(float)
    for u in pairable:
        m = len(u)
        items = list(u.items())
        for (ca, a), (cb, b) in combinations(items, 2):
            d = delta(a, b)
            d_o += 2 * d / (m - 1)
            if per_annotator:
                for who in (ca, cb):
                    per_obs[who] += d
                    per_weight[who] += 1
    d_o /= n
    values = list(counts)
    d_e = sum(counts[a] * counts[b] * delta(a, b) for a in values for b in values) / (n * (n - 1))
    if d_e == 0:
        # Everyone gave the same single value: no variation to measure agreement against.
        return (1.0 if d_o == 0 else None), ({w: 1.0 for w in per_weight} if per_annotator else {})
    alpha = 1 - d_o / d_e
    per = {w: 1 - (per_obs[w] / per_weight[w]) / d_e for w in per_weight} if per_annotator else {}
    return alpha, per


def _ranking_pair_agreement(a: list[int], b: list[int]) -> float | None:
    ra = {g: i for i, g in enumerate(a)}
    rb = {g: i for i, g in enumerate(b)}
    common = [g for g in a if g in rb]
    pairs = list(combinations(common, 2))
    if not pairs:
        return None
    same = sum((ra[x] < ra[y]) == (rb[x] < rb[y]) for x, y in pairs)
    return same / len(pairs)


def task_agreement(kind: str, values: list[Any]) -> float | None:
    """values: one per annotation of the task (pairwise label, ranking list, or ratings dict)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    scores: list[float] = []
    for a, b in combinations(values, 2):
        if kind == "pairwise":
            scores.append(1.0 if a == b else 0.0)
        elif kind == "ranking":
            s = _ranking_pair_agreement(a, b)
            if s is not None:
                scores.append(s)
        else:
            common = [g for g in a if g in b]
            if common:
                scores.append(sum(a[g] == b[g] for g in common) / len(common))
    return sum(scores) / len(scores) if scores else None
