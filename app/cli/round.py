"""`rlhf round start|list|promote|verdict|schedule`: start a training round (a `round` job for the worker), list
the rounds, promote a round the promotion gate held back, queue a round's human verdict, set the round schedule."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from app.cli.errors import fail
from app.cli.session import cli_session
from app.services.ai_calibration import DEFAULT_CALIBRATION_TASKS
from app.services.rounds.config import MIN_PREFERENCE_PAIRS
from domain.vocabulary import FINISHED_JOB_STATUSES

app = typer.Typer(no_args_is_help=True)


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set ppo.kl_coef=0.1 --set next_tasks.k=4 --set seed=3` -> nested dict (values parsed as JSON if they are)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set {item!r}: expected KEY=VALUE (e.g. ppo.kl_coef=0.1)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                fail(f"--set {item!r}: {part} is not a group of settings")
        node[leaf] = value
    return out


def _load_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}")
    if not isinstance(data, dict):
        fail(f"{path}:1: a round config must be a JSON object")
    return data


def wait_for(job_id: int, *, poll_s: float = 1.0) -> dict[str, Any]:
    """Block until the job ends, telling its progress on stderr when it changes; the job as a dict."""
    from app.db import get_read_sessionmaker
    from app.services.jobs import get_job, job_to_dict

    last = None
    while True:
        with get_read_sessionmaker()() as session:
            job = job_to_dict(get_job(session, job_id=job_id))
        p = job["progress"]
        seen = (job["status"], p["message"])
        if seen != last:
            print(f"job {job_id}: {job['status']} {p['message']}".rstrip(), file=sys.stderr, flush=True)
            last = seen
        if job["status"] in FINISHED_JOB_STATUSES:
            return job
        time.sleep(poll_s)


def wait_and_report(job_id: int, what: str) -> dict[str, Any]:
    """`--wait`: block until the job ends; its result on stderr, or its error and exit 1 unless it succeeded."""
    final = wait_for(job_id)
    if final["status"] != "succeeded":
        typer.echo(f"error: {what} {job_id} {final['status']}: {final['error'] or ''}".rstrip(), err=True)
        if final.get("error_summary"):  # after the tail, so the last line read is the one that says why
            where = f" in the {final['failed_stage']} stage" if final.get("failed_stage") else ""
            typer.echo(f"{what} {job_id} failed{where}: {final['error_summary']}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(final["result"]), err=True)
    return final["result"]


@app.command("start")
def start(
    algo: str | None = typer.Option(None, "--algo", help="ppo, dpo or rs (rejection sampling, the default)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every stage (default 0)."),
    source: str | None = typer.Option(None, "--source", help="Annotations to train on: human, ai or all (default)."),
    since: str | None = typer.Option(None, "--since", help="Only annotations made at or after this ISO time."),
    min_agreement: float | None = typer.Option(None, "--min-agreement", help="Only tasks agreed at least this much."),
    labels: str | None = typer.Option(
        None, "--labels", help="raw (default) or adjudicated: reviewers' final labels in place of the raw ones."
    ),
    min_pairs: int | None = typer.Option(
        None, "--min-pairs", help=f"Refuse with fewer preference pairs (default {MIN_PREFERENCE_PAIRS})."
    ),
    snapshot_from: int | None = typer.Option(None, "--snapshot-from", help="Rerun on this round's snapshot."),
    gold_judge: str | None = typer.Option(
        None, "--gold-judge", help="module:function judge for the report, e.g. trainer.world.judge:score."
    ),
    config: Path | None = typer.Option(None, "--config", help="A round config JSON (the job config of a round)."),
    sets: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE, repeatable: ppo.kl_coef=0.1, reward.epochs=2, next_tasks.k=4, eval_prompts=32 ..."
    ),
    allow_untrusted_ai: bool = typer.Option(
        False,
        "--allow-untrusted-ai",
        help="Train on AI labels whose judge agreed with people less than RLHF_AI_MIN_AGREEMENT (or was never "
        "calibrated); kept in the round config.",
    ),
    wait: bool = typer.Option(False, "--wait", help="Block until the round ends; exit 1 if it failed."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON instead of its id."),
) -> None:
    """Start a training round now: snapshot -> reward model -> PPO/DPO/RS -> evaluate -> register -> next tasks.

    Prints the job id. Refuses (exit 2) with too little data, no current policy, a round already active, or AI
    labels whose judge is not trusted (`rlhf label-ai` calibrates it)."""
    from app.services.jobs import job_to_dict
    from app.services.rounds import start_round
    from app.services.rounds.config import merge_config

    raw = _load_config_file(config) if config is not None else {}
    options = {
        "algo": algo,
        "seed": seed,
        "source": source,
        "since": since,
        "min_agreement": min_agreement,
        "min_pairs": min_pairs,
        "labels": labels,
        "snapshot_from": snapshot_from,
        "gold_judge": gold_judge,
        "allow_untrusted_ai_labels": allow_untrusted_ai or None,
    }
    raw = merge_config(raw, {k: v for k, v in options.items() if v is not None})
    raw = merge_config(raw, parse_set(sets))
    with cli_session() as db:
        job = start_round(db, config=raw)  # a refusal (RoundError) is cli_session's one-line exit 2
        db.commit()
        data = {**job_to_dict(job), "number": job.round_number}
    typer.echo(json.dumps(data) if as_json else str(data["id"]))
    typer.echo(f"round {data['number']} queued as job {data['id']}", err=True)
    if wait:
        wait_and_report(data["id"], "round")


def _promotion_word(row: dict[str, Any]) -> str:
    promotion = row.get("promotion")
    if promotion is None:
        return ""
    if promotion.get("promoted"):
        return "promoted by hand" if promotion.get("by_hand") else "promoted"
    return "held back: " + "; ".join(promotion.get("reasons") or [])


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the rounds as JSON.")) -> None:
    """The rounds, newest first: number, job id, status, algorithm, and whether the new policy was promoted."""
    from app.services.rounds import list_rounds, round_to_dict

    with cli_session() as db:
        rows = [round_to_dict(job) for job in list_rounds(db)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        number = row["number"] if row["number"] is not None else "-"
        typer.echo(f"round {number}\tjob {row['id']}\t{row['status']}\t{row['algo']}\t{_promotion_word(row)}".rstrip())


@app.command("promote")
def promote(round_id: int = typer.Argument(..., help="The round's job id (as `rlhf round list` shows it).")) -> None:
    """Make a round's new policy and reward model current by hand, when the promotion gate held them back (the
    reasons are on the round's page and in `rlhf round list`)."""
    from app.services.rounds import promote_round

    with cli_session() as db:
        job = promote_round(db, round_id)  # a refusal is cli_session's one-line exit 2
        db.commit()
        number, policy_id = job.round_number, job.result["policy_id"]
    typer.echo(f"round {number}: policy {policy_id} is current")


