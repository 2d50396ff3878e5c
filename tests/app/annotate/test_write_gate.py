"""The SQLite writer gate as the event loop takes it: queued requests share one hold, in batches, and it is let go."""

from __future__ import annotations

import asyncio
import fcntl

from app.annotate import write_gate
from app.annotate.write_gate import sqlite_write_gate, sqlite_write_gate_async


def _free(path) -> bool:
    """True when another process could take the gate now (a separate open file's flock)."""
    with open(str(path) + ".write-gate", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return True


def test_queued_requests_run_one_at_a_time_in_batches_and_the_gate_is_let_go(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    inside, most, released_between = 0, 0, []

    async def request(i: int) -> None:
        nonlocal inside, most
        async with sqlite_write_gate_async(path):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)  # other requests run meanwhile and must queue
            inside -= 1
        released_between.append(_free(path))

    async def main() -> None:
        await asyncio.gather(*(request(i) for i in range(3 * write_gate.LOOP_BATCH)))

    asyncio.run(main())
    assert most == 1
    # kept from one queued request to the next, let go after each batch so other processes get their turn
    assert 2 <= released_between.count(True) <= 4 and _free(path)


def test_a_cancelled_waiter_does_not_keep_the_gate(tmp_path):
    path = str(tmp_path / "db.sqlite3")

    async def main() -> None:
        first_in, let_first_out = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with sqlite_write_gate_async(path):
                first_in.set()
                await let_first_out.wait()

        async def second() -> None:
            async with sqlite_write_gate_async(path):
                raise AssertionError("cancelled before its turn")

        a = asyncio.create_task(first())
        await first_in.wait()
        b = asyncio.create_task(second())
        await asyncio.sleep(0)
        let_first_out.set()
        b.cancel()  # queued: first keeps the gate for it, then it goes away
        await asyncio.gather(a, b, return_exceptions=True)

    asyncio.run(main())
    assert _free(path)


def test_a_thread_holding_the_gate_is_waited_for_off_the_loop(tmp_path):
    path = str(tmp_path / "db.sqlite3")

    async def main() -> list[str]:
        order = []

        async def request() -> None:
            async with sqlite_write_gate_async(path):
                order.append("request")

        with sqlite_write_gate(path):
            task = asyncio.create_task(request())
            for _ in range(20):
                await asyncio.sleep(0.005)  # the loop keeps running while the request waits
            order.append("holder done")
        await task
        return order

    assert asyncio.run(main()) == ["holder done", "request"] and _free(path)


# ---- every write transaction of the default SQLite engine takes the gate --------------------------------------


def _gate_free(settings) -> bool:
    from app.db import get_engine

    return _free(get_engine().url.database)


def test_engine_transactions_take_the_gate_until_commit_rollback_error_or_invalidation(settings, db):
    from sqlalchemy import text

    from app.db import get_engine, get_read_engine, get_sessionmaker

    engine = get_engine()
    assert _gate_free(settings)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert not _gate_free(settings)  # from BEGIN IMMEDIATE...
        conn.commit()
        assert _gate_free(settings)  # ...to the COMMIT
        conn.execute(text("SELECT 1"))
        conn.rollback()
        assert _gate_free(settings)
        conn.execute(text("SELECT 1"))
    assert _gate_free(settings)  # closed mid-transaction: the pool's rollback

    session = get_sessionmaker()()
    try:
        session.execute(text("SELECT * FROM no_such_table"))
    except Exception:
        session.rollback()
    assert _gate_free(settings)
    session.execute(text("SELECT 1"))
    session.connection().invalidate()  # a dead connection: no rollback runs, the gate must still go
    assert _gate_free(settings)
    session.close()

    with get_read_engine().connect() as conn:  # read-only (DEFERRED) transactions are not gated
        conn.execute(text("SELECT 1"))
        assert _gate_free(settings)
    with sqlite_write_gate(engine.url.database), engine.connect() as conn:  # held by this thread: not taken twice
        conn.execute(text("SELECT 1"))
        conn.commit()
        assert not _gate_free(settings)
    assert _gate_free(settings)


def test_a_writer_outside_the_annotate_api_does_not_freeze_the_server(client, db, api):
    """Another thread's write transaction (a job worker's bulk insert, a page) holds SQLite's write lock for 2 s:
    the annotate API waits for it off the event loop (the writer took the gate first), so /healthz and pages answer
    meanwhile, and the annotate request completes once the writer commits."""
    import threading
    import time

    from sqlalchemy import text

    from app.db import get_engine
    from tests.factories import make_tasks, task_line

    (task_id,) = make_tasks(db, task_line(overlap=1))
    _, headers = api()
    holding, answers = threading.Event(), []

    def writer() -> None:
        with get_engine().connect() as conn:
            conn.execute(text("UPDATE tasks SET priority = priority WHERE id = :id"), {"id": task_id})
            holding.set()
            time.sleep(2.0)
            conn.commit()

    holder = threading.Thread(target=writer)
    holder.start()
    assert holding.wait(10)
    started = time.monotonic()
    waiting = threading.Thread(
        target=lambda: answers.append((client.get("/api/v1/tasks/next", headers=headers), time.monotonic() - started))
    )
    waiting.start()
    time.sleep(0.3)
    for path in ("/healthz", "/login", "/healthz"):
        t0 = time.monotonic()
        assert client.get(path).status_code == 200
        assert time.monotonic() - t0 < 0.5, path  # before the gate covered every writer: frozen until the commit
    assert waiting.is_alive() and not answers
    holder.join(10)
    waiting.join(10)
    response, took = answers[0]
    assert response.status_code == 200 and response.json()["task_id"] == task_id and took >= 1.5


def test_job_worker_writes_and_the_annotate_api_never_deadlock(client, db, api):
    """A burst of job-worker-like writes (heartbeats, progress, each its own transaction in its own thread) while
    annotators take and submit tasks through the API: all of it completes, nothing lost."""
    import threading
    import time

    from app.db import session_scope
    from app.jobs.queue import claim_next, heartbeat
    from app.services.jobs import enqueue_job
    from tests.factories import make_tasks

    make_tasks(db, *[{"prompt": f"p{i}", "responses": ["a", "b"], "kind": "pairwise", "overlap": 1} for i in range(40)])
    job = enqueue_job(db, kind="noop")
    db.commit()
    with session_scope() as session:
        assert claim_next(session, worker_id="w1").id == job.id
    stop, beats, errors = threading.Event(), [0], []

    def worker() -> None:
        try:
            while not stop.is_set():
                with session_scope() as session:
                    assert heartbeat(session, job_id=job.id, worker_id="w1")
                beats[0] += 1
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    annotated: list[int] = []

    def annotator(headers) -> None:
        try:
            for _ in range(10):
                offer = client.get("/api/v1/tasks/next", headers=headers)
                if offer.status_code == 204:
                    return
                done = client.post(
                    "/api/v1/annotations",
                    headers={**headers, "Idempotency-Key": uuid_hex()},
                    json={"task_id": offer.json()["task_id"], "choice": "tie"},
                )
                assert done.status_code == 201, done.text
                annotated.append(offer.json()["task_id"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)] + [
        threading.Thread(target=annotator, args=(api()[1],)) for _ in range(4)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads[2:]:
        t.join(60)
    stop.set()
    for t in threads[:2]:
        t.join(10)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert len(annotated) == len(set(annotated)) == 40 and beats[0] > 0
    assert time.monotonic() - started < 60 and _gate_free(db)


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex


def test_a_process_killed_holding_the_gate_frees_it(settings):
    """kill -9 of a process in the middle of a gated write transaction: the gate (flock) and SQLite's lock go with
    it; the next writer gets in."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import text

    from app.db import get_engine

    path = get_engine().url.database
    code = (
        "import sys, time\nfrom sqlalchemy import text\nfrom app.db import make_engine\n"
        f"engine = make_engine('sqlite:///{path}')\nconn = engine.connect()\n"
        "conn.execute(text('UPDATE users SET is_active = is_active'))\nprint('holding', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    try:
        assert child.stdout.readline().strip() == "holding"
        assert not _free(path)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        t0 = time.monotonic()
        with get_engine().connect() as conn:
            conn.execute(text("UPDATE users SET is_active = is_active"))
            conn.commit()
        assert time.monotonic() - t0 < 1.0 and _free(path)
    finally:
        if child.poll() is None:
            child.kill()


def test_the_page_user_lookup_does_not_keep_the_gate_for_the_rest_of_the_request(db, make_user):
    """A page's user is loaded in a transaction of its own: the request may then read its form or render for as
    long as it likes without holding SQLite's writer gate (and so the annotate API) up."""
    from types import SimpleNamespace

    from app.db import get_engine, get_sessionmaker
    from app.deps import get_page_user_optional

    user = make_user()
    session = get_sessionmaker()()
    request = SimpleNamespace(state=SimpleNamespace())
    try:
        browser = SimpleNamespace(user_id=user.id, session_version=user.session_version)
        found = get_page_user_optional(request, session, browser)
        assert found.id == user.id and found.username == user.username  # still loaded after the commit
        assert get_engine()._write_gate.owner is None and _free(get_engine().url.database)
    finally:
        session.close()
