"""The start form of a round: the algorithm first, then only its settings, each with the value the round runs
with (read from the same config objects the round reads: `RoundConfig`, the round's stage defaults on top of the
trainer's) and why it is there (the field's description); the few that matter most shown, the rest folded away.
And the form's fields read back into a round config."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.models import Job
from app.services.rounds.config import (
    ALGO_STAGES,
    RESERVED_FLAGS,
    NextTasks,
    RoundConfig,
    RoundError,
    merge_config,
    stage_defaults,
    trainer_config_class,
)
from app.services.rounds.start import start_round
from domain.vocabulary import ROUND_ALGOS, one_of

ALGO_TITLES = {
    "ppo": "PPO: the reward model scores the policy's samples, KL-penalised RL on the scores",
    "dpo": "DPO: trains on the preference pairs directly (no sampling while training)",
    "rs": "Rejection sampling: the reward model's best of N samples per prompt, then SFT on them",
}
# The round's own settings: (field, label), the first few shown, the rest folded under "advanced".
ROUND_FIELDS = [
    ("source", "Annotations"),
    ("min_pairs", "Minimum preference pairs"),
    ("promote_margin_se", "Promotion margin (standard errors)"),
    ("seed", "Seed"),
    ("since", "Since (ISO time)"),
    ("min_agreement", "Minimum agreement"),
    ("annotator_weighting", "Annotator weighting"),
    ("labels", "Labels (raw, or reviewers' final labels)"),
    ("rm_eval_fraction", "Held out from the reward model"),
    ("policy_init", "Policy starts from"),
    ("reference", "Reference (KL)"),
    ("reward_init", "Reward model starts from"),
    ("reward_likelihood", "Reward adds the SFT model's log-likelihood"),
    ("use_rewrites", "Rewrites as preferences"),
    ("allow_untrusted_ai_labels", "Use AI labels below the trusted agreement"),
    ("lora_r", "LoRA rank (0 = train every weight)"),
    ("train_processes", "Training processes per stage (empty: the deployment's)"),
    ("eval_prompts", "Eval prompts"),
    ("eval_samples", "Samples per eval prompt"),
    ("kl_floor", "KL floor (changed almost nothing below it)"),
    ("gold_judge", "Gold judge (module:function)"),
    ("verdict_tasks", "Human verdict tasks (blind, new vs previous)"),
    ("flagged_tasks", "Flagged samples to people first (0 = none)"),
]
ROUND_SHOWN = 3
# Per trainer stage: the flags shown unfolded; every other flag of the stage (but those the round sets itself) is
# under "advanced". A name the trainer does not have is skipped.
STAGE_SHOWN = {
    "reward": ["epochs", "lr"],
    "ppo": ["epochs", "max_steps", "lr", "kl_coef"],
    "dpo": ["epochs", "lr", "beta"],
    "rs": ["num_samples"],
    "sft": ["epochs", "lr"],
}
STAGE_TITLES = {
    "reward": "Reward model",
    "ppo": "PPO",
    "dpo": "DPO",
    "rs": "Rejection sampling: best of N",
    "sft": "Rejection sampling: SFT on the best",
}
NEXT_TASK_FIELDS = [
    "prompts",
    "k",
    "kind",
    "select",
    "oversample",
    "random_share",
    "overlap",
    "temperature",
    "top_k",
    "top_p",
    "max_new_tokens",
]
NEXT_TASKS_SHOWN = 3
# Read as text, never as JSON ("2024-01-01" stays a string).
TEXT_FIELDS = ("since", "gold_judge")


def choose_algo(algo: str | None) -> str:
    """The algorithm the form is for: the one asked for, else the round's default."""
    if not algo:
        return RoundConfig().algo
    problem = one_of("algo", algo, ROUND_ALGOS)
    if problem:
        raise RoundError(problem)
    return algo


