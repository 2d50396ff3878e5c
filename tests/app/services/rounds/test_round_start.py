"""Starting a round: the checks made at once (a current policy, enough data) and the one-active-round rule, in
the service and in the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.models import Job
from app.services.jobs import enqueue_job
from app.services.rounds import RoundError, start_round
from app.services.rounds.config import MIN_PREFERENCE_PAIRS
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import label_preferences, make_prompts, register_policy


def test_round_needs_a_current_policy_and_enough_data(db):
    with pytest.raises(RoundError, match="no current policy"):
        start_round(db, config={})
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=5, eval=1)["train"], annotator=human)
    db.commit()
    with pytest.raises(RoundError, match=r"too little data for a round: 5 preference pair\(s\).*at least 100"):
        start_round(db, config={})
    with pytest.raises(RoundError, match="0 preference pair"):
        start_round(db, config={"source": "ai", "min_pairs": 1})
    assert start_round(db, config={"min_pairs": 5}).status == "queued"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_database_allows_one_active_round(db):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    first = start_round(db, config={"min_pairs": 1})
    db.commit()
    with pytest.raises(RoundError, match=f"round {first.id} is already queued"):
        start_round(db, config={"min_pairs": 1})
    # Whatever a caller checks, the partial unique index refuses a second queued/running round.
    with pytest.raises(IntegrityError):
        enqueue_job(db, kind="round", config={})
        db.flush()
    db.rollback()
    first = db.get(Job, first.id)
    first.status = "failed"
    db.commit()
    assert start_round(db, config={"min_pairs": 1}).id != first.id


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_race_past_the_check_is_refused_by_the_index_with_a_clear_message(db, monkeypatch):
    """Two starts that both pass the "no active round" check (a race): the database refuses the second."""
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    monkeypatch.setattr("app.services.rounds.start.active_round", lambda session: None)
    first = start_round(db, config={"min_pairs": 1})
    db.commit()
    with pytest.raises(RoundError, match="another round was started at the same moment"):
        start_round(db, config={"min_pairs": 1})
    db.rollback()
    first = db.get(Job, first.id)
    first.status = "failed"
    db.commit()
    assert start_round(db, config={"min_pairs": 1}).id != first.id


def test_the_default_minimum_of_preference_pairs_is_one_named_constant_and_refuses_with_the_count(db):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=40, eval=1)["train"], annotator=human)
    db.commit()
    assert MIN_PREFERENCE_PAIRS == 100  # until the preference suite measures where a round stops learning
    with pytest.raises(RoundError, match=rf"40 preference pair\(s\).*at least {MIN_PREFERENCE_PAIRS} needed"):
        start_round(db, config={})
    assert db.scalar(select(func.count()).select_from(Job)) == 0  # nothing queued
    assert start_round(db, config={"min_pairs": 40}).status == "queued"  # overridable per round


def test_rounds_are_numbered_in_their_own_sequence(db):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    other = enqueue_job(db, kind="generate", config={})  # another kind of job takes a job id, not a round number
    db.commit()
    first = start_round(db, config={"min_pairs": 1})
    first.status = "failed"  # a failed round keeps its number
    db.commit()
    second = start_round(db, config={"min_pairs": 1})
    db.commit()
    assert (first.round_number, second.round_number) == (1, 2)
    assert second.id != 2 and other.round_number is None


def test_a_round_whose_memory_plan_does_not_fit_the_declared_gpu_refuses_before_any_training(db, settings, tmp_path):
    from transformers import GPT2Config

    # a 1.3B-parameter GPT-2 (its config is all the plan reads): PPO in fp32 holds four of it, far past 16 GB
    GPT2Config(n_layer=24, n_embd=2048, n_head=16, n_positions=1024).save_pretrained(tmp_path / "big")
    register_policy(db, tmp_path / "big")
    label_preferences(db, make_prompts(db, train=5, eval=1)["train"], annotator=factories.make_annotator(db))
    db.commit()
    config = {"algo": "ppo", "min_pairs": 5}
    assert start_round(db, config=config).status == "queued"  # no GPU memory declared: no check (CPU)
    db.rollback()

    settings.gpu_memory_gb = 16
    with pytest.raises(RoundError, match=r"does not fit on one GPU of 16 GB: reward needs .*ppo needs [\d.]+ GiB") as e:
        start_round(db, config=config)
    assert "fits with --lora-r 16" in str(e.value) and e.value.status < 500
    assert db.scalar(select(func.count()).select_from(Job)) == 0
    settings.gpu_memory_gb = 640  # an (imaginary) GPU it fits on
    assert start_round(db, config=config).status == "queued"


def test_gold_weighting_without_gold_answers_is_refused_409_and_excluded_labels_do_not_count(db):
    from app.services.users import update_user

    human, admin = factories.make_annotator(db), factories.make_annotator(db, role="admin")
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=5, eval=1)["train"], annotator=human)
    db.commit()
    with pytest.raises(RoundError, match="no gold tasks answered") as refused:
        start_round(db, config={"min_pairs": 5, "annotator_weighting": "gold"})
    assert refused.value.status == 409
    with pytest.raises(RoundError, match="annotator_weighting"):
        start_round(db, config={"min_pairs": 5, "annotator_weighting": "majority"})
    update_user(db, user_id=human.id, by=admin, labels_excluded=True)
    with pytest.raises(RoundError, match=r"0 preference pair"):
        start_round(db, config={"min_pairs": 5, "annotator_weighting": "dawid_skene"})
    update_user(db, user_id=human.id, by=admin, labels_excluded=False)
    job = start_round(db, config={"min_pairs": 5, "annotator_weighting": "dawid_skene"})
    assert job.config["annotator_weighting"] == "dawid_skene"
