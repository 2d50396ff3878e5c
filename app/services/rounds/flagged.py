"""Suspicious outputs go to people first: when a round's reward-hacking checks fail
(app.services.rounds.evaluate.hacking_checks, read on the eval prompts), the new policy and the policy it was
compared with answer a sample of train prompts with the same seeds; the answers the failed checks point at are
named one by one and made into pairwise tasks (the new answer against the old one) that the queue offers before
every ordinary task. The reason is stored on the task (tasks.flag_reason) for admins; annotators never see it.

Per answer, with A the new policy's and B the old one's:
    rm_vs_judge     the reward model scores A above B, the gold judge scores B above A
    length_growth   A at least FLAG_LENGTH_GROWTH times B's tokens, and FLAG_MIN_GROWTH tokens longer
    reward_length   length_growth, and the reward model scores A above B: the reward paid for the length
    repetition      at least FLAG_REPEATED_SHARE of A's word trigrams repeat an earlier one, more than in B
    truncation      A stops at the token limit, B ended with EOS
An answer is flagged only for the reasons whose check failed: a healthy round looks at nothing and queues nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.jobs.context import JobContext
from app.models import Generation, Prompt, Task, TaskPosition, utcnow
from app.services.rounds.config import RoundConfig
from app.services.rounds.data import read_jsonl
from app.services.rounds.trainer_steps import comparison_args, remove_leftovers
from domain.vocabulary import FLAG_REASONS

# Above every ordinary task (generation requests and rounds make theirs at 0): the assignment query walks
# priorities from the highest, so flagged tasks are offered first. An admin can still set any priority by hand.
FLAGGED_TASK_PRIORITY = 100
# One answer varies more than the mean the round's check reads (x1.5): twice the old answer's tokens.
FLAG_LENGTH_GROWTH = 2.0
FLAG_MIN_GROWTH = 4  # tokens: 2 -> 4 tokens is x2 but says nothing
FLAG_NGRAM = 3
FLAG_REPEATED_SHARE = 0.3
FLAG_MIN_WORDS = 8  # fewer words have too few trigrams to judge repetition by
# Train prompts both policies answer for the per-sample checks, per flagged task a round may make: most answers
# are fine even in a hacked round, so more are looked at than become tasks.
FLAG_PROBE_OVERSAMPLE = 4


def repeated_ngram_share(text: str, n: int = FLAG_NGRAM) -> float:
    """Share of the text's word n-grams that repeat an earlier one ("a b c a b c a b c": 4 of 7). 0 for a text
    of fewer than FLAG_MIN_WORDS words."""
    words = text.split()
    if len(words) < FLAG_MIN_WORDS:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def sample_reasons(row: dict[str, Any]) -> list[str]:
    """Every per-sample flag the row (a paired sample, gold scores joined) meets, in FLAG_REASONS order."""
    a, b = row["policy"], row["baseline"]
    rm_prefers_new = a["score"] > b["score"]
    grew = a["tokens"] >= FLAG_LENGTH_GROWTH * b["tokens"] and a["tokens"] - b["tokens"] >= FLAG_MIN_GROWTH
    repeated = repeated_ngram_share(a["text"])
    met = {
        "rm_vs_judge": rm_prefers_new
        and a.get("gold") is not None
        and b.get("gold") is not None
        and a["gold"] < b["gold"],
        "length_growth": grew,
        "reward_length": grew and rm_prefers_new,
        "repetition": repeated >= FLAG_REPEATED_SHARE and repeated > repeated_ngram_share(b["text"]),
        "truncation": not a["finished"] and b["finished"],
    }
    return [r for r in FLAG_REASONS if met[r]]


def join_gold(rm_rows: list[dict[str, Any]], gold_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reward model's paired samples with the gold judge's scores of the same answers. Both evaluations sample
    with the same seeds; an answer whose text differs between them (nondeterministic kernels) gets no gold score."""
    gold = {(str(r["prompt_id"]), r["sample"]): r for r in gold_rows}
    out = []
    for row in rm_rows:
        row = {**row, "policy": dict(row["policy"]), "baseline": dict(row["baseline"])}
        g = gold.get((str(row["prompt_id"]), row["sample"]))
        for side in ("policy", "baseline"):
            same = g is not None and g[side]["text"] == row[side]["text"]
            row[side]["gold"] = g[side]["score"] if same else None
        out.append(row)
    return out


def flag_samples(
    rm_rows: list[dict[str, Any]],
    gold_rows: list[dict[str, Any]],
    failed: set[str],
    prompts: dict[str, str],
) -> list[dict[str, Any]]:
    """The samples the failed checks (their flags, `failed`) point at: one per prompt, the most suspicious first
    (most reasons, then the reward model's margin for the new answer: what the hack earns). `prompts`: prompt id ->
    the text shown on the round page."""
    flagged = []
    for row in join_gold(rm_rows, gold_rows):
        reasons = [r for r in sample_reasons(row) if r in failed]
        if not reasons:
            continue
        a, b = row["policy"], row["baseline"]
        flagged.append(
            {
                "prompt_id": str(row["prompt_id"]),
                "sample": row["sample"],
                "seed": row["seed"],
                "prompt": prompts.get(str(row["prompt_id"]), ""),
                "reasons": reasons,
                "rm_margin": a["score"] - b["score"],
                "repeated_share": repeated_ngram_share(a["text"]),
                "after": a,
                "before": b,
            }
        )
    flagged.sort(key=lambda f: (-len(f["reasons"]), -f["rm_margin"]))
    seen: set[str] = set()
    return [f for f in flagged if not (f["prompt_id"] in seen or seen.add(f["prompt_id"]))]