@app.command("verdict")
def verdict(
    round_id: int = typer.Argument(..., help="The round's job id (as `rlhf round list` shows it)."),
    count: int | None = typer.Option(
        None, "--count", min=1, help="Eval prompts to judge (default: the round's verdict_tasks, or 32)."
    ),
) -> None:
    """Queue a round's human verdict: blind pairwise tasks of its new policy and the one it was evaluated against,
    on the same eval prompts (a `generate` job for the worker). Prints the job id."""
    from app.services.verdict import request_verdict

    with cli_session() as db:
        job = request_verdict(db, round_id, count=count)  # a refusal is cli_session's one-line exit 2
        db.commit()
        job_id, prompts = job.id, job.config["count"]
    typer.echo(job_id)
    typer.echo(f"verdict of round job {round_id}: {prompts} eval prompts queued as job {job_id}", err=True)


@app.command("schedule")
def schedule(
    enable: bool | None = typer.Option(None, "--enable/--disable", help="Turn the schedule on or off."),
    min_new_annotations: int | None = typer.Option(
        None,
        "--min-new-annotations",
        min=0,
        help="Start a round after this many new human annotations (0 = no such trigger).",
    ),
    every_minutes: float | None = typer.Option(
        None, "--every-minutes", min=0.0, help="Start a round every T minutes (0 = no such trigger)."
    ),
    config: Path | None = typer.Option(None, "--config", help="The round config JSON the schedule starts with."),
    sets: list[str] = typer.Option([], "--set", help="KEY=VALUE of the round config, as for `round start`."),
    as_json: bool = typer.Option(False, "--json", help="Print the schedule as JSON."),
) -> None:
    """Show or change the round schedule (the worker starts rounds from it). With no option: show it."""
    from app.services.rounds.config import merge_config
    from app.services.schedule import ScheduleError, get_schedule, schedule_to_dict, update_schedule

    round_config = None
    if config is not None or sets:
        round_config = merge_config(_load_config_file(config) if config is not None else {}, parse_set(sets))
    with cli_session() as db:
        try:
            if enable is None and min_new_annotations is None and every_minutes is None and round_config is None:
                row = get_schedule(db)
            else:
                row = update_schedule(
                    db,
                    enabled=enable,
                    min_new_annotations=min_new_annotations,
                    every_minutes=every_minutes,
                    config=round_config,
                )
                db.commit()
        except ScheduleError as exc:
            fail(str(exc))
        data = schedule_to_dict(row)
    if as_json:
        typer.echo(json.dumps(data))
        return
    triggers = []
    if data["min_new_annotations"]:
        triggers.append(f"after {data['min_new_annotations']} new human annotations")
    if data["every_minutes"]:
        triggers.append(f"every {data['every_minutes']:g} minutes")
    state = "enabled" if data["enabled"] else "disabled"
    typer.echo(f"schedule {state}: {' or '.join(triggers) or 'no trigger set'}")


