"""`rlhf simulate` says when it ran out of tasks and how many labels it made."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from app.simulation import SimulationReport

runner = CliRunner()


def test_simulate_says_it_ran_out_of_tasks_and_how_many_labels_it_made(monkeypatch):
    def short_run(**kw) -> SimulationReport:
        return SimulationReport(labels=31, requested=kw["labels"], out_of_tasks=True, seconds=2.0)

    monkeypatch.setattr("app.simulation.run_simulation", short_run)
    args = ["simulate", "--url", "http://127.0.0.1:9", "--admin-token", "t", "--labels", "150"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "ran out of tasks: made 31 of the 150 labels asked for" in result.stderr
    assert result.stdout.startswith("31 labels")

    data = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert (data["labels"], data["requested"], data["out_of_tasks"]) == (31, 150, True)


def test_a_full_run_says_nothing_about_a_shortfall():
    assert SimulationReport(labels=5, requested=5).shortfall() is None
    assert (
        SimulationReport(labels=3, requested=5).shortfall() == "stopped (time limit): made 3 of the 5 labels asked for"
    )


def test_simulate_passes_careless_and_adversarial_annotators_on_and_reports_them(monkeypatch):
    seen = {}

    def run(**kw) -> SimulationReport:
        seen.update(kw)
        return SimulationReport(labels=1, requested=1, behaviours={"a": "honest", "b": "careless"})

    monkeypatch.setattr("app.simulation.run_simulation", run)
    base = ["simulate", "--url", "http://127.0.0.1:9", "--admin-token", "t", "--annotators", "6"]
    args = [*base, "--careless", "2", "--careless-rate", "0.8", "--adversarial", "1", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (seen["careless"], seen["careless_rate"], seen["adversarial"], seen["adversarial_rate"]) == (2, 0.8, 1, 1.0)
    assert json.loads(result.stdout)["behaviours"] == {"a": "honest", "b": "careless"}
    assert runner.invoke(cli, [*base, "--careless-rate", "1.5"]).exit_code == 2


def test_more_careless_annotators_than_annotators_is_refused_before_any_request():
    from app.simulation import SimulationError, run_simulation

    with pytest.raises(SimulationError, match="must fit in 2"):
        run_simulation(url="http://127.0.0.1:9", admin_token="t", annotators=2, labels=1, careless=3)
