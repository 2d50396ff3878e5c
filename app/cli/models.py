"""`rlhf models register|list|promote|rollback|merge`: bring your own Hugging Face model directory."""

import json
from pathlib import Path

import typer

from app.cli.errors import fail
from app.cli.session import cli_session
from app.services.models_registry import (
    list_models,
    merge_adapter,
    model_to_dict,
    promote,
    register_model,
    rollback,
)
from domain.vocabulary import MODEL_KINDS, REGISTERED_STAGES, one_of

app = typer.Typer(no_args_is_help=True)


@app.command("register")
def register(
    path: Path = typer.Option(..., "--path", help="A save_pretrained directory (model and tokenizer)."),
    name: str = typer.Option(..., "--name", help="A name to recognise it by."),
    kind: str = typer.Option(
        ..., "--kind", help="policy (AutoModelForCausalLM) or reward (AutoModelForSequenceClassification)."
    ),
    stage: str = typer.Option("pretrained", "--stage", help=", ".join(REGISTERED_STAGES) + "."),
    parent: int = typer.Option(None, "--parent", help="The model id it was trained from."),
) -> None:
    """Register a local model directory after checking that it loads (exit 2 with the reason otherwise)."""
    problem = one_of("--kind", kind, MODEL_KINDS) or one_of("--stage", stage, REGISTERED_STAGES)
    if problem:
        fail(problem)
    with cli_session() as db:
        model = register_model(db, path=path, name=name, kind=kind, stage=stage, parent_id=parent)
        line = model_to_dict(model)
    typer.echo(f"registered {kind} model {line['id']} {name}{' (current)' if line['current'] else ''}", err=True)
    typer.echo(json.dumps(line))


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON array."),
    kind: str = typer.Option(None, "--kind", help="Only policy or reward models."),
) -> None:
    """List registered models."""
    with cli_session() as db:
        rows = [model_to_dict(m) for m in list_models(db, kind=kind)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['id']:>4} {'*' if r['current'] else ' '} {r['kind']:<7} {r['stage']:<10} {r['name']:<24} {r['path']}"
        )


@app.command("promote")
def promote_(model_id: int = typer.Argument(..., help="The model to make current.")) -> None:
    """Make a model the current one of its kind."""
    with cli_session() as db:
        model = promote(db, model_id=model_id)
        typer.echo(f"{model.kind} model {model.id} {model.name} is current", err=True)


@app.command("rollback")
def rollback_(kind: str = typer.Option("policy", "--kind", help="policy or reward.")) -> None:
    """Make the current model's parent (or the previous model) current again."""
    with cli_session() as db:
        model = rollback(db, kind=kind)
        typer.echo(f"{model.kind} model {model.id} {model.name} is current", err=True)


@app.command("merge")
def merge(
    model_id: int = typer.Argument(..., help="A registered LoRA adapter model."),
    out: Path = typer.Option(None, "--out", help="Where to write the merged model (default: beside it, DIR-merged)."),
    name: str = typer.Option(None, "--name", help="The merged model's name (default: NAME-merged)."),
) -> None:
    """Merge an adapter model into its base (peft merge_and_unload), save_pretrained it whole, register it."""
    with cli_session() as db:
        model = merge_adapter(db, model_id=model_id, out=out, name=name)
        line = model_to_dict(model)
    typer.echo(f"merged model {model_id} into {line['path']}: registered {line['kind']} model {line['id']}", err=True)
    typer.echo(json.dumps(line))
