"""Careless-annotator signals, per human annotator, and the flags an admin sees on the users page.

    alpha            agreement with the rest: Krippendorff's alpha of the annotator against the others on shared
                     tasks (stats.agreement; pairwise choices, else rankings, else ratings)
    time_ratio       the annotator's median time per task over everyone's median (far below 1: not reading)
    position_bias    share choosing the response shown first (stats.annotator_figures; 0.5 is none)
    length_bias      share choosing the longer response (likewise)
    straight_lining  share of the annotator's labels that follow their single most common pattern: the first
                     (or second) response shown, a tie, both bad, a ranking in the order shown (or reversed), all
                     good (or all bad); an answer given without looking at the responses repeats one pattern
    gold_accuracy    accuracy on gold tasks (annotator_weights.gold_accuracies), when any were answered

`flags_for` is pure: the signals and the thresholds (`RLHF_FLAG_*` settings) in, the reasons out. Nobody is flagged
on fewer than `min_labels` labels.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Annotation, User
from app.services.annotator_weights import gold_accuracies
from app.services.stats import agreement, annotator_figures
from app.settings import Settings


@dataclass(frozen=True)
class SignalThresholds:
    min_labels: int = 20
    min_alpha: float = 0.2
    min_time_ratio: float = 0.25
    max_bias: float = 0.35
    max_straight_lining: float = 0.9
    min_gold_accuracy: float = 0.7

    @classmethod
    def from_settings(cls, settings: Settings) -> SignalThresholds:
        return cls(
            min_labels=settings.flag_min_labels,
            min_alpha=settings.flag_min_alpha,
            min_time_ratio=settings.flag_min_time_ratio,
            max_bias=settings.flag_max_bias,
            max_straight_lining=settings.flag_max_straight_lining,
            min_gold_accuracy=settings.flag_min_gold_accuracy,
        )


@dataclass
class AnnotatorSignals:
    labels: int = 0
    alpha: float | None = None
    median_time_ms: float | None = None
    time_ratio: float | None = None
    position_bias: float | None = None
    length_bias: float | None = None
    straight_lining: float | None = None
    straight_pattern: str | None = None
    gold_accuracy: float | None = None
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def label_pattern(
    kind: str, shown: list[int], choice: str | None, chosen_id: int | None, ranking, ratings
) -> str | None:
    """The answer pattern a label follows (see the module docstring), or None when it follows none."""
    if kind == "pairwise":
        if choice in ("tie", "both_bad"):
            return choice.replace("_", " ")
        if choice == "chosen" and len(shown) == 2 and chosen_id in shown:
            return "first shown" if chosen_id == shown[0] else "second shown"
        return None
    if kind == "ranking":
        if ranking and list(ranking) == list(shown):
            return "order shown"
        if ranking and list(ranking) == list(reversed(shown)):
            return "order shown reversed"
        return None
    values = {v for v in (ratings or {}).values() if v in ("good", "bad")}
    return f"all {values.pop()}" if len(values) == 1 else None


def straight_lining(patterns: list[str | None]) -> tuple[float | None, str | None]:
    """(share of the labels in the most common pattern, that pattern); (None, None) without labels."""
    if not patterns:
        return None, None
    counts = Counter(p for p in patterns if p is not None)
    if not counts:
        return 0.0, None
    pattern, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return n / len(patterns), pattern


def flags_for(s: AnnotatorSignals, t: SignalThresholds) -> list[str]:
    """Why an annotator looks careless, one reason per signal past its threshold (none below min_labels)."""
    if s.labels < t.min_labels:
        return []
    out = []
    if s.gold_accuracy is not None and s.gold_accuracy < t.min_gold_accuracy:
        out.append(f"gold accuracy {s.gold_accuracy:.0%} < {t.min_gold_accuracy:.0%}")
    if s.alpha is not None and s.alpha < t.min_alpha:
        out.append(f"agreement with the rest α {s.alpha:.2f} < {t.min_alpha:.2f}")
    if s.time_ratio is not None and s.time_ratio < t.min_time_ratio:
        out.append(f"{s.time_ratio:.2f}x the median time per task")
    for name, bias, what in (
        ("position", s.position_bias, "the response shown first"),
        ("length", s.length_bias, "the longer response"),
    ):
        if bias is not None and abs(bias - 0.5) > t.max_bias:
            out.append(f"{name} bias: chose {what} {bias:.0%} of the time")
    if s.straight_lining is not None and s.straight_lining >= t.max_straight_lining:
        out.append(f"straight-lining: {s.straight_pattern} {s.straight_lining:.0%} of the time")
    return out


def annotator_signals(session: Session, thresholds: SignalThresholds) -> dict[int, AnnotatorSignals]:
    """Every human annotator's signals and flags, by user id (live human annotations only)."""
    names = dict(session.execute(select(User.id, User.username)).all())
    patterns: dict[int, list[str | None]] = defaultdict(list)
    times: dict[int, list[int]] = defaultdict(list)
    stmt = select(
        Annotation.user_id,
        Annotation.kind,
        Annotation.positions,
        Annotation.choice,
        Annotation.chosen_id,
        Annotation.ranking,
        Annotation.ratings,
        Annotation.time_spent_ms,
    ).where(Annotation.deleted_at.is_(None), Annotation.source == "human")
    for user_id, kind, shown, choice, chosen_id, ranking, ratings, ms in session.execute(
        stmt.execution_options(yield_per=5000)
    ):
        patterns[user_id].append(label_pattern(kind, list(shown or []), choice, chosen_id, ranking, ratings))
        if ms is not None:
            times[user_id].append(ms)
    everyone = statistics.median([t for ts in times.values() for t in ts]) if times else None
    figures = annotator_figures(session, source="human")
    alphas = agreement(session, source="human", queue_size=0)
    gold = gold_accuracies(session)
    out: dict[int, AnnotatorSignals] = {}
    for user_id, labels in patterns.items():
        name = names[user_id]
        f = figures.get(name, {})
        s = AnnotatorSignals(labels=len(labels), gold_accuracy=gold.get(user_id))
        for kind in ("pairwise", "ranking", "rating"):
            alpha = alphas[kind]["per_annotator"].get(name)
            if alpha is not None:
                s.alpha = alpha
                break
        if times[user_id]:
            s.median_time_ms = statistics.median(times[user_id])
            s.time_ratio = s.median_time_ms / everyone if everyone else None
        s.position_bias, s.length_bias = f.get("position_bias"), f.get("length_bias")
        s.straight_lining, s.straight_pattern = straight_lining(labels)
        s.flags = flags_for(s, thresholds)
        out[user_id] = s
    return out


def current_signals(session: Session) -> dict[int, AnnotatorSignals]:
    """annotator_signals under the configured thresholds (`RLHF_FLAG_*`)."""
    from app.settings import get_settings

    return annotator_signals(session, SignalThresholds.from_settings(get_settings()))
