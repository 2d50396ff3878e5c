"""`rlhf prompts retire` / `rlhf tasks retire`: ids as arguments or --file; a bad id is exit 2 naming the line."""

from sqlalchemy import select
from typer.testing import CliRunner

from app.models import Task
from tests.factories import make_tasks, task_line


def test_cli_retire_tasks_and_prompts_from_args_and_file(settings, db, tmp_path):
    from app.cli import app as cli

    ids = make_tasks(db, task_line(), task_line(), task_line())
    db.rollback()
    runner = CliRunner()
    res = runner.invoke(cli, ["tasks", "retire", str(ids[0])])
    assert res.exit_code == 0, res.output
    assert '"retired": 1' in res.stdout
    listing = tmp_path / "ids.txt"
    listing.write_text(f"{ids[1]}\n{ids[2]}, {ids[0]}\n")
    res = runner.invoke(cli, ["tasks", "retire", "--file", str(listing)])
    assert res.exit_code == 0 and '"retired": 2, "already": 1' in res.stdout
    listing.write_text(f"{ids[1]}\nseven\n")
    res = runner.invoke(cli, ["tasks", "retire", "--file", str(listing)])
    assert res.exit_code == 2 and f"{listing}:2: 'seven' is not a task id" in res.stderr
    assert runner.invoke(cli, ["tasks", "retire", "77777"]).exit_code == 2
    assert runner.invoke(cli, ["tasks", "retire"]).exit_code == 2
    prompt_id = db.scalar(select(Task.prompt_id).where(Task.id == ids[0]))
    db.rollback()
    res = runner.invoke(cli, ["prompts", "retire", str(prompt_id)])
    assert res.exit_code == 0 and '"retired": 1' in res.stdout
