"""A round's evaluation: the new policy against the baseline on eval prompts with `trainer evaluate` (win-rate
under the new reward model and a gold judge when configured, KL to the reference, mean length, distinct-n), the
figures it is judged by, and the signs of reward hacking."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from app.jobs.context import JobContext
from app.services.rounds.config import RoundConfig
from app.services.rounds.data import eval_prompts_file
from app.services.rounds.lineage import Lineage
from app.services.rounds.trainer_steps import generate_samples, remove_leftovers

# Reward-hacking warnings: thresholds on the evaluation's figures.
LENGTH_GROWTH_WARN = 1.5  # mean length after / before
REPETITION_WARN = 0.5  # distinct-2 after below this share of before's
REWARD_LENGTH_CORR_WARN = 0.7  # correlation of RM score and length among the new samples
TRUNCATION_WARN = 0.2  # share of the new policy's eval samples cut at the token limit (no EOS)...
TRUNCATION_GROWTH = 1.5  # ...and this many times the old policy's share
# Length the labels asked for: the share of labelled pairs (of different lengths) whose preferred response is the
# longer; from this share up, a policy growing longer follows its labels and is not warned about.
LABELS_FAVOUR_LONGER = 0.6


def evaluate_round(
    ctx: JobContext, cfg: RoundConfig, rdir: Path, lineage: Lineage, policy_metrics: dict[str, Any]
) -> dict[str, Any]:
    """New policy (A) against the current one (B) on eval prompts with `trainer evaluate`: win-rate under the new
    reward model (and the gold judge when configured), KL to the reference, mean length, distinct-n; plus a few
    samples of both, side by side, for the report."""
    saved = rdir / "evaluation.json"
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    prompts = eval_prompts_file(rdir, cfg.eval_prompts)
    before = lineage.current if cfg.baseline == "current" else lineage.sft
    common = [
        "--policy",
        str(rdir / "policy"),
        "--baseline",
        before.path,
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        str(cfg.eval_max_new_tokens),
        "--temperature",
        str(cfg.eval_temperature),
        "--num-samples",
        str(cfg.eval_samples),
        "--seed",
        str(cfg.seed),
    ]
    report: dict[str, Any] = {"prompts": _count_jsonl(prompts), "policy_id_before": before.id}
    judges = {"rm": (f"rm:{rdir / 'reward'}", ["--ref", lineage.reference.path])}
    if cfg.gold_judge:
        judges["gold"] = (f"py:{cfg.gold_judge}", [])
    for name, (judge, extra) in judges.items():
        out = rdir / f"evaluate-{name}.json"
        if not out.is_file():
            remove_leftovers(rdir, out.name)
            ctx.run_trainer(
                ["evaluate", *common, "--judge", judge, *extra, "--out", str(out)], stage=f"evaluate-{name}"
            )
        report[name] = json.loads(out.read_text(encoding="utf-8"))
    if cfg.report_samples > 0:
        report_prompts = rdir / "report_prompts.jsonl"
        lines = prompts.read_text(encoding="utf-8").splitlines(keepends=True)[: cfg.report_samples]
        report_prompts.write_text("".join(lines), encoding="utf-8")
        sampling = {
            "num_samples": 1,
            "temperature": cfg.eval_temperature,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": cfg.eval_max_new_tokens,
            "seed": cfg.seed,
        }
        generate_samples(
            ctx,
            stage="samples-before",
            model=before.path,
            prompts=report_prompts,
            out=rdir / "samples_before.jsonl",
            request=sampling,
        )
        generate_samples(
            ctx,
            stage="samples-after",
            model=str(rdir / "policy"),
            prompts=report_prompts,
            out=rdir / "samples_after.jsonl",
            request=sampling,
        )
    report["summary"] = evaluation_summary(report)
    report["labels_longer_share"] = labels_longer_share(rdir / "snapshot" / "trl.jsonl")
    report["warnings"] = hacking_warnings(report, policy_metrics, report["labels_longer_share"])
    saved.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def _count_jsonl(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def evaluation_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures a round is judged by, flat (registry metrics, job result, Rounds page)."""
    out: dict[str, Any] = {}
    rm = report.get("rm", {})
    after, before = rm.get("policy", {}), rm.get("baseline", {})
    out["rm_win_rate"] = rm.get("win_rate", {}).get("win_rate")
    out["rm_win_rate_se"] = rm.get("win_rate", {}).get("standard_error")
    out["kl_to_ref"] = after.get("kl_to_ref")
    out["mean_length"] = after.get("mean_length")
    out["mean_length_before"] = before.get("mean_length")
    out["eos_rate"] = after.get("eos_rate")
    out["eos_rate_before"] = before.get("eos_rate")
    out["distinct_2"] = after.get("distinct_2")
    out["distinct_2_before"] = before.get("distinct_2")
    out["rm_score"] = after.get("judge_mean")
    out["rm_score_before"] = before.get("judge_mean")
    if "gold" in report:
        gold = report["gold"]
        out["gold_win_rate"] = gold.get("win_rate", {}).get("win_rate")
        out["gold_win_rate_se"] = gold.get("win_rate", {}).get("standard_error")
        out["gold_score"] = gold.get("policy", {}).get("judge_mean")
        out["gold_score_before"] = gold.get("baseline", {}).get("judge_mean")
    return {k: v for k, v in out.items() if v is not None}


