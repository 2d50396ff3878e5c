"""What a round's page shows, read from the job and its files in rounds/<id>/: the snapshot's manifest, the
evaluation, the samples before and after side by side, the models it registered; and the snapshot's files for
download (only the names its manifest lists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, ModelVersion
from app.services.ai_calibration import ai_label_trust
from app.services.errors import NotFound
from app.services.jobs import log_url
from app.services.rounds.config import RoundConfig
from app.services.rounds.data import read_jsonl
from app.services.rounds.listing import get_round, round_summary, round_to_dict
from app.services.snapshots import MANIFEST, SnapshotError, read_manifest, round_dir, snapshot_archive, snapshot_dir
from app.services.verdict import human_verdict
from app.settings import get_settings
from domain.vocabulary import FINISHED_JOB_STATUSES

# The models a round's result names, each shown on its page.
RESULT_MODEL_KEYS = ("policy_id", "reward_model_id", "parent_policy_id", "reference_id")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def side_by_side(rdir: Path) -> list[dict[str, Any]]:
    """The report's samples: the same eval prompt answered by the policy before and after the round."""
    prompts = {
        str(p["prompt_id"]): p.get("prompt") or json.dumps(p.get("messages"))
        for p in read_jsonl(rdir / "report_prompts.jsonl")
    }
    after = {str(s["prompt_id"]): s for s in read_jsonl(rdir / "samples_after.jsonl")}
    rows = []
    for sample in read_jsonl(rdir / "samples_before.jsonl"):
        pid = str(sample["prompt_id"])
        rows.append(
            {"prompt": prompts.get(pid, ""), "before": sample["text"], "after": after.get(pid, {}).get("text", "")}
        )
    return rows


def _manifest_or_none(directory: Path) -> dict[str, Any] | None:
    if not (directory / MANIFEST).is_file():
        return None
    try:
        return read_manifest(directory)
    except SnapshotError:
        return None


def round_report(session: Session, data_dir: Path, round_id: int) -> dict[str, Any]:
    """Everything the round's page shows (NotFound for no such round)."""
    job = get_round(session, round_id)
    rdir = round_dir(data_dir, job.id)
    result = job.result or {}
    model_ids = [i for i in (result.get(key) for key in RESULT_MODEL_KEYS) if i is not None]
    models = {m.id: m for m in session.scalars(select(ModelVersion).where(ModelVersion.id.in_(model_ids)))}
    manifest = _manifest_or_none(snapshot_dir(data_dir, job.id))
    return {
        "job": job,
        "summary": round_summary(job),
        "active": job.status not in FINISHED_JOB_STATUSES,
        "manifest": manifest,
        "ai_trust": round_ai_trust(session, job, manifest),
        "evaluation": _read_json(rdir / "evaluation.json") or {},
        "samples": side_by_side(rdir),
        "result": result,
        "log_url": log_url(job),
        "models": models,
        "config": json.dumps(job.config, indent=2, sort_keys=True),
        "human_verdict": human_verdict(session, job),
    }


def round_detail(session: Session, round_id: int) -> dict[str, Any]:
    """One round for the API: its row of the list, the policy it was compared with, and the human verdict beside
    the reward model's and the gold judge's win-rates (NotFound for no such round)."""
    job = get_round(session, round_id)
    return {
        **round_to_dict(job),
        "baseline_policy_id": (job.result or {}).get("baseline_policy_id"),
        "human_verdict": human_verdict(session, job),
    }


def round_ai_trust(session: Session, job: Job, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The AI judges whose labels the round takes (up to its snapshot's last annotation once there is one) and each
    one's latest calibration when the round was started, against today's trusted minimum."""
    try:
        config = RoundConfig.model_validate(job.config or {})
    except ValueError:  # a config stored by an older version: no figure rather than no page
        return {"judges": [], "allowed": False, "threshold": get_settings().ai_min_agreement}
    threshold = get_settings().ai_min_agreement
    until_id = manifest.get("max_annotation_id") if manifest else None
    trust = ai_label_trust(
        session,
        source=config.source,
        since=config.since,
        threshold=threshold,
        until_id=until_id,
        as_of=job.created_at,
    )
    return {"judges": trust, "allowed": config.allow_untrusted_ai_labels, "threshold": threshold}


def snapshot_download(session: Session, data_dir: Path, round_id: int) -> Path:
    """The round's complete snapshot as a .tar.gz (NotFound before the snapshot is complete)."""
    get_round(session, round_id)
    directory = snapshot_dir(data_dir, round_id)
    if not (directory / MANIFEST).is_file():
        raise NotFound(f"round {round_id} has no complete snapshot yet")
    return snapshot_archive(directory)


def snapshot_file(session: Session, data_dir: Path, round_id: int, name: str) -> Path:
    """One file of the round's snapshot: only the manifest's own names, so no path tricks."""
    get_round(session, round_id)
    directory = snapshot_dir(data_dir, round_id)
    try:
        listed = set(read_manifest(directory)["files"]) | {MANIFEST}
    except SnapshotError:
        listed = set()
    if name not in listed:
        raise NotFound(f"no file {name!r} in round {round_id}'s snapshot")
    return directory / name
