"""Rounds: the admin page (start a round with its settings, the schedule, the list of rounds), a round's report
(snapshot and its download, samples before/after, win-rates, KL, length, reward-hacking warnings) and the API
(`POST /api/v1/rounds`, `GET /api/v1/rounds`, `GET|PUT /api/v1/rounds/schedule`)."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import PageAdmin, SessionDep, SettingsDep, verify_csrf
from app.models import Job, ModelVersion
from app.services.ai_feedback import LabelAIError, start_label_ai
from app.services.rounds import (
    ROUND_KIND,
    STAGE_CONFIG_CLASSES,
    STAGE_DEFAULTS,
    NextTasks,
    RoundConfig,
    RoundError,
    current_policy,
    list_rounds,
    round_summary,
    start_round,
)
from app.services.schedule import ScheduleError, get_schedule, schedule_to_dict, update_schedule
from app.services.snapshots import (
    MANIFEST,
    SnapshotError,
    read_manifest,
    round_dir,
    snapshot_archive,
    snapshot_dir,
)
from app.templating import render
from domain.vocabulary import FINISHED_JOB_STATUSES

router = APIRouter(dependencies=[Depends(verify_csrf)], include_in_schema=False)

# The form's settings: (field, label). Stage flags are "stage.flag"; their defaults come from the round's
# STAGE_DEFAULTS, else from the trainer's config dataclass, so the page shows what will run.
ROUND_FIELDS = [
    ("seed", "Seed"),
    ("source", "Annotations"),
    ("since", "Since (ISO time)"),
    ("min_agreement", "Minimum agreement"),
    ("min_pairs", "Minimum preference pairs"),
    ("policy_init", "Policy starts from"),
    ("reference", "Reference (KL)"),
    ("reward_init", "Reward model starts from"),
    ("reward_likelihood", "Reward adds the SFT model's log-likelihood"),
    ("eval_prompts", "Eval prompts"),
    ("eval_samples", "Samples per eval prompt"),
    ("gold_judge", "Gold judge (module:function)"),
]
STAGE_FIELDS = {
    "reward": ["epochs", "lr", "batch_size", "max_steps", "center_coef"],
    "ppo": [
        "epochs",
        "max_steps",
        "lr",
        "batch_size",
        "ppo_epochs",
        "kl_coef",
        "adaptive_kl",
        "max_new_tokens",
        "temperature",
    ],
    "dpo": ["epochs", "max_steps", "lr", "batch_size", "beta"],
    "rs": ["num_samples", "temperature", "max_new_tokens"],
    "sft": ["epochs", "max_steps", "lr", "batch_size"],
}
NEXT_TASK_FIELDS = ["prompts", "k", "kind", "overlap", "temperature", "max_new_tokens"]
CHOICES = {
    "source": ["all", "human", "ai"],
    "policy_init": ["current", "sft"],
    "reference": ["sft", "current"],
    "reward_init": ["sft", "previous"],
    "reward_likelihood": ["true", "false"],
    "next_tasks.kind": ["pairwise", "ranking"],
}


def stage_defaults(stage: str) -> dict[str, Any]:
    module, name = STAGE_CONFIG_CLASSES[stage]
    try:
        cls = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError:
        return dict(STAGE_DEFAULTS[stage])
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**defaults, **STAGE_DEFAULTS[stage]}


def form_fields() -> list[dict[str, Any]]:
    """Every setting on the start form with its default, grouped."""
    base = RoundConfig()
    fields = [
        {"group": "round", "name": name, "label": label, "default": getattr(base, name), "choices": CHOICES.get(name)}
        for name, label in ROUND_FIELDS
    ]
    for stage, names in STAGE_FIELDS.items():
        defaults = stage_defaults(stage)
        fields += [
            {
                "group": stage,
                "name": f"{stage}.{n}",
                "label": n,
                "default": defaults.get(n),
                "choices": ["true", "false"] if isinstance(defaults.get(n), bool) else None,
            }
            for n in names
        ]
    nt = NextTasks()
    fields += [
        {
            "group": "next_tasks",
            "name": f"next_tasks.{n}",
            "label": n,
            "default": getattr(nt, n),
            "choices": CHOICES.get(f"next_tasks.{n}"),
        }
        for n in NEXT_TASK_FIELDS
    ]
    return fields


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_form(form: dict[str, str]) -> dict[str, Any]:
    """Form fields ("ppo.kl_coef" = "0.1") -> a round config dict. Empty fields keep their defaults; fields equal
    to their default are left out, so the job's config records what was chosen on purpose."""
    defaults = {f["name"]: f["default"] for f in form_fields()}
    config: dict[str, Any] = {"algo": form.get("algo") or "ppo"}
    for name, default in defaults.items():
        raw = (form.get(name) or "").strip()
        if not raw:
            continue
        value = raw if name in ("since", "gold_judge") or isinstance(default, str) else _value(raw)
        if value == default:
            continue
        node = config
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    extra = (form.get("extra") or "").strip()
    if extra:
        try:
            more = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise RoundError(f"advanced settings: not JSON: {exc.msg}") from None
        if not isinstance(more, dict):
            raise RoundError("advanced settings: a JSON object is expected")
        for key, value in more.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    return config


# ---- what a round's files say ------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def side_by_side(rdir: Path) -> list[dict[str, Any]]:
    """The report's samples: the same eval prompt answered by the policy before and after the round."""
    prompts = {
        str(p["prompt_id"]): p.get("prompt") or json.dumps(p.get("messages"))
        for p in _read_jsonl(rdir / "report_prompts.jsonl")
    }
    after = {str(s["prompt_id"]): s for s in _read_jsonl(rdir / "samples_after.jsonl")}
    rows = []
    for sample in _read_jsonl(rdir / "samples_before.jsonl"):
        pid = str(sample["prompt_id"])
        rows.append(
            {"prompt": prompts.get(pid, ""), "before": sample["text"], "after": after.get(pid, {}).get("text", "")}
        )
    return rows


