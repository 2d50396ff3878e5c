"""Bradley–Terry strengths from pairwise outcomes, as Chatbot Arena ranks models: P(i beats j) = σ(θ_i − θ_j),
fitted by maximum likelihood with a small L2 prior (so a player who won or lost every game still gets a finite
strength), one player anchored at 0, and percentile intervals from a bootstrap over the comparisons.

Pure numpy: the web process must not load torch, so trainer.preference_loss (a torch loss) is not used here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Elo's scale: a difference of 400 points is 10:1 odds.
ELO_PER_LOGIT = 400.0 / math.log(10.0)
# The L2 prior's weight (a Gaussian prior of variance 1/PRIOR on each free strength, in logits): small enough that
# a few dozen comparisons outweigh it, large enough that a clean sweep does not diverge.
PRIOR = 0.01
BOOTSTRAP_ROUNDS = 200
INTERVAL = 0.95


@dataclass(frozen=True)
class Comparison:
    """One judgement between two players: `score` is a's share of the win (1 won, 0.5 tie, 0 lost)."""

    a: int
    b: int
    score: float


@dataclass(frozen=True)
class Strength:
    player: int
    theta: float  # logits, the anchor at 0
    low: float  # the bootstrap interval of theta
    high: float

    @property
    def elo(self) -> float:
        return self.theta * ELO_PER_LOGIT


def fit_theta(
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    weight: np.ndarray,
    *,
    anchor: int = 0,
    prior: float = PRIOR,
) -> np.ndarray:
    """The MAP strengths of players 0..n-1 (theta[anchor] = 0) by Newton's method on the penalised log-likelihood
    Σ w·(s·log σ(θa − θb) + (1 − s)·log σ(θb − θa)) − prior/2 · Σ θ², which is concave, so Newton converges. Each
    (a, b, s) is a kind of outcome and w how many times it happened."""
    theta = np.zeros(n)
    free = np.array([i for i in range(n) if i != anchor], dtype=int)
    if free.size == 0:
        return theta
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
        residual = weight * (score - p)
        grad = np.bincount(a, residual, n) - np.bincount(b, residual, n) - prior * theta
        w = weight * p * (1.0 - p)
        # the negative Hessian: a weighted graph Laplacian plus the prior
        hess = prior * np.eye(n)
        np.add.at(hess, (a, a), w)
        np.add.at(hess, (b, b), w)
        np.add.at(hess, (a, b), -w)
        np.add.at(hess, (b, a), -w)
        step = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        theta[free] += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta


def fit_strengths(
    players: list[int],
    comparisons: list[Comparison],
    *,
    anchor: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
    prior: float = PRIOR,
) -> list[Strength]:
    """Each player's strength with its bootstrap interval (comparisons resampled with replacement, `rounds` times,
    seeded: the same data give the same table), in the order of `players`. `anchor` is one of `players`."""
    index = {p: i for i, p in enumerate(players)}
    n = len(players)
    # The likelihood depends on how often each outcome (a, b, score) happened, not on their order: fitting on the
    # distinct outcomes with counts costs the same for a hundred comparisons or a million.
    rows = np.array([(index[c.a], index[c.b], c.score) for c in comparisons], dtype=float).reshape(-1, 3)
    kinds, counts = np.unique(rows, axis=0, return_counts=True)
    a, b, score = kinds[:, 0].astype(int), kinds[:, 1].astype(int), kinds[:, 2]
    at = index[anchor]
    theta = fit_theta(n, a, b, score, counts.astype(float), anchor=at, prior=prior)
    if comparisons and rounds > 0:
        rng = np.random.default_rng(seed)
        draws = np.empty((rounds, n))
        for r in range(rounds):
            # resampling the comparisons with replacement is drawing each outcome's count from a multinomial
            resampled = rng.multinomial(len(comparisons), counts / len(comparisons)).astype(float)
            draws[r] = fit_theta(n, a, b, score, resampled, anchor=at, prior=prior)
        tail = (1.0 - INTERVAL) / 2 * 100
        low, high = np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)
    else:
        low = high = theta
    return [Strength(p, float(theta[i]), float(low[i]), float(high[i])) for i, p in enumerate(players)]
