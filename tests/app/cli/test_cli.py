"""The `rlhf` CLI: start-up refusals, users and tokens, bad arguments exit 2 with one line, help everywhere."""

import os
import subprocess
import sys

import pytest

from tests.factories import ROOT


def rlhf(*args, env=None, input=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_refuses_unmigrated_database(tmp_path):
    result = rlhf("serve", "--port", "0", env={"RLHF_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "rlhf db upgrade" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_serve_exits_2_when_database_cannot_connect(tmp_path):
    result = rlhf(
        "serve",
        env={"RLHF_DATA_DIR": str(tmp_path), "RLHF_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
    )
    assert result.returncode == 2
    assert "cannot connect to the database" in result.stderr and "Traceback" not in result.stderr


def test_cli_users_and_tokens_roundtrip(tmp_path):
    env = {"RLHF_DATA_DIR": str(tmp_path)}
    assert rlhf("db", "upgrade", env=env).returncode == 0
    created = rlhf(
        "users",
        "create",
        "--username",
        "ann",
        "--role",
        "annotator",
        "--password-stdin",
        env=env,
        input="long-password\n",
    )
    assert created.returncode == 0, created.stderr
    token = rlhf("tokens", "create", "--username", "ann", env=env)
    assert token.returncode == 0 and token.stdout.strip().startswith("rlhf_") and len(token.stdout.splitlines()) == 1
    listed = rlhf("users", "list", "--json", env=env)
    assert '"username": "ann"' in listed.stdout
    assert rlhf("users", "deactivate", "ann", env=env).returncode == 0
    assert '"active": false' in rlhf("users", "list", "--json", env=env).stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["users", "create", "--username", "x", "--role", "boss", "--password-stdin"], "--role must be one of"),
        (["users", "create", "--username", "x", "--role", "admin"], "--password-stdin"),
        (["users", "deactivate", "nobody"], "no user 'nobody'"),
        (["tokens", "create", "--username", "nobody"], "no user 'nobody'"),
        (["tokens", "revoke", "999"], "no token 999"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    env = {"RLHF_DATA_DIR": str(tmp_path)}
    rlhf("db", "upgrade", env=env)
    result = rlhf(*args, env=env, input="long-password\n")
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_cli_command_has_help():
    import typer.main

    from app.cli import app

    def walk(group, path):
        for name, cmd in getattr(group, "commands", {}).items():
            yield [*path, name]
            yield from walk(cmd, [*path, name])

    root = typer.main.get_command(app)
    commands = list(walk(root, []))
    assert ["serve"] in commands and ["db", "upgrade"] in commands
    from typer.testing import CliRunner

    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_the_data_dir_and_what_the_cli_writes_are_private(tmp_path):
    """A fresh data dir is 0700 and the files written in it (the SQLite database, the secret key) 0600."""
    data = tmp_path / "data"
    env = {"RLHF_DATA_DIR": str(data)}
    assert rlhf("db", "upgrade", env=env).returncode == 0
    assert rlhf("users", "create", "--username", "a", "--password-stdin", env=env, input="long-password\n")
    assert (data.stat().st_mode & 0o777) == 0o700
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "rlhf.sqlite3" for p in written)
    assert all((p.stat().st_mode & 0o077) == 0 for p in written), [(p.name, oct(p.stat().st_mode)) for p in written]


@pytest.mark.parametrize("char,what", [("\\u0000", "NUL"), ("\\u202e", "bidi override")])
def test_prompts_import_refuses_nul_and_bidi_overrides_naming_the_line(tmp_path, char, what):
    env = {"RLHF_DATA_DIR": str(tmp_path)}
    rlhf("db", "upgrade", env=env)
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "a' + char + 'b"}\n')
    result = rlhf("prompts", "import", str(path), env=env)
    assert result.returncode == 2 and f"{path}:2: `prompt` holds a {what}" in result.stderr, result.stderr
    assert rlhf("prompts", "list", "--json", env=env).stdout.strip() == "{}"  # nothing stored
