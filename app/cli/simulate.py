import json

import typer

from app.cli.errors import fail


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def simulate(
    url: str = typer.Option(..., "--url", help="Base URL of a running `rlhf serve`, e.g. http://127.0.0.1:8000"),
    admin_token: str = typer.Option(..., "--admin-token", help="An admin's API token (creates the annotators)."),
    annotators: int = typer.Option(3, "--annotators", min=1, help="How many simulated annotators."),
    labels: int = typer.Option(100, "--labels", min=1, help="How many labels to submit in all."),
    noise: float = typer.Option(
        0.1, "--noise", min=0.0, help="Choice temperature τ in gold-score units (0: always by gold)."
    ),
    position_bias: float = typer.Option(0.0, "--position-bias", help="Extra utility of the first response shown."),
    length_bias: float = typer.Option(0.0, "--length-bias", help="Extra utility per doubling of the word count."),
    seed: int = typer.Option(0, "--seed", help="Seeds the annotators' names and draws."),
    careless: int = typer.Option(0, "--careless", min=0, help="How many of the annotators choose at random."),
    careless_rate: float = typer.Option(
        1.0, "--careless-rate", min=0.0, max=1.0, help="Share of a careless annotator's tasks labelled at random."
    ),
    adversarial: int = typer.Option(0, "--adversarial", min=0, help="How many of the annotators invert choices."),
    adversarial_rate: float = typer.Option(
        1.0, "--adversarial-rate", min=0.0, max=1.0, help="Share of an adversarial annotator's tasks inverted."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Label through the public HTTP API as simulated annotators (Bradley-Terry on the embedded world's gold judge)."""
    import httpx

    from app.simulation import SimulationError, run_simulation

    try:
        report = run_simulation(
            url=url.rstrip("/"),
            admin_token=admin_token,
            annotators=annotators,
            labels=labels,
            noise=noise,
            position_bias=position_bias,
            length_bias=length_bias,
            seed=seed,
            careless=careless,
            careless_rate=careless_rate,
            adversarial=adversarial,
            adversarial_rate=adversarial_rate,
        )
    except SimulationError as exc:
        fail(str(exc))
    except httpx.HTTPError as exc:  # connection refused and the like: one line, exit 2
        fail(f"cannot reach {url}: {exc}")
    summary = report.as_dict()
    if report.shortfall():
        typer.echo(report.shortfall(), err=True)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{summary['labels']} labels by {len(summary['by_annotator'])} annotators in {summary['seconds']} s "
        f"({summary['labels_per_second']}/s); by kind {summary['by_kind']}"
    )
    typer.echo(
        f"agreement with the gold judge: {summary['agreement_with_gold']:.1%} "
        f"(critiques {summary['critiques']}, rewrites {summary['rewrites']})"
    )
    if len(summary["agreement_with_gold_by_behaviour"]) > 1:
        typer.echo(
            "by annotator behaviour: "
            + ", ".join(f"{b} {a:.1%}" for b, a in summary["agreement_with_gold_by_behaviour"].items())
        )
