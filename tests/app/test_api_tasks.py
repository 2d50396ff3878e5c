"""app.api.tasks: how the annotate transactions run (the endpoints themselves: test_annotations,
test_assignment, test_annotate_fast_path)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest


@pytest.mark.parametrize("limit", [1, 3])
def test_postgres_annotate_transactions_are_limited_per_process(settings, monkeypatch, limit):
    """At most `pg_annotate_concurrency` transactions run at once on the PostgreSQL path; the others wait on the
    event loop, and every one finishes."""
    from app.api import tasks as api_tasks
    from app.settings import get_settings

    monkeypatch.setenv("RLHF_PG_ANNOTATE_CONCURRENCY", str(limit))
    get_settings.cache_clear()
    monkeypatch.setattr(api_tasks, "_gate_path", lambda: None)  # the PostgreSQL path, whatever the test backend
    running = peak = 0
    counter = threading.Lock()

    def transaction(request, work, core):
        nonlocal running, peak
        with counter:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with counter:
            running -= 1
        return f"answer {work}"

    monkeypatch.setattr(api_tasks, "_in_transaction", transaction)

    async def eight_requests():
        return await asyncio.gather(*(api_tasks.as_api_user(None, i) for i in range(8)))

    assert asyncio.run(eight_requests()) == [f"answer {i}" for i in range(8)]
    assert peak == limit
