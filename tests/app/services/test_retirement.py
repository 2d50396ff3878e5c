"""Retiring prompts and tasks (app.services.retirement): never offered, exported or snapshotted again; all or
nothing; a retired prompt takes its tasks with it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Prompt, Task
from app.services.errors import NotFound
from app.services.retirement import parse_ids, retire_prompts, retire_tasks
from app.services.snapshots import _write_prompts
from tests.conftest import BACKENDS
from tests.factories import build_dataset, export_lines, make_tasks, task_line


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_retired_task_is_not_offered_and_leases_end(client, db, api):
    first, second = make_tasks(db, task_line(priority=5), task_line(priority=1))
    _, headers = api()
    assert client.get("/api/v1/tasks/next", headers=headers).json()["task_id"] == first  # now leased
    db.rollback()
    assert retire_tasks(db, ids=[first]).as_dict() == {"retired": 1, "already": 0, "tasks_retired": 0}
    db.commit()
    assert client.get("/api/v1/tasks/next", headers=headers).json()["task_id"] == second
    db.rollback()
    retire_tasks(db, ids=[second])
    db.commit()
    assert client.get("/api/v1/tasks/next", headers=headers).status_code == 204


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_retired_prompt_and_task_leave_exports_and_snapshots(db, tmp_path):
    ds = build_dataset(db)
    before = export_lines(db, "trl", include_ties=True)
    assert any(line["annotation_id"] == ds.a1.id for line in before)
    db.rollback()  # the export streamed on a server-side cursor (PostgreSQL): a fresh connection for the writes
    result = retire_prompts(db, ids=[ds.p1.id])
    assert result.retired == 1 and result.tasks_retired == 1
    assert db.get(Task, ds.t1.id).retired_at is not None
    retire_tasks(db, ids=[ds.t3.id])
    db.commit()
    ids = {line["annotation_id"] for line in export_lines(db, "trl", include_ties=True)}
    assert ids == {line["annotation_id"] for line in before} - {ds.a1.id, ds.a2.id, ds.a5.id}
    assert all(line["annotation_id"] != ds.a5.id for line in export_lines(db, "rankings"))
    _write_prompts(db, tmp_path / "prompts.jsonl", "train")
    assert f'"prompt_id": {ds.p1.id},' not in (tmp_path / "prompts.jsonl").read_text()
    db.rollback()
    assert retire_prompts(db, ids=[ds.p1.id]).as_dict() == {"retired": 0, "already": 1, "tasks_retired": 0}


def test_unknown_id_refuses_everything(db):
    (task_id,) = make_tasks(db, task_line())
    with pytest.raises(NotFound, match="no task 999999"):
        retire_tasks(db, ids=[task_id, 999999])
    db.rollback()
    assert db.scalar(select(Task.retired_at).where(Task.id == task_id)) is None
    with pytest.raises(NotFound, match="no prompt"):
        retire_prompts(db, ids=[999999])
    assert db.scalar(select(Prompt.retired_at)) is None
    assert parse_ids(["3, 1", "2 3"], what="task") == [1, 2, 3]
    with pytest.raises(Exception, match="'x' is not a positive integer"):
        parse_ids(["1", "x"], what="task")
