"""Per-annotator weights from the database: Dawid-Skene on overlapped tasks, gold accuracy, and the snapshot's
preference lines carrying them."""

import json
import random

import pytest

from app.services.annotator_weights import WeightingError, annotator_weights, preference_judgements
from app.services.snapshots import SnapshotFilters, write_snapshot
from app.services.users import update_user
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import annotate_pairwise, make_generation, make_prompt, make_task


def overlapped_labels(db, *, tasks: int, careless: int, seed: int = 0):
    """4 careful annotators (right 90% of the time) and `careless` who choose at random, 3 of them on each task."""
    rng = random.Random(seed)
    careful = [factories.make_annotator(db) for _ in range(4)]
    sloppy = [factories.make_annotator(db) for _ in range(careless)]
    people = careful + sloppy
    for i in range(tasks):
        prompt = make_prompt(db, f"question {i}?")
        good, bad = (
            make_generation(db, prompt, "right", seed=2 * i),
            make_generation(db, prompt, "wrong", seed=2 * i + 1),
        )
        task = make_task(db, prompt, [good, bad] if i % 2 else [bad, good], overlap=3)
        for person in rng.sample(people, 3):
            right = rng.random() < (0.5 if person in sloppy else 0.9)
            annotate_pairwise(db, task, person, chosen=good if right else bad)
    db.commit()
    return careful, sloppy


def test_dawid_skene_weighs_careless_annotators_down(db):
    careful, sloppy = overlapped_labels(db, tasks=90, careless=2)
    weights = annotator_weights(db, "dawid_skene")
    assert weights.method == "dawid_skene"
    assert min(weights.of(u.id) for u in careful) > max(weights.of(u.id) for u in sloppy) + 0.3
    assert weights.of(-1) == weights.default  # an annotator with no overlap: the prior's weight
    assert annotator_weights(db, "none") is None


def test_gold_weights_come_from_gold_accuracy_and_refuse_without_it(db):
    careful, sloppy = overlapped_labels(db, tasks=4, careless=1)
    with pytest.raises(WeightingError, match="no gold tasks answered") as refused:
        annotator_weights(db, "gold")
    assert refused.value.status == 409
    weights = annotator_weights(db, "gold", gold_accuracy={careful[0].id: 0.95, sloppy[0].id: 0.5})
    assert weights.of(careful[0].id) == pytest.approx(0.9) and weights.of(sloppy[0].id) == 0.0
    with pytest.raises(WeightingError, match="annotator_weighting must be one of"):
        annotator_weights(db, "vote")


def test_gold_weights_by_default_come_from_the_annotators_answers_to_gold_tasks(db):
    """Without a mapping given, `gold` reads app.services.gold: an annotator right on every gold task outweighs one
    wrong on every one, and an annotator who answered none gets the prior's weight."""
    from app.services.assignment import next_task

    factories.make_tasks(db, factories.gold_line(), factories.gold_line())
    right, wrong, silent = factories.make_annotators(db, 3)
    for user, is_right in ((right, True), (wrong, False)):
        for _ in range(2):
            offer = next_task(db, user=user, lease_minutes=10, gold_rate=1.0)
            db.commit()
            factories.answer_offer(db, user, offer, right=is_right)
    weights = annotator_weights(db, "gold")
    assert weights.of(right.id) > 0.5 and weights.of(wrong.id) == 0.0
    assert weights.of(silent.id) == weights.default


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_snapshot_carries_weights_and_leaves_excluded_annotators_out(db, tmp_path):
    careful, sloppy = overlapped_labels(db, tasks=30, careless=1)
    admin = factories.make_annotator(db, role="admin")
    manifest = write_snapshot(
        db, out=tmp_path / "weighted", filters=SnapshotFilters(annotator_weighting="dawid_skene"), round_id=1
    )
    lines = [json.loads(x) for x in (tmp_path / "weighted" / "trl.jsonl").read_text().splitlines()]
    assert lines and all(0.0 <= line["weight"] <= 1.0 for line in lines)
    described = manifest["annotator_weights"]
    assert described["method"] == "dawid_skene" and sloppy[0].public_id in described["weights"]
    assert manifest["filters"]["annotator_weighting"] == "dawid_skene"
    plain = write_snapshot(db, out=tmp_path / "plain", filters=SnapshotFilters(), round_id=2)
    assert "annotator_weights" not in plain
    assert all("weight" not in json.loads(x) for x in (tmp_path / "plain" / "trl.jsonl").read_text().splitlines())
    db.rollback()  # the exports' streaming connection options last as long as their transaction
    update_user(db, user_id=sloppy[0].id, by=admin, labels_excluded=True)
    db.commit()
    assert all(j.annotator != sloppy[0].id for j in preference_judgements(db))
    excluded = write_snapshot(db, out=tmp_path / "excluded", filters=SnapshotFilters(), round_id=3)
    assert excluded["rows"]["trl.jsonl"] == plain["rows"]["trl.jsonl"] - _count(db, sloppy[0].id)
    db.rollback()
    update_user(db, user_id=sloppy[0].id, by=admin, labels_excluded=False)
    db.commit()
    back = write_snapshot(db, out=tmp_path / "back", filters=SnapshotFilters(), round_id=4)
    assert back["rows"] == plain["rows"]


def _count(db, user_id):
    from sqlalchemy import func, select

    from app.models import Annotation

    return db.scalar(select(func.count()).select_from(Annotation).where(Annotation.user_id == user_id))
