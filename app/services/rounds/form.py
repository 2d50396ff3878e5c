"""The start form of a round: every setting with the default it runs with (the round's, else the trainer's), and
the form's fields read back into a round config."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.models import Job
from app.services.rounds.config import NextTasks, RoundConfig, RoundError, merge_config, stage_defaults
from app.services.rounds.start import start_round

# The form's settings: (field, label). Stage flags are "stage.flag".
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
# Read as text, never as JSON ("2024-01-01" stays a string).
TEXT_FIELDS = ("since", "gold_judge")


def _choices(annotation: Any, default: Any) -> list[str] | None:
    """A select's options: a Literal's values, or true/false for a flag."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if isinstance(default, bool):
        return ["true", "false"]
    return None


def _model_fields(model: BaseModel, group: str, names: list[tuple[str, str]], prefix: str = "") -> list[dict]:
    return [
        {
            "group": group,
            "name": f"{prefix}{name}",
            "label": label,
            "default": getattr(model, name),
            "choices": _choices(type(model).model_fields[name].annotation, getattr(model, name)),
        }
        for name, label in names
    ]


def form_fields() -> list[dict[str, Any]]:
    """Every setting on the start form with its default, grouped."""
    fields = _model_fields(RoundConfig(), "round", ROUND_FIELDS)
    for stage, names in STAGE_FIELDS.items():
        defaults = stage_defaults(stage)
        fields += [
            {
                "group": stage,
                "name": f"{stage}.{n}",
                "label": n,
                "default": defaults.get(n),
                "choices": _choices(None, defaults.get(n)),
            }
            for n in names
        ]
    fields += _model_fields(NextTasks(), "next_tasks", [(n, n) for n in NEXT_TASK_FIELDS], prefix="next_tasks.")
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
    config: dict[str, Any] = {"algo": form.get("algo") or RoundConfig().algo}
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