def register_label_ai(root: typer.Typer) -> None:
    root.command("label-ai")(label_ai)


def label_ai(
    judge: str = typer.Option(
        "reward_model",
        "--judge",
        help="reward_model (score each response) or lm (a causal LM prompted to choose, by the logprob of A/B/...).",
    ),
    model_id: int | None = typer.Option(
        None, "--model-id", help="Registry model (default: the current reward model / policy)."
    ),
    path: str | None = typer.Option(None, "--path", help="Or any local model directory."),
    limit: int = typer.Option(1000, "--limit", min=1, help="At most this many pending tasks."),
    annotator: str | None = typer.Option(None, "--annotator", help="The AI annotator's username."),
    calibration: int = typer.Option(
        DEFAULT_CALIBRATION_TASKS,
        "--calibration",
        min=0,
        help="First score this many tasks people have labelled (not stored) and record the judge's agreement with "
        "them per kind; 0 = none. Rounds refuse AI labels of an uncalibrated or untrusted judge.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration's sample."),
    wait: bool = typer.Option(
        False, "--wait", help="Block until the job ends and print the calibration; exit 1 if it failed."
    ),
) -> None:
    """Calibrate an AI judge on human-labelled tasks, then label pending tasks with it (source `ai`, its own
    annotator identity; never counts toward overlap). Prints the job id; with --wait, the judge's agreement."""
    from app.services.ai_feedback import start_label_ai

    config = {
        "judge": judge,
        "model_id": model_id,
        "path": path or "",
        "limit": limit,
        "annotator": annotator or "",
        "calibration": calibration,
        "seed": seed,
    }
    with cli_session() as db:
        job = start_label_ai(db, config=config)  # a refusal (LabelAIError) is cli_session's one-line exit 2
        db.commit()
        job_id = job.id
    typer.echo(str(job_id))
    if wait:
        result = wait_and_report(job_id, "label-ai job")
        for line in calibration_lines(result):
            typer.echo(line)


def calibration_lines(result: dict[str, Any]) -> list[str]:
    """The label-ai job's calibration in words: one line per task kind, with its interval or why it is unknown."""
    from app.services.ai_calibration import KindAgreement, format_rate

    calibration = result.get("calibration")
    if calibration is None:
        return ["calibration: none (--calibration 0)"]
    lines = [
        f"calibration of {result['annotator']} on {calibration['tasks']} human-labelled task(s), "
        f"seed {calibration['seed']}:"
    ]
    for kind in calibration["kinds"]:
        agreement = KindAgreement(kind["kind"], kind["n"], kind["agreed"])
        lines.append(f"  {kind['kind']:<9} {format_rate(agreement)}")
    return lines
