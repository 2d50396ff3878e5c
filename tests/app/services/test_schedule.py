"""The round schedule: triggers (N new human annotations, every T minutes), the worker hook that starts a round,
and never two rounds at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Job, utcnow
from app.services.schedule import (
    ScheduleError,
    check_round_schedule,
    due_reason,
    get_schedule,
    update_schedule,
)
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import label_preferences, make_prompts, register_policy


def _rounds(db) -> int:
    return db.scalar(select(func.count()).select_from(Job).where(Job.kind == "round"))


def test_enabling_needs_a_trigger_and_a_valid_config(db):
    with pytest.raises(ScheduleError, match="set a trigger first"):
        update_schedule(db, enabled=True)
    with pytest.raises(ScheduleError, match="round config: algo"):
        update_schedule(db, min_new_annotations=5, config={"algo": "sgd"})
    with pytest.raises(ScheduleError, match=r"every_minutes must be 0\.\."):
        update_schedule(db, every_minutes=-1)
    row = update_schedule(db, min_new_annotations=5, enabled=True, config={"algo": "dpo"})
    assert row.enabled and row.config["algo"] == "dpo"
    assert update_schedule(db, min_new_annotations=0, every_minutes=10).min_new_annotations is None


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_annotation_trigger_counts_human_annotations_since_enabling(db, settings):
    human, ai = factories.make_annotator(db), factories.make_annotator(db, is_ai=True)
    register_policy(db, "/models/sft")
    prompts = make_prompts(db, train=30, eval=1)["train"]
    label_preferences(db, prompts[:10], annotator=human)  # before enabling: not counted
    # human labels only: the uncalibrated AI judge's labels would hold the round back (test_due_with_untrusted_...)
    update_schedule(db, min_new_annotations=8, enabled=True, config={"min_pairs": 4, "source": "human"})
    db.commit()
    label_preferences(db, prompts[10:17], annotator=human)
    label_preferences(db, prompts[17:27], annotator=ai, source="ai")  # AI labels never fire the schedule
    db.commit()
    assert due_reason(db, get_schedule(db)) is None
    assert check_round_schedule(db, settings) is None

    label_preferences(db, prompts[27:28], annotator=human)
    db.commit()
    assert due_reason(db, get_schedule(db)) == "8 new human annotations (>= 8)"
    job_id = check_round_schedule(db, settings)
    db.commit()
    job = db.get(Job, job_id)
    assert job.kind == "round" and job.status == "queued"
    assert job.config["min_pairs"] == 4 and job.config["note"] == "scheduled: 8 new human annotations (>= 8)"
    # the count starts again from the round; and while a round is queued or running, nothing fires
    label_preferences(db, prompts[28:30], annotator=human)
    update_schedule(db, min_new_annotations=1)
    db.commit()
    assert check_round_schedule(db, settings) is None
    assert _rounds(db) == 1


def test_a_rounds_verdict_judgements_never_fire_the_schedule(db, settings):
    """They judge policies on eval prompts: no preference data, so no reason for a round."""
    update_schedule(db, min_new_annotations=1, enabled=True)
    db.commit()
    old, new = factories.make_model(db, "sft"), factories.make_model(db, "policy-r1", stage="rlhf")
    round_job = factories.make_job(db, kind="round", status="succeeded")
    task, gens = factories.pairwise_task(db, split="eval")
    task.verdict_round_id = round_job.id
    gens[0].model_version_id, gens[1].model_version_id = old.id, new.id
    factories.annotate_pairwise(db, task, factories.make_annotator(db), chosen=gens[1])
    db.commit()
    assert due_reason(db, get_schedule(db)) is None


def test_time_trigger_fires_after_t_minutes(db, settings):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=5, eval=1)["train"], annotator=human)
    row = update_schedule(db, every_minutes=10, enabled=True, config={"min_pairs": 5})
    db.commit()
    assert due_reason(db, row) is None
    assert due_reason(db, row, now=utcnow() + timedelta(minutes=11)) == "10 minutes since the last round"
    row.last_fired_at = utcnow() - timedelta(minutes=11)
    db.commit()
    assert check_round_schedule(db, settings) is not None
    db.commit()
    assert _rounds(db) == 1


def test_due_with_too_little_data_waits_for_the_next_trigger(db, settings):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    prompts = make_prompts(db, train=6, eval=1)["train"]
    update_schedule(db, min_new_annotations=3, enabled=True, config={"min_pairs": 5})
    db.commit()
    label_preferences(db, prompts[:3], annotator=human)
    db.commit()
    assert check_round_schedule(db, settings) is None  # 3 pairs < 5: no round, and the count restarts
    assert due_reason(db, get_schedule(db)) is None
    label_preferences(db, prompts[3:6], annotator=human)
    db.commit()
    assert check_round_schedule(db, settings) is not None  # 6 pairs now


def test_due_with_untrusted_ai_labels_waits_for_the_next_trigger(db, settings):
    from app.services.ai_calibration import KindAgreement, store_calibration

    human = factories.make_annotator(db)
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    register_policy(db, "/models/sft")
    prompts = make_prompts(db, train=8, eval=1)["train"]
    label_preferences(db, prompts[:4], annotator=judge, source="ai")
    store_calibration(db, annotator_id=judge.id, judge="lm tiny#1", agreements=[KindAgreement("pairwise", 10, 5)])
    update_schedule(db, min_new_annotations=3, enabled=True, config={"min_pairs": 5})
    db.commit()
    label_preferences(db, prompts[4:8], annotator=human)
    db.commit()
    assert check_round_schedule(db, settings) is None  # the judge agreed 50% < 70%: no round, the count restarts
    assert due_reason(db, get_schedule(db)) is None and _rounds(db) == 0
    update_schedule(db, config={"min_pairs": 5, "source": "human"})
    db.commit()
    get_schedule(db).last_annotation_id = 0  # due again
    db.commit()
    assert check_round_schedule(db, settings) is None  # 4 human pairs < 5
    get_schedule(db).last_annotation_id = 0
    update_schedule(db, config={"min_pairs": 5, "allow_untrusted_ai_labels": True})
    db.commit()
    assert check_round_schedule(db, settings) is not None  # allowed by the schedule's round config


def test_disabled_schedule_never_fires(db, settings):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    update_schedule(db, min_new_annotations=1, enabled=True, config={"min_pairs": 1})
    update_schedule(db, enabled=False)
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    assert check_round_schedule(db, settings) is None
    assert _rounds(db) == 0
