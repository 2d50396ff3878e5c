"""The per-annotator weights a round's reward model trains with (`annotator_weighting`), read from the database:
the round's preference labels become binary judgements (app/services/annotator_reliability.py), and each
annotator's accuracy (estimated by Dawid-Skene on the overlapped tasks, or measured on gold tasks) becomes the
weight of their pairs in the loss. `none` is every pair at 1.0 and writes no weight at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from app.models import Annotation
from app.services.annotator_reliability import (
    Judgement,
    choice_judgements,
    dawid_skene,
    prior_weight,
    ranking_judgements,
    weights_from_accuracy,
    with_annotator,
)
from app.services.errors import ServiceError
from app.services.gold import gold_accuracy_by_annotator
from app.services.training_labels import training_labels
from domain.vocabulary import ANNOTATOR_WEIGHTINGS, ROUND_TASK_KINDS, one_of

NO_GOLD = (
    "no gold tasks answered: annotator_weighting gold weighs each annotator by their accuracy on gold tasks, and no "
    "annotator has any yet; use dawid_skene (estimated from overlapped tasks) or none"
)


class WeightingError(ServiceError):
    """A weighting that cannot be computed now; the message is safe to show."""


@dataclass(frozen=True)
class AnnotatorWeights:
    """Weights by user id; `default` for an annotator the method knows nothing about (no overlapped or gold task)."""

    method: str
    weights: dict[int, float]
    default: float
    accuracy: dict[int, float] = field(default_factory=dict)
    evidence: dict[int, int] = field(default_factory=dict)  # overlapped judgements (dawid_skene) per annotator

    def of(self, user_id: int) -> float:
        return self.weights.get(user_id, self.default)

    def describe(self, public_ids: Mapping[int, str]) -> dict:
        """For a manifest or a page: by the annotators' pseudonymous ids, never their usernames."""
        return {
            "method": self.method,
            "default": self.default,
            "weights": {public_ids.get(u, str(u)): round(w, 6) for u, w in sorted(self.weights.items())},
            "accuracy": {public_ids.get(u, str(u)): round(p, 6) for u, p in sorted(self.accuracy.items())},
            "evidence": {public_ids.get(u, str(u)): n for u, n in sorted(self.evidence.items())},
        }


def gold_accuracies(session: Session) -> dict[int, float]:
    """Each annotator's accuracy on mixed-in gold tasks, by user id (app.services.gold); absent: none answered."""
    return {user_id: gold.accuracy for user_id, gold in gold_accuracy_by_annotator(session).items()}


def preference_judgements(
    session: Session, *, source: str = "all", since: datetime | None = None, until_id: int | None = None
) -> list[Judgement]:
    """The binary judgements of the preference labels a round would train on (app.services.training_labels), by
    the round's filters."""
    columns = (Annotation.user_id, Annotation.task_id, Annotation.kind, Annotation.positions)
    columns += (Annotation.chosen_id, Annotation.choice, Annotation.ranking)
    stmt = training_labels(*columns, source=source, since=since, until_id=until_id)
    stmt = stmt.where(Annotation.kind.in_(ROUND_TASK_KINDS))
    out: list[Judgement] = []
    for user_id, task_id, kind, positions, chosen_id, choice, ranking in session.execute(
        stmt.execution_options(yield_per=5000)
    ):
        if kind == "pairwise" and choice == "chosen" and chosen_id is not None:
            out += with_annotator(choice_judgements(task_id, positions or [], chosen_id), user_id)
        elif kind == "ranking" and ranking:
            out += with_annotator(ranking_judgements(task_id, ranking), user_id)
    return out


def check_weighting(session: Session, weighting: str) -> None:
    """Refuses now what `annotator_weights` would refuse later: an unknown method, gold with no gold answers."""
    problem = one_of("annotator_weighting", weighting, ANNOTATOR_WEIGHTINGS)
    if problem:
        raise WeightingError(problem)
    if weighting == "gold" and not gold_accuracies(session):
        raise WeightingError(NO_GOLD, status=409)


def annotator_weights(
    session: Session,
    weighting: str,
    *,
    source: str = "all",
    since: datetime | None = None,
    until_id: int | None = None,
    gold_accuracy: Mapping[int, float] | None = None,
) -> AnnotatorWeights | None:
    """The weights of `weighting` over the labels the filters admit; None for `none` (no weight is written).
    `gold` takes `gold_accuracy` (user id -> accuracy on gold tasks), by default the gold tasks' own."""
    problem = one_of("annotator_weighting", weighting, ANNOTATOR_WEIGHTINGS)
    if problem:
        raise WeightingError(problem)
    if weighting == "none":
        return None
    if weighting == "gold":
        accuracy = dict(gold_accuracy if gold_accuracy is not None else gold_accuracies(session))
        if not accuracy:
            raise WeightingError(NO_GOLD, status=409)
        return AnnotatorWeights("gold", weights_from_accuracy(accuracy), prior_weight(), accuracy)
    found = dawid_skene(preference_judgements(session, source=source, since=since, until_id=until_id))
    return AnnotatorWeights(
        "dawid_skene", weights_from_accuracy(found.accuracy), prior_weight(), found.accuracy, found.judgements
    )
