"""Active selection: of more candidates than people will see, which prompts and which pairs (or rankings) to show.

Each prompt has N candidate samples scored by one or more reward models. A pair's informativeness:
    uncertainty   1 - |2 p - 1|, p = sigmoid(r_a - r_b) under the first (the current) reward model: 1 where the
                  Bradley-Terry probability is 0.5, 0 where the model is sure
    disagreement  2 * the spread (population std) of p across the reward models: 0 where they agree, 1 at most
A group (a pair, or the K responses of a ranking) is built greedily from the best pair among the unused candidates,
then the candidate that adds most; its score is the mean over its pairs. Two candidates with the same text are
never worth a person's time: their pairs count below every other pair. A prompt's score is its groups' mean.

Prompts: a `random_share` of the kept prompts is drawn at random (seeded) and keeps its candidates in sample order,
as an unselected request would (data for unbiased evaluation); the rest are the highest-scoring prompts. Every kept
group carries its choice (`random` or the criterion) and its score (a random group is scored too, for comparison).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

SAME_TEXT_SCORE = -1.0  # below every real pair score (those are in [0, 1])


@dataclass
class Group:
    samples: list[int]  # indices into the prompt's candidates, in the order shown
    selection: str  # random | uncertainty | disagreement
    score: float


def pair_scores(rewards: torch.Tensor, criterion: str, texts: list[str]) -> torch.Tensor:
    """rewards [M, N] (M reward models, N candidates of one prompt) -> pair informativeness [N, N]."""
    p = torch.sigmoid(rewards[:, :, None] - rewards[:, None, :])  # [M, N, N]: P(a beats b) under each model
    if criterion == "uncertainty":
        scores = 1 - (2 * p[0] - 1).abs()  # [N, N]
    elif criterion == "disagreement":
        scores = 2 * p.std(dim=0, unbiased=False)  # [N, N]
    else:
        raise ValueError(f"no pair score for {criterion!r}")
    same = torch.tensor([[a == b for b in texts] for a in texts])  # [N, N]
    return scores.masked_fill(same, SAME_TEXT_SCORE)


def group_score(scores: torch.Tensor, members: list[int]) -> float:
    pairs = [float(scores[a, b]) for i, a in enumerate(members) for b in members[i + 1 :]]
    return sum(pairs) / len(pairs) if pairs else 0.0


def best_groups(scores: torch.Tensor, group_size: int, n_groups: int, criterion: str) -> list[Group]:
    """`n_groups` disjoint groups of `group_size` candidates, each the most informative left (greedy)."""
    n = scores.shape[0]
    unused = list(range(n))
    groups = []
    for _ in range(n_groups):
        a, b = max(((a, b) for i, a in enumerate(unused) for b in unused[i + 1 :]), key=lambda ab: scores[ab])
        members = [a, b]
        while len(members) < group_size:
            rest = [c for c in unused if c not in members]
            members.append(max(rest, key=lambda c: float(scores[c, members].sum())))
        unused = [c for c in unused if c not in members]
        groups.append(Group(members, criterion, group_score(scores, members)))
    return groups


def random_groups(scores: torch.Tensor | None, group_size: int, n_groups: int) -> list[Group]:
    """The first candidates in sample order, as a request without selection takes them."""
    groups = []
    for g in range(n_groups):
        members = list(range(g * group_size, (g + 1) * group_size))
        groups.append(Group(members, "random", group_score(scores, members) if scores is not None else 0.0))
    return groups


def select_groups(
    rewards: list[torch.Tensor],
    texts: list[list[str]],
    *,
    criterion: str,
    group_size: int,
    n_groups: int,
    keep_prompts: int,
    random_share: float,
    seed: int,
) -> dict[int, list[Group]]:
    """Per prompt (index into `rewards`: [M, N] each, `texts`: N each), the groups shown; prompts not kept are
    absent. `keep_prompts` 0 keeps every prompt."""
    n_prompts = len(rewards)
    keep = n_prompts if keep_prompts <= 0 else min(keep_prompts, n_prompts)
    n_random = round(random_share * keep)
    drawn = set(random.Random(seed).sample(range(n_prompts), n_random))
    chosen: dict[int, list[Group]] = {}
    scored: list[tuple[float, int, list[Group]]] = []
    for i, (r, t) in enumerate(zip(rewards, texts)):
        scores = pair_scores(r, criterion, t)
        if i in drawn:
            chosen[i] = random_groups(scores, group_size, n_groups)
        else:
            groups = best_groups(scores, group_size, n_groups, criterion)
            scored.append((sum(g.score for g in groups) / len(groups), i, groups))
    scored.sort(key=lambda s: (-s[0], s[1]))  # most informative first; ties in file order
    for _, i, groups in scored[: keep - n_random]:
        chosen[i] = groups
    return chosen
