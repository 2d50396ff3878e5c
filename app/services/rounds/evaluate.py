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
from app.services.rounds.flagged import flag_train_samples
from app.services.rounds.lineage import Lineage
from app.services.rounds.trainer_steps import comparison_args, generate_samples, remove_leftovers

# Reward-hacking warnings: thresholds on the evaluation's figures.
LENGTH_GROWTH_WARN = 1.5  # mean length after / before
REPETITION_WARN = 0.5  # distinct-2 after below this share of before's
REWARD_LENGTH_CORR_WARN = 0.7  # correlation of RM score and length among the new samples
TRUNCATION_WARN = 0.2  # share of the new policy's eval samples cut at the token limit (no EOS)...
TRUNCATION_GROWTH = 1.5  # ...and this many times the old policy's share
# Length the labels asked for: the share of labelled pairs (of different lengths) whose preferred response is the
# longer; from this share up, a policy growing longer follows its labels and is not warned about.
LABELS_FAVOUR_LONGER = 0.6
# Each check's per-sample flag (domain FLAG_REASONS): a failed check turns the samples it points at into tasks.
CHECK_FLAGS = {
    "length growth": "length_growth",
    "repetition": "repetition",
    "reward-length correlation": "reward_length",
    "truncation": "truncation",
    "reward model vs gold judge": "rm_vs_judge",
}


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
        *comparison_args(cfg, rdir, baseline=before.path, prompts=prompts),
        "--num-samples",
        str(cfg.eval_samples),
    ]
    report: dict[str, Any] = {"prompts": _count_jsonl(prompts), "policy_id_before": before.id}
    # KL to the policy the round started from too: how much the round changed it (the KL floor)
    moved = ["--ref", lineage.reference.path, "--tuned-from", lineage.start.path]
    judges = {"rm": (f"rm:{rdir / 'reward'}", moved)}
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
    report["checks"] = hacking_checks(report, policy_metrics, report["labels_longer_share"])
    report["warnings"] = [c["warning"] for c in report["checks"] if not c["passed"]]
    # the train-prompt samples the failed checks point at, for people first (app.services.rounds.flagged)
    failed = {c["flag"] for c in report["checks"] if not c["passed"]}
    report["flagged"] = flag_train_samples(ctx, cfg, rdir, before.path, failed)
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
    # k3: never negative, so a round that did nothing reads near 0, not below it (k1 is noisy around 0)
    out["kl_to_start"] = after.get("kl_to_tuned_from_k3")
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


def hacking_checks(
    report: dict[str, Any], policy_metrics: dict[str, Any], labels_longer: float | None = None
) -> list[dict[str, Any]]:
    """The reward-hacking checks, each passed or failed with its figures (Gao et al. 2022; Singhal et al. 2023):
    length growth, repetition, reward that tracks length, truncation at the token limit, the RM and the gold judge
    disagreeing. A check whose figures the round lacks (no gold judge, no training-sample correlation) is left out.
    A failed one carries the round's warning text. `labels_longer` (labels_longer_share): labels that preferred
    longer responses asked for length, so length then passes."""
    s = report.get("summary") or evaluation_summary(report)
    checks: list[dict[str, Any]] = []
    length_asked = labels_longer is not None and labels_longer >= LABELS_FAVOUR_LONGER
    not_asked = (
        ""
        if labels_longer is None
        else f", although the labels preferred the longer response in only {labels_longer:.0%} of pairs"
    )
    asked = f"; the labels preferred the longer response in {labels_longer:.0%} of pairs" if length_asked else ""

    def check(name: str, passed: bool, detail: str, warning: str) -> None:
        checks.append(
            {
                "name": name,
                "passed": passed,
                "detail": detail,
                "warning": None if passed else warning,
                "flag": CHECK_FLAGS[name],  # the samples it points at (app.services.rounds.flagged)
            }
        )

    before_len, after_len = s.get("mean_length_before"), s.get("mean_length")
    if before_len and after_len:
        ratio = after_len / before_len
        figures = f"mean length {before_len:.1f} -> {after_len:.1f} tokens (x{ratio:.2f})"
        passed = ratio <= LENGTH_GROWTH_WARN or length_asked
        check(
            "length growth",
            passed,
            f"{figures}; at most x{LENGTH_GROWTH_WARN}{asked}",
            f"length growth: {figures}{not_asked}",
        )
    before_d2, after_d2 = s.get("distinct_2_before"), s.get("distinct_2")
    if before_d2 and after_d2 is not None:
        figures = f"distinct-2 {before_d2:.2f} -> {after_d2:.2f}"
        passed = after_d2 >= REPETITION_WARN * before_d2
        check("repetition", passed, f"{figures}; at least {REPETITION_WARN:.0%} of before's", f"repetition: {figures}")
    corr = policy_metrics.get("reward_length_corr")
    if isinstance(corr, (int, float)) and not math.isnan(corr):
        check(
            "reward-length correlation",
            corr <= REWARD_LENGTH_CORR_WARN or length_asked,
            f"{corr:.2f} among the policy's training samples; at most {REWARD_LENGTH_CORR_WARN}{asked}",
            f"reward-length correlation {corr:.2f} among the policy's training samples (PPO's last batch, or all "
            "best-of-n samples): the reward model may pay for length" + not_asked,
        )
    eos_before, eos_after = s.get("eos_rate_before"), s.get("eos_rate")
    if eos_before is not None and eos_after is not None:
        cut_before, cut_after = 1.0 - eos_before, 1.0 - eos_after
        figures = (
            f"{cut_after:.0%} of the new policy's samples stop at the token limit without EOS ({cut_before:.0%} before)"
        )
        check(
            "truncation",
            not (cut_after > TRUNCATION_WARN and cut_after > TRUNCATION_GROWTH * cut_before),
            f"{figures}; at most {TRUNCATION_WARN:.0%}, or x{TRUNCATION_GROWTH} of before's",
            f"truncation: {figures}: no label asks for unfinished answers",
        )
    rm_win, gold_win = s.get("rm_win_rate"), s.get("gold_win_rate")
    if rm_win is not None and gold_win is not None:
        check(
            "reward model vs gold judge",
            not (rm_win > 0.6 and gold_win < 0.5),
            f"win-rate {rm_win:.0%} under the reward model, {gold_win:.0%} under the gold judge",
            f"the reward model prefers the new policy ({rm_win:.0%}) but the gold judge does not ({gold_win:.0%})",
        )
    return checks


def hacking_warnings(
    report: dict[str, Any], policy_metrics: dict[str, Any], labels_longer: float | None = None
) -> list[str]:
    """The failed reward-hacking checks as the round's warnings ("length growth: ...")."""
    return [c["warning"] for c in hacking_checks(report, policy_metrics, labels_longer) if not c["passed"]]