def _round_or_404(db, round_id: int) -> Job:
    job = db.get(Job, round_id)
    if job is None or job.kind != ROUND_KIND:
        raise HTTPException(status_code=404, detail=f"no round {round_id}")
    return job


# ---- pages ------------------------------------------------------------------------------------------------------


def _rounds_page(request: Request, db, *, status_code: int = 200, **extra: Any) -> Response:
    jobs = list_rounds(db)
    schedule = get_schedule(db)
    db.commit()  # the schedule row is created on first use
    context = {
        "rounds": [round_summary(j) for j in jobs],
        "fields": form_fields(),
        "any_active": any(j.status not in FINISHED_JOB_STATUSES for j in jobs),
        "schedule": schedule_to_dict(schedule, db),
        "current": current_policy(db),
        "schedule_config": json.dumps(schedule.config or {}, indent=2),
        **extra,
    }
    return render(
        request, "rounds.html", context, block="round_table" if status_code == 200 else None, status_code=status_code
    )


@router.get("/admin/rounds")
def rounds_page(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    return _rounds_page(request, db)


@router.post("/admin/rounds")
async def start_round_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            job = start_round(db, config=config_from_form(form), created_by_id=admin.id)
            db.commit()
        except RoundError as exc:
            db.rollback()
            return _rounds_page(
                request,
                db,
                status_code=409 if "one round at a time" in str(exc) else 422,
                start_error=str(exc),
                form=form,
            )
        return RedirectResponse(f"/admin/rounds/{job.id}", status_code=303)

    return await run_in_threadpool(work)


@router.post("/admin/rounds/schedule")
async def schedule_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            config = json.loads(str(form.get("config") or "{}"))
            update_schedule(
                db,
                min_new_annotations=int(form.get("min_new_annotations") or 0),
                every_minutes=float(form.get("every_minutes") or 0),
                config=config,
                enabled=form.get("enabled") == "on",
            )
            db.commit()
        except (ScheduleError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            db.rollback()
            return _rounds_page(request, db, status_code=422, schedule_error=str(exc))
        return RedirectResponse("/admin/rounds", status_code=303)

    return await run_in_threadpool(work)


@router.post("/admin/rounds/label-ai")
async def label_ai_form(request: Request, admin: PageAdmin, db: SessionDep) -> Response:
    form = await request.form()
    config: dict[str, Any] = {
        "judge": str(form.get("judge") or "reward_model"),
        "limit": str(form.get("limit") or "1000"),
    }
    if form.get("model_id"):
        config["model_id"] = str(form.get("model_id"))

    def work() -> Response:  # off the loop: a write transaction may wait for the SQLite writer gate
        try:
            job = start_label_ai(db, config=config, created_by_id=admin.id)
            db.commit()
        except LabelAIError as exc:
            db.rollback()
            return _rounds_page(request, db, status_code=422, label_ai_error=str(exc))
        return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)

    return await run_in_threadpool(work)


@router.get("/admin/rounds/{round_id}")
def round_page(request: Request, round_id: int, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    job = _round_or_404(db, round_id)
    rdir = round_dir(settings.data_dir, job.id)
    manifest = None
    if (snapshot_dir(settings.data_dir, job.id) / MANIFEST).is_file():
        try:
            manifest = read_manifest(snapshot_dir(settings.data_dir, job.id))
        except SnapshotError:
            manifest = None
    result = job.result or {}
    models = {
        m.id: m
        for m in db.scalars(
            select(ModelVersion).where(
                ModelVersion.id.in_(
                    [
                        i
                        for i in (
                            result.get("policy_id"),
                            result.get("reward_model_id"),
                            result.get("parent_policy_id"),
                            result.get("reference_id"),
                        )
                        if i is not None
                    ]
                )
            )
        )
    }
    context = {
        "job": job,
        "summary": round_summary(job),
        "active": job.status not in FINISHED_JOB_STATUSES,
        "manifest": manifest,
        "evaluation": _read_json(rdir / "evaluation.json") or {},
        "samples": side_by_side(rdir),
        "result": result,
        "models": models,
        "config": json.dumps(job.config, indent=2, sort_keys=True),
    }
    return render(request, "round.html", context, block="live")


@router.get("/admin/rounds/{round_id}/snapshot.tar.gz")
def round_snapshot_download(round_id: int, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    _round_or_404(db, round_id)
    directory = snapshot_dir(settings.data_dir, round_id)
    if not (directory / MANIFEST).is_file():
        raise HTTPException(status_code=404, detail=f"round {round_id} has no complete snapshot yet")
    archive = snapshot_archive(directory)
    return FileResponse(archive, media_type="application/gzip", filename=f"round-{round_id}-snapshot.tar.gz")


@router.get("/admin/rounds/{round_id}/snapshot/{name}")
def round_snapshot_file(round_id: int, name: str, admin: PageAdmin, db: SessionDep, settings: SettingsDep) -> Response:
    _round_or_404(db, round_id)
    directory = snapshot_dir(settings.data_dir, round_id)
    try:
        listed = set(read_manifest(directory)["files"]) | {MANIFEST}
    except SnapshotError:
        listed = set()
    if name not in listed:  # only the manifest's own names: no path tricks
        raise HTTPException(status_code=404, detail=f"no file {name!r} in round {round_id}'s snapshot")
    media = "application/json" if name == MANIFEST else "application/x-ndjson"
    return FileResponse(directory / name, media_type=media, filename=name)
