"""Whether a round's new models become current: the promotion gate the round applies itself, and promotion by hand
of a round the gate held back.

The gate: the new policy's win-rate against the policy it is compared with, under the new reward model on the eval
prompts, beats 50% by more than `promote_margin_se` standard errors (over prompts), and every reward-hacking check
passes. The reward model is promoted with the policy, never alone (docs/design.md, "Promotion")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Job
from app.services.errors import Conflict
from app.services.models_registry import promote
from app.services.rounds.config import RoundConfig
from app.services.rounds.report import get_round


def changed_little(kl_to_start: float | None, kl_floor: float) -> str | None:
    """The note for a round that barely moved its policy (None when it moved, or the KL is unknown)."""
    if kl_to_start is None or kl_to_start >= kl_floor:
        return None
    return (
        f"this round changed almost nothing: KL {kl_to_start:.4f} per response from the policy it started from, "
        f"below the floor {kl_floor:g}"
    )


def promotion_verdict(evaluation: dict[str, Any], cfg: RoundConfig) -> dict[str, Any]:
    """The gate's verdict on a round's evaluation: promoted or not, every reason why not, the checks as passed or
    failed, and the changed-almost-nothing note. Stored in the round's result; the round page shows it."""
    summary = evaluation.get("summary") or {}
    checks = evaluation.get("checks")
    if checks is None:  # an evaluation written before the checks were kept: its warnings are the failed ones
        checks = [
            {"name": w.split(":")[0], "passed": False, "detail": w, "warning": w}
            for w in evaluation.get("warnings", [])
        ]
    win, se, z = summary.get("rm_win_rate"), summary.get("rm_win_rate_se"), cfg.promote_margin_se
    needed = None if se is None else 0.5 + z * se
    reasons = []
    if win is None:
        reasons.append("no win-rate under the new reward model")
    elif needed is None:
        reasons.append("the win-rate has no standard error: evaluate on at least 2 eval prompts")
    elif not win > needed:
        reasons.append(
            f"win-rate {win:.1%} against the {cfg.baseline} policy under the new reward model is not above "
            f"{needed:.1%} (50% + {z:g} standard errors of {se:.1%})"
        )
    reasons += [f"reward-hacking check failed: {c['warning']}" for c in checks if not c["passed"]]
    kl = summary.get("kl_to_start")
    return {
        "promoted": not reasons,
        "by_hand": False,
        "reasons": reasons,
        "win_rate": win,
        "standard_error": se,
        "needed": needed,
        "margin_se": z,
        "checks": checks,
        "kl_to_start": kl,
        "kl_floor": cfg.kl_floor,
        "changed_little": changed_little(kl, cfg.kl_floor),
    }


def promote_round(session: Session, round_id: int) -> Job:
    """Make a round's policy and reward model current by hand (a round the gate held back). Flushes; the caller
    commits. Conflict unless the round succeeded and registered its models."""
    job = get_round(session, round_id)
    result = job.result or {}
    number = job.round_number or job.id
    if job.status != "succeeded" or result.get("policy_id") is None:
        raise Conflict(f"round {number} is {job.status}: it has no new models to promote")
    promote(session, model_id=result["policy_id"])
    if result.get("reward_model_id") is not None:
        promote(session, model_id=result["reward_model_id"])
    verdict = dict(result.get("promotion") or {})
    verdict.update(promoted=True, by_hand=True, promoted_at=datetime.now(UTC).isoformat())
    job.result = {**result, "promotion": verdict}  # a new dict: the JSON column sees the change
    session.flush()
    return job