def probe_prompts(rdir: Path, count: int, seed: int) -> Path:
    """`count` of the snapshot's train prompts, drawn with the round's seed (the same on a retry)."""
    out = rdir / "flag_prompts.jsonl"
    lines = (rdir / "snapshot" / "prompts.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    picked = sorted(random.Random(seed).sample(range(len(lines)), min(count, len(lines))))
    out.write_text("".join(lines[i] for i in picked), encoding="utf-8")
    return out


def flag_train_samples(
    ctx: JobContext, cfg: RoundConfig, rdir: Path, before: str, failed: set[str]
) -> list[dict[str, Any]]:
    """When a check failed and the round makes flagged tasks: the new policy (rdir/policy) and the one it was
    compared with (`before`) answer FLAG_PROBE_OVERSAMPLE x flagged_tasks train prompts with `trainer evaluate
    --samples-out`, scored by the new reward model and the gold judge when set; flag_samples names the suspicious
    answers. Train prompts, not the eval prompts the checks read: eval prompts never become tasks (held out), and a
    label on a train prompt is what teaches the next reward model not to pay for the hack. None otherwise."""
    if not failed or cfg.flagged_tasks <= 0:
        return []
    prompts = probe_prompts(rdir, cfg.flagged_tasks * FLAG_PROBE_OVERSAMPLE, cfg.seed)
    if prompts.stat().st_size == 0:
        return []
    common = comparison_args(cfg, rdir, baseline=before, prompts=prompts)
    judges = {"rm": f"rm:{rdir / 'reward'}"}
    if cfg.gold_judge:
        judges["gold"] = f"py:{cfg.gold_judge}"
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, judge in judges.items():
        out, paired = rdir / f"flag-probe-{name}.json", rdir / f"flag-samples-{name}.jsonl"
        if not out.is_file():  # --samples-out is written before --out: a killed attempt's is not reused
            for path in (out, paired):
                remove_leftovers(rdir, path.name)
            paired.unlink(missing_ok=True)
            ctx.run_trainer(
                ["evaluate", *common, "--judge", judge, "--out", str(out), "--samples-out", str(paired)],
                stage=f"flag-probe-{name}",
            )
        rows[name] = read_jsonl(paired)
    shown = {str(p["prompt_id"]): p.get("prompt") or json.dumps(p.get("messages")) for p in read_jsonl(prompts)}
    return flag_samples(rows["rm"], rows.get("gold", []), failed, shown)


def store_flagged_tasks(
    session: Session,
    flagged: list[dict[str, Any]],
    *,
    limit: int,
    overlap: int,
    sampling: dict[str, Any],
    policy_id: int,
    before_id: int,
    job_id: int | None,
) -> int:
    """Pairwise tasks at FLAGGED_TASK_PRIORITY, the first `limit` of `flagged`: the new answer and the old one as
    generation rows of their policies. A prompt that already has an open flagged task, is retired, gone or held out
    (eval split) is passed over. Flushes; the caller commits. `sampling`: temperature, top_k, top_p,
    max_new_tokens of the answers."""
    if limit <= 0 or not flagged:
        return 0
    ids = {int(f["prompt_id"]) for f in flagged if str(f["prompt_id"]).isdigit()}
    live = set(
        session.scalars(
            select(Prompt.id).where(Prompt.id.in_(ids), Prompt.retired_at.is_(None), Prompt.split == "train")
        )
    )
    open_flagged = set(
        session.scalars(
            select(Task.prompt_id).where(
                Task.prompt_id.in_(ids),
                Task.flag_reason.is_not(None),
                Task.completed.is_(False),
                Task.retired_at.is_(None),
            )
        )
    )
    chosen = [f for f in flagged if str(f["prompt_id"]).isdigit() and int(f["prompt_id"]) in live - open_flagged]
    now = utcnow()
    made = 0
    for f in chosen[:limit]:
        prompt_id = int(f["prompt_id"])
        gen_ids = [
            session.scalar(
                insert(Generation)
                .values(
                    prompt_id=prompt_id,
                    model_version_id=model_id,
                    text=answer["text"],
                    seed=f["seed"],
                    finish_reason="eos" if answer["finished"] else "length",
                    num_tokens=answer["tokens"],
                    source="model",
                    job_id=job_id,
                    created_at=now,
                    **sampling,
                )
                .returning(Generation.id)
            )
            for model_id, answer in ((policy_id, f["after"]), (before_id, f["before"]))
        ]
        task_id = session.scalar(
            insert(Task)
            .values(
                prompt_id=prompt_id,
                kind="pairwise",
                overlap=overlap,
                priority=FLAGGED_TASK_PRIORITY,
                done_count=0,
                completed=False,
                meta={"generation_job": job_id},
                job_id=job_id,
                created_at=now,
                flag_reason=",".join(f["reasons"]),
            )
            .returning(Task.id)
        )
        session.execute(
            insert(TaskPosition),
            [{"task_id": task_id, "position": i, "generation_id": g} for i, g in enumerate(gen_ids)],
        )
        made += 1
    session.flush()
    return made
