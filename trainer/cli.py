"""`python -m trainer STAGE ...`: one typer command per stage, its flags built from the stage's config dataclass.

A stage module registers itself at import time with one call:

    register_stage(name="reward", config_cls=RewardConfig, entry=train_reward, help="...")

`entry(config, *, on_metrics=None)` does the work. What it returns is printed on stdout: a dict as one
JSON object (evaluate), a Path as its path (the output dir/file of other stages), nothing for None.
DataError / UsageError raised anywhere become `error: <one-line reason>` on stderr and exit status 2.

Flags of list fields take several values after one flag (`--input a.txt b.txt`) or the flag repeated.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import importlib
import inspect
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from trainer.config import UsageError, base_type, field_types, flag_name, is_required, load_config
from trainer.data import DataError

# Stage modules, imported in this order so `--help` lists the stages in pipeline order.
STAGE_MODULES = [
    "trainer.tokenizer",
    "trainer.pretrain",
    "trainer.sft",
    "trainer.reward_model",
    "trainer.ppo",
    "trainer.dpo",
    "trainer.generate",
    "trainer.evaluate",
    "trainer.best_of_n",
    "trainer.memory_plan",
]

app = typer.Typer(
    name="trainer",
    help="rlhf-studio trainer: tokenizer, pretrain, SFT, reward model, PPO, DPO, generation, evaluation, best-of-n, "
    "and the memory plan of a round.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclasses.dataclass
class Stage:
    name: str
    config_cls: type
    entry: Callable[..., Any]
    help: str


STAGES: dict[str, Stage] = {}


@app.callback()
def _root() -> None:
    """Keeps `trainer` a group of stage commands even while only one stage is registered."""


def _option_type(tp: Any) -> tuple[Any, bool]:
    """(typer annotation, is_list) for a config field type; every option defaults to None = 'not given'."""
    inner, _ = base_type(tp)
    import typing

    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner) or (str,)
        return list[item] | None, True
    return inner | None, False


def _default_text(f: dataclasses.Field) -> str:
    # parentheses, not brackets: rich would read "[default: 0]" as markup and drop it
    if is_required(f):
        return " (required)"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is None or default == []:
        return ""
    if isinstance(default, bool):
        return f" (default: {'true' if default else 'false'})"
    return f" (default: {default})"


def run_stage(stage: Stage, config_path: Path | None, overrides: dict[str, Any]) -> Any:
    """Load the config and run the entry point; user-facing errors exit 2 with one line on stderr."""
    try:
        cfg = load_config(stage.config_cls, config_path, overrides)
        result = stage.entry(cfg)
    except (DataError, UsageError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if isinstance(result, dict):
        typer.echo(json.dumps(result, indent=2))
    elif result is not None:
        typer.echo(str(result))
    return result


def _make_command(stage: Stage) -> Callable[..., None]:
    hints = field_types(stage.config_cls)
    params = []
    annotations: dict[str, Any] = {}
    for f in dataclasses.fields(stage.config_cls):
        tp, _ = _option_type(hints[f.name])
        inner, _ = base_type(hints[f.name])
        decl = f"--{flag_name(f.name)}"
        if inner is bool:
            decl = f"--{flag_name(f.name)}/--no-{flag_name(f.name)}"
        help_text = f.metadata.get("help", "") + _default_text(f)
        tp_is_list = _option_type(hints[f.name])[1]
        metavar = f.metadata.get("metavar") or ("VALUE..." if tp_is_list else None)
        option = typer.Option(None, decl, help=help_text, show_default=False, metavar=metavar)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
        annotations[f.name] = tp
    params.append(
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Path | None,
            default=typer.Option(
                None, "--config", help="JSON file with the same fields; flags override it.", show_default=False
            ),
        )
    )
    annotations["config"] = Path | None

    def command(**kwargs: Any) -> None:
        config_path = kwargs.pop("config", None)
        run_stage(stage, config_path, {k: v for k, v in kwargs.items() if v is not None})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__name__ = stage.name
    command.__doc__ = stage.help
    return command


def register_stage(*, name: str, config_cls: type, entry: Callable[..., Any], help: str) -> None:
    """Add `python -m trainer NAME` with one flag per field of `config_cls`."""
    if name in STAGES:
        return  # module imported twice (e.g. as __main__ and by name)
    stage = Stage(name=name, config_cls=config_cls, entry=entry, help=help)
    STAGES[name] = stage
    app.command(name=name, help=help)(_make_command(stage))


def load_stages() -> None:
    for mod in STAGE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            # Only a stage module that does not exist yet is skipped; a broken import inside it is an error.
            if e.name != mod:
                raise


def _list_flags(stage_name: str) -> set[str]:
    stage = STAGES.get(stage_name)
    if stage is None:
        return set()
    hints = field_types(stage.config_cls)
    return {f"--{flag_name(f.name)}" for f in dataclasses.fields(stage.config_cls) if _option_type(hints[f.name])[1]}


def expand_list_flags(argv: list[str]) -> list[str]:
    """`--input a b --out x` -> `--input a --input b --out x` for list-valued flags of the chosen stage."""
    if not argv:
        return argv
    list_flags = _list_flags(argv[0])
    out: list[str] = [argv[0]]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in list_flags:
            i += 1
            values = []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                out.append(arg)  # let click report the missing value
            for v in values:
                out.extend([arg, v])
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: list[str] | None = None) -> None:
    # `kill -USR1 PID` prints every thread's Python stack on stderr: how to see where a run (or one DDP rank) waits
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    load_stages()
    args = expand_list_flags(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="python -m trainer")
