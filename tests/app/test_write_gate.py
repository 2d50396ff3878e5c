"""The SQLite writer gate as the event loop takes it: queued requests share one hold, in batches, and it is let go."""
from __future__ import annotations

import asyncio
import fcntl

from app import write_gate
from app.write_gate import sqlite_write_gate, sqlite_write_gate_async


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