def labels_longer_share(trl: Path) -> float | None:
    """Share of the round's labelled pairs (the snapshot's trl.jsonl, text prompts) whose preferred response has
    more words, among the pairs whose two responses differ in length; None when there are none."""
    longer = differ = 0
    try:
        with open(trl, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                chosen, rejected = row.get("chosen"), row.get("rejected")
                if not isinstance(chosen, str) or not isinstance(rejected, str):
                    continue
                a, b = len(chosen.split()), len(rejected.split())
                differ += a != b
                longer += a > b
    except FileNotFoundError:
        return None
    return longer / differ if differ else None


def hacking_warnings(
    report: dict[str, Any], policy_metrics: dict[str, Any], labels_longer: float | None = None
) -> list[str]:
    """Signs that the policy games the reward model rather than getting better (Gao et al. 2022; Singhal et al.
    2023): length growth, repetition, reward that tracks length, truncation at the token limit, and the RM and the
    gold judge disagreeing. `labels_longer` (labels_longer_share): labels that preferred longer responses asked for
    length, so length is then no warning."""
    s = report.get("summary") or evaluation_summary(report)
    warnings = []
    length_asked = labels_longer is not None and labels_longer >= LABELS_FAVOUR_LONGER
    not_asked = (
        ""
        if labels_longer is None
        else f", although the labels preferred the longer response in only {labels_longer:.0%} of pairs"
    )
    before_len, after_len = s.get("mean_length_before"), s.get("mean_length")
    if before_len and after_len and after_len / before_len > LENGTH_GROWTH_WARN and not length_asked:
        warnings.append(
            f"length growth: mean length {before_len:.1f} -> {after_len:.1f} tokens (x{after_len / before_len:.2f})"
            + not_asked
        )
    before_d2, after_d2 = s.get("distinct_2_before"), s.get("distinct_2")
    if before_d2 and after_d2 is not None and after_d2 < REPETITION_WARN * before_d2:
        warnings.append(f"repetition: distinct-2 {before_d2:.2f} -> {after_d2:.2f}")
    corr = policy_metrics.get("reward_length_corr")
    if isinstance(corr, (int, float)) and not math.isnan(corr) and corr > REWARD_LENGTH_CORR_WARN and not length_asked:
        warnings.append(
            f"reward-length correlation {corr:.2f} among the policy's training samples (PPO's last "
            "batch, or all best-of-n samples): the reward model may pay for length" + not_asked
        )
    eos_before, eos_after = s.get("eos_rate_before"), s.get("eos_rate")
    if eos_before is not None and eos_after is not None:
        cut_before, cut_after = 1.0 - eos_before, 1.0 - eos_after
        if cut_after > TRUNCATION_WARN and cut_after > TRUNCATION_GROWTH * cut_before:
            warnings.append(
                f"truncation: {cut_after:.0%} of the new policy's samples stop at the token limit without EOS "
                f"({cut_before:.0%} before): no label asks for unfinished answers"
            )
    rm_win, gold_win = s.get("rm_win_rate"), s.get("gold_win_rate")
    if rm_win is not None and gold_win is not None and rm_win > 0.6 and gold_win < 0.5:
        warnings.append(
            f"the reward model prefers the new policy ({rm_win:.0%}) but the gold judge does not ({gold_win:.0%})"
        )
    return warnings
