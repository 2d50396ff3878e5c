"""A round's dataset snapshot: `rounds/<round id>/snapshot/` in the data dir.

It holds what the round trains and evaluates on, frozen at one annotation id, so a round can be rerun by hand
(`python -m trainer ...` over these files) or by the service (`snapshot_from`) with the same result:

    trl.jsonl, rankings.jsonl, kto.jsonl, sft.jsonl   exports (app.services.exports) of train-split prompts by
                                                      the round's filters, up to `max_annotation_id`; trl.jsonl
                                                      holds the choices and rankings only
    rewrites.jsonl                                    the rewrites' pairs, in trl's format, apart: a round uses
                                                      them when it says so (use_rewrites) and counts them apart
    prompts.jsonl                                     train-split prompts {"prompt_id", "prompt" | "messages"}
                                                      (PPO rollouts)
    eval_prompts.jsonl                                eval-split prompts, used only to evaluate
    manifest.json                                     filters, max_annotation_id, rows and sha256 of every file

The directory is written as `snapshot.tmp-*` and renamed when complete, so a snapshot directory that exists is
whole. Eval-split prompts never reach the training files (the exports are filtered to split=train).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Annotation, Prompt, User
from app.services.annotator_weights import annotator_weights
from app.services.digests import file_sha256
from app.services.errors import ServiceError
from app.services.exports import ExportFilters, write_export
from app.services.training_labels import training_labels

EXPORT_FORMATS = ("trl", "rankings", "kto", "sft")
REWRITES_FILE = "rewrites.jsonl"
WEIGHTED = ("trl", "rankings", "kto")  # the preference files: each line carries its annotator's weight when asked
MANIFEST = "manifest.json"
PROMPT_FILES = {"prompts.jsonl": "train", "eval_prompts.jsonl": "eval"}


class SnapshotError(ServiceError):
    """A snapshot that cannot be made or does not match its manifest; the message is safe to show."""


@dataclass(frozen=True)
class SnapshotFilters:
    """The round's data filters: whose annotations (human, ai, all), since when, minimum task agreement; and how
    the preference lines are weighted by their annotator (`annotator_weighting`, none: no weight written); raw or
    adjudicated `labels` (app.services.training_labels)."""

    source: str = "all"
    since: datetime | None = None
    min_agreement: float | None = None
    annotator_weighting: str = "none"
    labels: str = "raw"

    def export_filters(self, *, until_id: int | None) -> ExportFilters:
        # until_id None: nothing matched yet; -1 keeps the exports empty instead of unbounded.
        return ExportFilters(
            since=self.since,
            until_id=until_id if until_id is not None else -1,
            source=self.source,
            split="train",
            min_agreement=self.min_agreement,
            labels=self.labels,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": self.since.isoformat() if self.since else None,
            "min_agreement": self.min_agreement,
            "split": "train",
            "annotator_weighting": self.annotator_weighting,
            "labels": self.labels,
        }


def round_dir(data_dir: Path, round_id: int) -> Path:
    return Path(data_dir) / "rounds" / str(round_id)


def snapshot_dir(data_dir: Path, round_id: int) -> Path:
    return round_dir(data_dir, round_id) / "snapshot"


def max_annotation_id(session: Session, filters: SnapshotFilters) -> int | None:
    """The newest live annotation the filters admit (train-split prompts): the snapshot's upper bound."""
    stmt = training_labels(func.max(Annotation.id), source=filters.source, since=filters.since)
    return session.scalar(stmt)


