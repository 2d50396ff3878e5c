"""`rlhf generate`: enqueue a generation job (the worker runs `python -m trainer generate`, then makes tasks)."""

import json

import typer

from app.cli.session import cli_session
from app.services.generation import GenerationRequest, parse_generation_request, request_generation

D = GenerationRequest()  # the defaults each option shows


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    model: int = typer.Option(None, "--model", help="Policy model id (default: the current policy)."),
    split: str = typer.Option(
        D.split, "--split", help="Prompts of this split: train, eval or all (eval never becomes tasks)."
    ),
    tag: str = typer.Option(None, "--tag", help="Only prompts with this tag."),
    count: int = typer.Option(D.count, "--count", help="How many prompts (the first ones, in id order)."),
    num_samples: int = typer.Option(D.num_samples, "--num-samples", "-k", help="Responses per prompt K (2..8)."),
    temperature: float = typer.Option(D.temperature, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_k: int = typer.Option(D.top_k, "--top-k", help="Top-k (0 = off)."),
    top_p: float = typer.Option(D.top_p, "--top-p", help="Nucleus mass (1.0 = off)."),
    max_new_tokens: int = typer.Option(D.max_new_tokens, "--max-new-tokens", help="Maximum new tokens per response."),
    seed: int = typer.Option(D.seed, "--seed", help="Request seed: the same request and seed give the same texts."),
    task_kind: str = typer.Option(D.task_kind, "--task-kind", help="pairwise (K/2 pairs), ranking or rating."),
    overlap: int = typer.Option(D.overlap, "--overlap", help="Distinct annotators per task."),
    priority: int = typer.Option(D.priority, "--priority", help="Job and task priority."),
    select: str = typer.Option(
        D.select,
        "--select",
        help="random | uncertainty (the current reward model's P(a beats b) nearest 0.5) | disagreement "
        "(between the latest reward models).",
    ),
    oversample: int = typer.Option(
        D.oversample, "--oversample", help="Selection: candidates sampled per prompt and response shown."
    ),
    random_share: float = typer.Option(
        D.random_share, "--random-share", help="Selection: share of prompts drawn at random (unbiased data)."
    ),
) -> None:
    """Generate K responses per prompt with a policy and turn them into tasks (a `generate` job)."""
    values = dict(
        model_id=model,
        split=split,
        tag=tag,
        count=count,
        num_samples=num_samples,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        task_kind=task_kind,
        overlap=overlap,
        priority=priority,
        select=select,
        oversample=oversample,
        random_share=random_share,
    )
    with cli_session() as db:
        job = request_generation(db, request=parse_generation_request(values))
        typer.echo(f"queued generate job {job.id} (run `rlhf worker` to process it)", err=True)
        typer.echo(json.dumps({"job_id": job.id, "config": job.config}))
