"""app.annotate.transaction: how the annotate API's transactions run (the endpoints themselves:
tests/app/api/test_annotations_api.py, tests/app/api/test_tasks_api.py, test_middleware.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.factories import make_tasks, task_line


@pytest.mark.parametrize("limit", [1, 3])
def test_postgres_annotate_transactions_are_limited_per_process(settings, monkeypatch, limit):
    """At most `pg_annotate_concurrency` transactions run at once on the PostgreSQL path; the others wait on the
    event loop, and every one finishes."""
    from app.annotate import transaction
    from app.settings import get_settings

    monkeypatch.setenv("RLHF_PG_ANNOTATE_CONCURRENCY", str(limit))
    get_settings.cache_clear()
    monkeypatch.setattr(transaction, "_gate_path", lambda: None)  # the PostgreSQL path, whatever the test backend
    running = peak = 0
    counter = threading.Lock()

    def slow_transaction(request, work, core):
        nonlocal running, peak
        with counter:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with counter:
            running -= 1
        return f"answer {work}"

    monkeypatch.setattr(transaction, "_in_transaction", slow_transaction)

    async def eight_requests():
        return await asyncio.gather(*(transaction.as_api_user(None, i) for i in range(8)))

    assert asyncio.run(eight_requests()) == [f"answer {i}" for i in range(8)]
    assert peak == limit


@pytest.mark.parametrize("holder", ["thread", "process"])
def test_api_waits_for_a_held_sqlite_write_gate_and_the_server_keeps_answering(client, db, api, holder):
    """The annotate API runs its SQLite transaction on the event loop, but never waits for the writer gate there:
    while another thread of this process (or another process: a separate open file's flock) holds the gate, the
    request waits off the loop, other requests are answered meanwhile, and it proceeds once the gate is free."""
    import fcntl
    from contextlib import contextmanager

    from app.annotate.write_gate import sqlite_write_gate
    from app.db import get_engine

    path = get_engine().url.database

    @contextmanager
    def other_process_holds():
        with open(path + ".write-gate", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    (task_id,) = make_tasks(db, task_line(overlap=1))
    _, headers = api()
    answers = []
    with sqlite_write_gate(path) if holder == "thread" else other_process_holds():
        waiting = threading.Thread(target=lambda: answers.append(client.get("/api/v1/tasks/next", headers=headers)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not answers  # held up by the gate...
        assert client.get("/healthz").status_code == 200  # ...off the event loop
    waiting.join(10)
    assert answers[0].status_code == 200 and answers[0].json()["task_id"] == task_id
