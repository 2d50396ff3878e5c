"""AI feedback that earns trust: label-ai first scores a seeded sample of human-labelled tasks (stored as no label)
and records the judge's agreement with people per kind, with a Wilson interval; a round refuses AI labels whose
judge is uncalibrated or below RLHF_AI_MIN_AGREEMENT unless it allows them, and says so. The judge here is a fake
scorer with known answers (the real judges are tested in test_ai_feedback.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.jobs.context import JobContext
from app.models import AICalibration, Annotation, ModelVersion
from app.services.ai_calibration import (
    HumanLabel,
    KindAgreement,
    agreement_by_kind,
    ai_label_trust,
    format_rate,
    human_labelled_sample,
    label_agreement,
    latest_calibration,
    store_calibration,
)
from app.services.ai_feedback import run_label_ai, start_label_ai
from app.services.gold import wilson_interval
from app.services.rounds import RoundError, start_round
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import gold_score, label_preferences, make_prompts


def test_agreement_per_kind_on_known_labels():
    # pairwise: the judge's first response against the person's choice
    assert label_agreement(HumanLabel(1, "pairwise", (10,)), [10, 11]) == (1, 1)
    assert label_agreement(HumanLabel(1, "pairwise", (11,)), [10, 11]) == (0, 1)
    # ranking: person 10 > 17 > 13, judge 10 > 13 > 17: 2 of 3 pairs concordant, (1 + tau) / 2 with tau = 1/3
    assert label_agreement(HumanLabel(2, "ranking", (10, 17, 13)), [10, 13, 17]) == (2, 3)
    assert label_agreement(HumanLabel(2, "ranking", (13, 17, 10)), [10, 17, 13]) == (0, 3)  # reversed: tau = -1
    labels = {
        1: [HumanLabel(1, "pairwise", (10,)), HumanLabel(1, "pairwise", (11,))],  # two people disagree: 1 of 2
        2: [HumanLabel(2, "pairwise", (20,))],
        3: [HumanLabel(3, "pairwise", (31,))],
        4: [HumanLabel(4, "ranking", (40, 42, 41))],
        5: [HumanLabel(5, "pairwise", (50,))],  # the judge never scored it: not compared
    }
    orders = {1: [10, 11], 2: [20, 21], 3: [30, 31], 4: [40, 41, 42]}
    pairwise, ranking = agreement_by_kind(labels, orders)
    assert (pairwise.kind, pairwise.n, pairwise.agreed, pairwise.rate) == ("pairwise", 4, 2, 0.5)
    assert (ranking.kind, ranking.n, ranking.agreed) == ("ranking", 3, 2)
    assert pairwise.interval == wilson_interval(2, 4)
    low, high = pairwise.interval
    assert low == pytest.approx(0.150, abs=1e-3) and high == pytest.approx(0.850, abs=1e-3)
    assert format_rate(pairwise) == "50% [15%, 85%] (2/4)"
    # nothing to compare: unknown, never 0 or 1
    (empty, _) = agreement_by_kind({}, {})
    assert empty.rate is None and empty.interval is None
    assert format_rate(empty) == "agreement unknown: no human-labelled pairwise tasks to compare"


def judged_world(db):
    """8 human pairwise labels (2 of them the wrong sum), a ranking labelled 10 > 17 > 13, a tie (no order), and 4
    open tasks for the judge; a current reward model the fake judge stands for."""
    human = factories.make_annotator(db)
    prompts = make_prompts(db, train=12, eval=0)
    label_preferences(db, prompts["train"][:8], annotator=human, flip_every=4)
    ranking, gens = factories.pairwise_task(
        db, prompt_text="question: what is 5 plus 5? answer:", texts=(" 10", " 13", " 17")
    )
    factories.annotate_ranking(db, ranking, human, ranking=[gens[0], gens[2], gens[1]])
    tie, _ = factories.pairwise_task(db, prompt_text="question: what is 1 plus 1? answer:", texts=(" 2", " 5"))
    factories.annotate_pairwise(db, tie, human, chosen=None, choice="tie")
    open_tasks = [
        factories.make_task(db, p, [factories.make_generation(db, p, t) for t in (" 1", " 2")])
        for p in prompts["train"][8:]
    ]
    db.add(ModelVersion(name="rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True, metrics={}))
    db.commit()
    return open_tasks


@pytest.fixture
def right_sum_judge(monkeypatch):
    """A judge that prefers the right sum (ties kept in shown order): it agrees with every right human choice."""

    def scorer(path):
        return lambda tasks: [[gold_score(t.prompt, r) for r in t.texts] for t in tasks]

    monkeypatch.setattr("app.services.ai_feedback.reward_model_scorer", scorer)


def run_job(db, job):
    job.status, job.worker_id, job.attempts = "running", "test", 1
    db.commit()
    return run_label_ai(
        JobContext(job_id=job.id, worker_id="test", kind=job.kind, config=dict(job.config), output_dir=None)
    )


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_label_ai_calibrates_on_human_labels_before_labelling(db, backend, right_sum_judge):
    open_tasks = judged_world(db)
    job = start_label_ai(db, config={"calibration": 50, "seed": 3})
    db.commit()

    result = run_job(db, job)

    db.expire_all()
    calibration = result["calibration"]
    assert calibration["tasks"] == 9 and calibration["seed"] == 3  # 8 pairwise + the ranking; the tie has no order
    pairwise, ranking = calibration["kinds"]
    assert (pairwise["n"], pairwise["agreed"], pairwise["rate"]) == (8, 6, 0.75)
    assert (pairwise["low"], pairwise["high"]) == pytest.approx(wilson_interval(6, 8))
    assert (ranking["n"], ranking["agreed"]) == (3, 2)
    # stored as one calibration of the judge's identity; the scored human tasks got no AI label
    judge_user = db.scalar(select(Annotation.user_id).where(Annotation.source == "ai").limit(1))
    rows = latest_calibration(db, judge_user)
    assert [(r.kind, r.n, r.agreed, r.job_id) for r in rows] == [("pairwise", 8, 6, job.id), ("ranking", 3, 2, job.id)]
    rm_id = db.scalar(select(ModelVersion.id))
    assert rows[0].rate == 0.75 and rows[0].judge == f"reward_model rm#{rm_id}"
    labelled = set(db.scalars(select(Annotation.task_id).where(Annotation.source == "ai")))
    assert labelled == {t.id for t in open_tasks} and result["labelled"] == 4

    # a seeded sample: the same seed draws the same tasks; the size bounds it
    assert human_labelled_sample(db, size=4, seed=1) == human_labelled_sample(db, size=4, seed=1)
    assert len(human_labelled_sample(db, size=4, seed=1)) == 4


def test_with_no_human_labels_the_agreement_is_unknown(db, right_sum_judge):
    prompts = make_prompts(db, train=2, eval=0)
    for p in prompts["train"]:
        factories.make_task(db, p, [factories.make_generation(db, p, t) for t in (" 1", " 2")])
    db.add(ModelVersion(name="rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True, metrics={}))
    db.commit()
    result = run_job(db, start_label_ai(db, config={}))
    assert result["calibration"]["tasks"] == 0 and result["labelled"] == 2
    assert all(k["n"] == 0 and k["rate"] is None for k in result["calibration"]["kinds"])
    # calibration 0: none at all, and no row
    db.commit()
    assert "calibration" not in run_job(db, start_label_ai(db, config={"calibration": 0, "annotator": "ai-b"}))
    assert db.scalar(select(func.count()).select_from(AICalibration)) == 2  # the first job's two kinds


def ai_labelled_world(db, *, pairs: int = 6):
    """A current policy, `pairs` human preferences and as many AI ones by one judge. Commits."""
    factories.labelled_world(db, train=pairs, eval=1)
    judge = factories.make_annotator(db, "ai-judge", is_ai=True)
    prompts = [factories.make_prompt(db, f"question: what is {a} plus 30? answer:") for a in range(pairs)]
    label_preferences(db, prompts, annotator=judge, source="ai")
    db.commit()
    return judge


def calibrate(db, judge, pairwise: tuple[int, int], ranking: tuple[int, int] = (0, 0)):
    agreements = [KindAgreement("pairwise", pairwise[1], pairwise[0]), KindAgreement("ranking", ranking[1], ranking[0])]
    rows = store_calibration(db, annotator_id=judge.id, judge="reward_model rm#1", agreements=agreements)
    db.commit()
    return rows


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_round_refuses_untrusted_ai_labels_unless_it_says_so(db, backend, settings):
    judge = ai_labelled_world(db)
    with pytest.raises(RoundError, match="ai-judge: never calibrated") as refused:
        start_round(db, config={"min_pairs": 4})
    assert refused.value.status == 409 and "70%" in str(refused.value)
    db.rollback()

    calibrate(db, judge, pairwise=(12, 20))  # 60% [39%, 78%]
    with pytest.raises(RoundError) as refused:
        start_round(db, config={"min_pairs": 4, "source": "ai"})
    assert "ai-judge pairwise: agreement 60% [39%, 78%] (12/20) below 70%" in str(refused.value)
    assert "allow_untrusted_ai_labels" in str(refused.value)
    db.rollback()

    # human labels only: the judge does not matter
    assert start_round(db, config={"min_pairs": 4, "source": "human"}).config["allow_untrusted_ai_labels"] is False
    db.rollback()
    # allowed explicitly: it starts, and the round config keeps that it was
    job = start_round(db, config={"min_pairs": 4, "allow_untrusted_ai_labels": True})
    assert job.config["allow_untrusted_ai_labels"] is True
    db.rollback()

    # a newer calibration above the threshold: trusted (its ranking row, unknown, does not matter: no AI ranking)
    calibrate(db, judge, pairwise=(18, 20))
    trust = ai_label_trust(db, source="all", since=None, threshold=settings.ai_min_agreement)
    assert [(t.annotator, t.kinds, t.trusted) for t in trust] == [("ai-judge", ["pairwise"], True)]
    job = start_round(db, config={"min_pairs": 4})
    assert job.status == "queued"


def test_a_lower_admin_threshold_lets_the_same_calibration_through(db, settings, monkeypatch):
    judge = ai_labelled_world(db)
    calibrate(db, judge, pairwise=(12, 20))
    monkeypatch.setattr(settings, "ai_min_agreement", 0.5)
    assert start_round(db, config={"min_pairs": 4}).status == "queued"
