"""Config dataclasses shared by every stage, and loading them from JSON plus CLI overrides.

A stage config is a `@dataclass(kw_only=True)` whose fields are exactly its CLI flags
(`reward_model` -> `--reward-model`). `--config FILE.json` loads the same fields; flags given explicitly
override the file. The same dict is saved as `trainer_config.json` with every output, so a saved
`trainer_config.json` is itself a valid `--config` file (its "stage" key is ignored).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class UsageError(Exception):
    """Bad flags, bad config file or an existing output: the CLI prints it and exits 2."""


@dataclass(kw_only=True)
class TrainConfig:
    """Common flags of every training stage."""

    seed: int = field(default=0, metadata={"help": "Random seed (python, numpy, torch)."})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda.", "choices": ["auto", "cpu", "cuda"]})
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto|fp32|bf16. fp32: fp32 weights, gradients and AdamW state. bf16: the weights themselves "
            "in bf16 on any device (half the memory; CPU works, slowly), and so the gradients and the AdamW state, "
            "which follow their parameter's dtype. auto: bf16 autocast over fp32 weights and fp32 AdamW state on a "
            "GPU that supports it, fp32 on CPU.",
            "choices": ["auto", "fp32", "bf16"],
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Keep one hidden state per layer in the forward and recompute the rest in the backward: "
            "activation memory drops about tenfold for about a third more compute."
        },
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training data."})
    max_steps: int = field(
        default=0,
        metadata={"help": "Optimizer steps to run; replaces --epochs when set (as in transformers' Trainer)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer step."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate."})


C = TypeVar("C")

# A field with no default is required; dataclasses marks that with MISSING on both default and factory.
_MISSING = dataclasses.MISSING


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type of every field (configs use `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional) for `X | None`; list types come back as `list[str]` etc."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def is_required(f: dataclasses.Field) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


NUMBER_KINDS = {int: "an integer", float: "a number"}  # how a bad value's message names the type


def _coerce(name: str, value: Any, tp: Any) -> Any:
    inner, optional = base_type(tp)
    if value is None:
        if optional:
            return None
        raise UsageError(f"--{flag_name(name)} must not be null")
    origin = typing.get_origin(inner)
    if origin is list:
        (item_tp,) = typing.get_args(inner) or (str,)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"--{flag_name(name)} expects a list, got {value!r}")
        return [_coerce(name, v, item_tp) for v in value]
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(f"--{flag_name(name)} expects true/false, got {value!r}")
    if inner in NUMBER_KINDS:
        refused = UsageError(f"--{flag_name(name)} expects {NUMBER_KINDS[inner]}, got {value!r}")
        # a bool is an int to Python, not a number to a user; 2.5 is no integer
        if isinstance(value, bool) or (inner is int and isinstance(value, float) and not value.is_integer()):
            raise refused
        try:
            return inner(value)
        except (TypeError, ValueError):
            raise refused from None
    if inner is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise UsageError(f"--{flag_name(name)} expects a string, got {value!r}")
        return value
    return value


def flag_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def load_config(cls: type[C], json_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build `cls` from an optional JSON file, then `overrides` (explicit flags) on top.

    Unknown keys, wrong types, values outside a field's `choices` and missing required fields raise
    UsageError with a one-line reason.
    """
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if json_path is not None:
        path = Path(json_path)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"{path}: cannot read config: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}:1: config must be a JSON object")
        loaded.pop("stage", None)  # trainer_config.json records its stage; not a field
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise UsageError(f"{path}: unknown config field(s): {', '.join(unknown)}")
        values.update(loaded)
    for key, value in (overrides or {}).items():
        if key not in names:
            raise UsageError(f"unknown option --{flag_name(key)}")
        values[key] = value
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _coerce(f.name, values[f.name], hints[f.name])
            choices = f.metadata.get("choices")
            if choices is not None and kwargs[f.name] not in choices:
                raise UsageError(
                    f"--{flag_name(f.name)} must be one of {'|'.join(map(str, choices))}, got {kwargs[f.name]!r}"
                )
        elif is_required(f):
            raise UsageError(f"missing required option --{flag_name(f.name)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-serialisable dict of a config's fields."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out