def _choices(annotation: Any, default: Any, listed: Any = None) -> list[str] | None:
    """A select's options: a Literal's values or a trainer flag's choices, or true/false for a flag."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if listed:
        return [str(c) for c in listed]
    if isinstance(default, bool):
        return ["true", "false"]
    return None


def _model_fields(model: BaseModel, names: list[tuple[str, str]], shown: int, prefix: str = "") -> list[dict]:
    info = type(model).model_fields
    return [
        {
            "name": f"{prefix}{name}",
            "label": label,
            "default": getattr(model, name),
            "choices": _choices(info[name].annotation, getattr(model, name)),
            "why": info[name].description or "",
            "advanced": i >= shown,
        }
        for i, (name, label) in enumerate(names)
    ]


def _stage_fields(stage: str, size: dict[str, int] | None = None) -> list[dict]:
    """Every flag a round may set for this stage, with the value the round runs it with and the trainer's help;
    with the data's size, the lengths a round started now would be sized to, and why."""
    defaults = stage_defaults(stage)
    sized = RoundConfig().sized_flags(stage, **size) if size else {}
    try:
        flags = [(f.name, f.metadata) for f in dataclasses.fields(trainer_config_class(stage))]
    except ModuleNotFoundError:  # a service installed without the trainer: the round's own defaults only
        flags = [(name, {}) for name in defaults]
    flags = [(name, meta) for name, meta in flags if name not in RESERVED_FLAGS[stage]]
    order = {name: i for i, name in enumerate(STAGE_SHOWN[stage])}
    flags.sort(key=lambda f: order.get(f[0], len(order)))  # the shown ones first, the rest in the trainer's order
    return [
        {
            "name": f"{stage}.{name}",
            "label": name,
            "default": defaults.get(name),
            "choices": _choices(None, defaults.get(name), meta.get("choices")),
            "why": meta.get("help", ""),
            "advanced": name not in order,
            "sized": sized[name].value if name in sized else None,
            "sized_why": sized[name].why if name in sized else "",
        }
        for name, meta in flags
    ]


def form_groups(algo: str, size: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The start form for one algorithm: groups of settings (round, reward model, the algorithm's stages, next
    tasks), each field with its default, why it is there, and whether it is folded under "advanced". `size`
    ({"prompts", "pairs"}: the data a round started now would take): the stage lengths sized from it."""
    round_fields = _model_fields(RoundConfig(), ROUND_FIELDS, ROUND_SHOWN)
    groups = [{"key": "round", "title": "Data, lineage and promotion", "fields": round_fields}]
    for stage in ("reward", *ALGO_STAGES[algo]):
        groups.append({"key": stage, "title": STAGE_TITLES[stage], "fields": _stage_fields(stage, size)})
    groups.append(
        {
            "key": "next_tasks",
            "title": "Next tasks from the new policy",
            "fields": _model_fields(
                NextTasks(), [(n, n) for n in NEXT_TASK_FIELDS], NEXT_TASKS_SHOWN, prefix="next_tasks."
            ),
        }
    )
    return groups


def form_fields(algo: str | None = None) -> list[dict[str, Any]]:
    """Every setting on the start form of this algorithm (the default one when None), in order."""
    return [f for group in form_groups(choose_algo(algo)) for f in group["fields"]]


def start_form(algo: str | None = None, size: dict[str, int] | None = None) -> dict[str, Any]:
    """What the Rounds page's start form shows: the algorithms, the chosen one, and its settings (sized from
    the data when its size is given)."""
    chosen = choose_algo(algo)
    return {
        "algos": [{"name": a, "title": ALGO_TITLES[a], "default": a == RoundConfig().algo} for a in ROUND_ALGOS],
        "algo": chosen,
        "groups": form_groups(chosen, size),
        "size": size,
    }


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_form(form: dict[str, str]) -> dict[str, Any]:
    """Form fields ("ppo.kl_coef" = "0.1") -> a round config dict, for the algorithm chosen: only its settings are
    read. Empty fields keep their defaults; fields equal to their default are left out, so the job's config records
    what was chosen on purpose."""
    algo = choose_algo(form.get("algo"))
    defaults = {f["name"]: f["default"] for f in form_fields(algo)}
    config: dict[str, Any] = {"algo": algo}
    for name, default in defaults.items():
        raw = (form.get(name) or "").strip()
        if not raw:
            continue
        value = raw if name in TEXT_FIELDS or isinstance(default, str) else _value(raw)
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
        config = merge_config(config, more)
    return config


def start_round_from_form(session: Session, form: dict[str, str], *, created_by_id: int | None = None) -> Job:
    """Start a round with the start form's settings (RoundError says what is wrong)."""
    return start_round(session, config=config_from_form(form), created_by_id=created_by_id)
