"""docker-compose.yml and the Dockerfile: Docker can't run here, so check what can be checked statically."""

import typer.main
import yaml

from app.cli import app as cli_app
from tests.factories import ROOT


def _click_command(words: list[str]):
    """The deepest `rlhf` command the words name, and the words left over (its arguments and options)."""
    command = typer.main.get_command(cli_app)
    for i, word in enumerate(words):
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            return command, words[i:]
        command = sub
    return command, []


def test_compose_services_and_every_command_is_a_real_rlhf_command():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "web", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:") and "volumes" in services["postgres"]
    assert services["migrate"]["command"] == ["rlhf", "db", "upgrade"]
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            continue
        assert command[0] == "rlhf", name
        click_cmd, rest = _click_command(command[1:])
        assert not hasattr(click_cmd, "commands"), f"{name}: {command} names a group, not a command"
        # every option given must exist on that command
        known = {opt for p in click_cmd.params for opt in p.opts}
        for word in rest:
            if word.startswith("--"):
                assert word in known, f"{name}: unknown option {word} for {command}"
        assert service["environment"]["RLHF_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile_installs_cpu_torch_and_the_app():
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "whl/cpu" in text
    assert "pip install -e ." in text or "pip install ." in text


def test_readme_says_where_rlhf_lives_and_how_to_get_the_admin_token():
    """The two things a new user asked for, and that the command the README gives exists as written."""
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.settings import Settings

    readme = (ROOT / "README.md").read_text()
    assert "`.venv/bin/rlhf`" in readme
    command = f".venv/bin/rlhf tokens create --username {Settings().demo_admin_user}"
    assert f"`{command}`" in readme
    help_text = CliRunner().invoke(cli, ["tokens", "create", "--help"]).stdout
    assert "--username" in help_text
    assert "rlhf = " in (ROOT / "pyproject.toml").read_text()  # the console script README names