def _write_prompts(session: Session, path: Path, split: str) -> int:
    """Prompts of one split in id order, in the trainer's prompt format."""
    rows = 0
    with open(path, "w", encoding="utf-8") as fh:
        stmt = (
            select(Prompt.id, Prompt.text, Prompt.messages)
            .where(Prompt.split == split, Prompt.retired_at.is_(None))
            .order_by(Prompt.id)
            .execution_options(yield_per=2000)
        )
        for prompt_id, text, messages in session.execute(stmt):
            line: dict[str, Any] = {"prompt_id": prompt_id}
            if messages is not None:
                line["messages"] = messages
            else:
                line["prompt"] = text or ""
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            rows += 1
    return rows


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def write_snapshot(session: Session, *, out: Path, filters: SnapshotFilters, round_id: int) -> dict[str, Any]:
    """Write the snapshot directory `out` (atomically) and return its manifest. `out` must not exist."""
    out = Path(out)
    if out.exists():
        raise SnapshotError(f"{out} already exists", status=409)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        until_id = max_annotation_id(session, filters)
        export_filters = filters.export_filters(until_id=until_id)
        weights = annotator_weights(
            session,
            filters.annotator_weighting,
            source=filters.source,
            since=filters.since,
            until_id=until_id if until_id is not None else -1,
        )
        files: dict[str, dict[str, Any]] = {}
        annotations: dict[str, int] = {}
        for fmt in EXPORT_FORMATS:
            weight_of = weights.of if weights is not None and fmt in WEIGHTED else None
            result = write_export(
                session,
                fmt=fmt,
                out=tmp / f"{fmt}.jsonl",
                filters=export_filters,
                rewrites="exclude",
                weight_of=weight_of,
            )
            (tmp / f"{fmt}.jsonl.sha256").unlink(missing_ok=True)  # the manifest is the one record of hashes
            files[f"{fmt}.jsonl"] = {"rows": result.rows, "sha256": result.sha256}
            annotations[fmt] = result.annotations
        result = write_export(
            session,
            fmt="trl",
            out=tmp / REWRITES_FILE,
            filters=export_filters,
            rewrites="only",
            weight_of=weights.of if weights is not None else None,
        )
        (tmp / f"{REWRITES_FILE}.sha256").unlink(missing_ok=True)
        files[REWRITES_FILE] = {"rows": result.rows, "sha256": result.sha256}
        annotations["rewrites"] = result.annotations
        for name, split in PROMPT_FILES.items():
            rows = _write_prompts(session, tmp / name, split)
            files[name] = {"rows": rows, "sha256": file_sha256(tmp / name)}
        manifest = {
            "round_id": round_id,
            "created_at": datetime.now(UTC).isoformat(),
            "filters": filters.describe(),
            "max_annotation_id": until_id,
            "rows": {name: meta["rows"] for name, meta in files.items()},
            "annotations": annotations,
            "files": files,
        }
        if weights is not None:
            public_ids = dict(session.execute(select(User.id, User.public_id)).all())
            manifest["annotator_weights"] = weights.describe(public_ids)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no manifest (not a complete snapshot)") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: not JSON: {exc}") from None


def verify_snapshot(directory: Path) -> list[str]:
    """Problems of a snapshot directory against its manifest (empty when every file matches)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems = []
    listed = set(manifest.get("files", {}))
    for name, meta in sorted(manifest.get("files", {}).items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        if file_sha256(path) != meta["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
        elif _count_lines(path) != meta["rows"]:
            problems.append(f"{name}: {_count_lines(path)} rows, the manifest says {meta['rows']}")
    for path in sorted(directory.iterdir()):
        if path.name != MANIFEST and path.name not in listed:
            problems.append(f"{path.name}: not in the manifest")
    return problems


def copy_snapshot(source: Path, out: Path) -> dict[str, Any]:
    """Reuse another round's snapshot (a rerun on the same data): verified, then copied whole."""
    problems = verify_snapshot(source)
    if problems:
        raise SnapshotError(f"snapshot {source} does not match its manifest: {'; '.join(problems)}")
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        for path in Path(source).iterdir():
            shutil.copyfile(path, tmp / path.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_manifest(out)


def snapshot_archive(directory: Path) -> Path:
    """The snapshot as `snapshot.tar.gz` beside it (for download), written once: deterministic member order and
    times, via a temporary file so a half-written archive is never served."""
    directory = Path(directory)
    archive = directory.parent / f"{directory.name}.tar.gz"
    if archive.is_file():
        return archive
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tar,
        ):
            for path in sorted(directory.iterdir()):
                info = tar.gettarinfo(str(path), arcname=f"snapshot/{path.name}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive
