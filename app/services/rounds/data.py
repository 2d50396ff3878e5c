"""The files a round's stages read, made from its snapshot and the database: the reward model's train and
held-out preferences, the fixed eval prompts, and the train prompts its next tasks are sampled on."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Prompt, Task
from app.services.snapshots import REWRITES_FILE


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file of the round; none when it is not there (yet)."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _held_out(annotation_id: int, fraction: float) -> bool:
    """A fixed, seed-free split by annotation: a ranking's pairs stay on one side."""
    return fraction > 0 and zlib.crc32(str(annotation_id).encode()) % 10_000 < fraction * 10_000


def _pair_count(row: dict[str, Any]) -> int:
    return len(row["completions"]) * (len(row["completions"]) - 1) // 2 if "completions" in row else 1


def split_reward_data(
    snapshot: Path, out_dir: Path, fraction: float, *, use_rewrites: bool = False
) -> tuple[Path, Path | None, int, int]:
    """The snapshot's preferences -> reward_train.jsonl + reward_eval.jsonl (held out by annotation id), counted
    in pairs. Rankings come whole from rankings.jsonl (the trainer encodes a ranking's K responses once and
    trains on its K(K-1)/2 pairs together: InstructGPT's remedy for the overfitting of ranking pairs shuffled
    apart); trl.jsonl adds the pairwise choices, skipping the ranking pairs it also holds; with `use_rewrites`,
    rewrites.jsonl adds the rewrites' pairs (a ranking's rewrite pair included: rankings.jsonl does not hold it)."""
    rankings, trl = snapshot / "rankings.jsonl", snapshot / "trl.jsonl"
    sources = [(rankings, "rankings"), (trl, "trl")] + (
        [(snapshot / REWRITES_FILE, "rewrites")] if use_rewrites else []
    )
    train, held = out_dir / "reward_train.jsonl", out_dir / "reward_eval.jsonl"
    n_train = n_eval = 0
    ranked: set[int] = set()
    with open(train, "w", encoding="utf-8") as ft, open(held, "w", encoding="utf-8") as fe:
        for path, kind in sources:
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as src:
                for line in src:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if kind == "rankings":
                        ranked.add(row["annotation_id"])
                    elif kind == "trl" and row["annotation_id"] in ranked:
                        continue
                    if _held_out(row["annotation_id"], fraction):
                        fe.write(line)
                        n_eval += _pair_count(row)
                    else:
                        ft.write(line)
                        n_train += _pair_count(row)
    if n_eval == 0 or n_train == 0:  # too few to hold any out: train on everything, report no held-out accuracy
        with open(train, "a", encoding="utf-8") as ft:
            ft.write(held.read_text(encoding="utf-8"))
        held.unlink()
        return train, None, n_train + n_eval, 0
    return train, held, n_train, n_eval


def rewrite_pairs(snapshot: Path) -> int:
    """The rewrites' pairs in the snapshot (none in a snapshot made before they were kept apart)."""
    path = snapshot / REWRITES_FILE
    return len(read_jsonl(path)) if path.is_file() else 0


def dpo_pairs_file(rdir: Path, *, use_rewrites: bool) -> Path:
    """DPO's pairs: the snapshot's trl.jsonl, and with `use_rewrites` the rewrites' pairs after them."""
    snapshot = rdir / "snapshot"
    if not use_rewrites or rewrite_pairs(snapshot) == 0:
        return snapshot / "trl.jsonl"
    out = rdir / "dpo_pairs.jsonl"
    out.write_bytes((snapshot / "trl.jsonl").read_bytes() + (snapshot / REWRITES_FILE).read_bytes())
    return out


def eval_prompts_file(rdir: Path, count: int) -> Path:
    """The first `count` eval-split prompts of the snapshot (a fixed set, so rounds compare alike)."""
    out = rdir / "eval_prompts.jsonl"
    lines = (rdir / "snapshot" / "eval_prompts.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:count]), encoding="utf-8")
    return out


def next_task_prompts(session: Session, rdir: Path, count: int) -> Path:
    """Train prompts with the fewest tasks so far (then oldest), for the next tasks."""
    out = rdir / "next_prompts.jsonl"
    if out.is_file():
        return out
    tasks = select(Task.prompt_id, func.count().label("n")).group_by(Task.prompt_id).subquery()
    rows = session.execute(
        select(Prompt.id, Prompt.text, Prompt.messages)
        .outerjoin(tasks, tasks.c.prompt_id == Prompt.id)
        .where(Prompt.split == "train", Prompt.retired_at.is_(None))
        .order_by(func.coalesce(tasks.c.n, 0), Prompt.id)
        .limit(count)
    ).all()
    tmp = out.with_name(out.name + ".tmp-write")
    with open(tmp, "w", encoding="utf-8") as fh:
        for prompt_id, text, messages in rows:
            line = {"prompt_id": prompt_id, **({"messages": messages} if messages is not None else {"prompt": text})}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out
