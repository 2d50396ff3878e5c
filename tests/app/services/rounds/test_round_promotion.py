"""The promotion gate: a round's new policy becomes current only when it beats the current one under the new reward
model beyond the win-rate's standard error and passes every reward-hacking check; promotion by hand otherwise."""

from __future__ import annotations

import pytest

from app.models import Job, ModelVersion
from app.services.errors import Conflict, NotFound
from app.services.rounds import RoundConfig, promote_round, promotion_verdict
from app.services.rounds.evaluate import hacking_checks
from tests.factories import register_policy

CALM = {"mean_length_before": 10.0, "mean_length": 11.0, "distinct_2_before": 0.8, "distinct_2": 0.7}


def _evaluation(summary: dict, corr: float = 0.1) -> dict:
    report = {"summary": {**CALM, **summary}}
    report["checks"] = hacking_checks(report, {"reward_length_corr": corr})
    return report


def test_the_policy_must_beat_the_current_one_beyond_its_standard_error():
    cfg = RoundConfig()  # 2 standard errors by default
    passed = promotion_verdict(_evaluation({"rm_win_rate": 0.70, "rm_win_rate_se": 0.05, "kl_to_start": 0.3}), cfg)
    assert passed["promoted"] and passed["reasons"] == [] and passed["needed"] == pytest.approx(0.6)
    assert passed["changed_little"] is None
    assert [c["name"] for c in passed["checks"]] == ["length growth", "repetition", "reward-length correlation"]
    assert all(c["passed"] for c in passed["checks"])

    close = promotion_verdict(_evaluation({"rm_win_rate": 0.58, "rm_win_rate_se": 0.05}), cfg)
    assert not close["promoted"]
    assert close["reasons"] == [
        "win-rate 58.0% against the current policy under the new reward model is not above 60.0% "
        "(50% + 2 standard errors of 5.0%)"
    ]
    # the margin is a round setting
    assert promotion_verdict(
        _evaluation({"rm_win_rate": 0.58, "rm_win_rate_se": 0.05}), RoundConfig(promote_margin_se=1.0)
    )["promoted"]
    # a policy that changed nothing ties on every prompt: 50%, no spread, not better
    same = promotion_verdict(_evaluation({"rm_win_rate": 0.5, "rm_win_rate_se": 0.0, "kl_to_start": 0.001}), cfg)
    assert not same["promoted"] and "not above 50.0%" in same["reasons"][0]
    assert same["changed_little"].startswith("this round changed almost nothing: KL 0.0010")
    assert "floor 0.02" in same["changed_little"]
    one_prompt = promotion_verdict(_evaluation({"rm_win_rate": 1.0}), cfg)
    assert not one_prompt["promoted"] and "at least 2 eval prompts" in one_prompt["reasons"][0]


def test_a_failed_reward_hacking_check_holds_the_policy_back_whatever_its_win_rate():
    evaluation = _evaluation({"rm_win_rate": 0.9, "rm_win_rate_se": 0.03, "mean_length": 25.0}, corr=0.9)
    verdict = promotion_verdict(evaluation, RoundConfig())
    assert not verdict["promoted"]
    assert verdict["reasons"] == [
        "reward-hacking check failed: length growth: mean length 10.0 -> 25.0 tokens (x2.50)",
        "reward-hacking check failed: reward-length correlation 0.90 among the policy's training samples (PPO's "
        "last batch, or all best-of-n samples): the reward model may pay for length",
    ]
    assert [(c["name"], c["passed"]) for c in verdict["checks"]] == [
        ("length growth", False),
        ("repetition", True),
        ("reward-length correlation", False),
    ]


def _held_back_round(db) -> tuple[Job, ModelVersion, ModelVersion]:
    sft = register_policy(db, "/models/sft")
    job = Job(kind="round", status="succeeded", config={}, round_number=1, result={})
    db.add(job)
    db.flush()
    policy, reward = (
        ModelVersion(name=f"{k}-r{job.id}", kind=k, stage="rlhf", path=f"/{k}", parent_id=sft.id, metrics={})
        for k in ("policy", "reward")
    )
    db.add_all([policy, reward])
    db.flush()
    verdict = promotion_verdict(_evaluation({"rm_win_rate": 0.5, "rm_win_rate_se": 0.1}), RoundConfig())
    job.result = {"policy_id": policy.id, "reward_model_id": reward.id, "promotion": verdict}
    db.commit()
    return job, policy, sft


def test_promotion_by_hand_makes_both_models_current_and_says_so(db):
    job, policy, sft = _held_back_round(db)
    promote_round(db, job.id)
    db.commit()
    db.expire_all()
    assert db.get(ModelVersion, policy.id).is_current and not db.get(ModelVersion, sft.id).is_current
    assert db.get(ModelVersion, job.result["reward_model_id"]).is_current
    promotion = db.get(Job, job.id).result["promotion"]
    assert promotion["promoted"] and promotion["by_hand"] and promotion["reasons"]  # why the gate held it back
    with pytest.raises(NotFound):
        promote_round(db, 999_999)
    job.status = "failed"
    db.commit()
    with pytest.raises(Conflict, match="round 1 is failed"):
        promote_round(db, job.id)
