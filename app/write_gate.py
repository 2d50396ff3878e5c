"""The SQLite writer gate: one write transaction at a time per database file, across threads and processes.

SQLite has one writer at a time; a waiting connection polls with sleeps of up to 100 ms (busy_timeout), which under
load costs far more than the few milliseconds a transaction holds the lock. The hot routes queue up here instead:
a thread lock within the process plus an flock shared by every server process on `<database>.write-gate`.

Two ways in:
- `sqlite_write_gate(path)`: blocking, for work in a worker thread (task import).
- `sqlite_write_gate_async(path)`: for work that runs on the event loop (the annotate API). Requests of one loop
  queue on an asyncio lock, and the process keeps the gate from one queued request to the next (up to
  `LOOP_BATCH` in a row, then it lets other processes in): the loop never blocks waiting for the gate (a held
  gate is waited for in a worker thread), and that wait and its thread hand-offs are paid once per batch.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.to_thread

# Consecutive transactions one process may run while its own requests queue and others wait for the gate
# (at well under a millisecond each, a few ms of waiting for the other processes at most).
LOOP_BATCH = 8

_thread_lock = threading.Lock()
_files: dict[tuple[int, str], Any] = {}
_files_lock = threading.Lock()


def _gate_file(database_path: str):
    key = (os.getpid(), database_path)  # a forked worker opens its own file: flock belongs to the open file
    handle = _files.get(key)
    if handle is None:
        with _files_lock:
            if key not in _files:
                _files[key] = open(database_path + ".write-gate", "a+b")  # noqa: SIM115 (open for the process's life)
            handle = _files[key]
    return handle


def _acquire(handle, *, blocking: bool = True) -> bool:
    if not _thread_lock.acquire(blocking=blocking):
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _thread_lock.release()
        return False
    except BaseException:
        _thread_lock.release()
        raise
    return True


def _release(handle) -> None:
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    _thread_lock.release()  # a threading.Lock may be released by another thread than the one that took it


@contextmanager
def sqlite_write_gate(database_path: str | None) -> Iterator[None]:
    """Hold the gate of this SQLite database (a no-op for None: PostgreSQL needs none)."""
    if not database_path:
        yield
        return
    handle = _gate_file(database_path)
    _acquire(handle)
    try:
        yield
    finally:
        _release(handle)


class _LoopGate:
    """One event loop's queue for the gate of one database."""

    def __init__(self, database_path: str) -> None:
        self.handle = _gate_file(database_path)
        self.queue = asyncio.Lock()
        self.waiting = 0  # requests of this loop queued behind the current one
        self.held = False  # the gate is held by this loop (across queued requests)
        self.run = 0  # transactions run since it was taken

    async def take(self) -> None:
        if self.held:
            return
        if not _acquire(self.handle, blocking=False):
            with anyio.CancelScope(shield=True):  # once the thread has the gate, this task must get to release it
                await anyio.to_thread.run_sync(_acquire, self.handle)
        self.held, self.run = True, 0

    def done(self) -> None:
        """After a transaction: keep the gate for the next queued request, unless none or the batch is full."""
        self.run += 1
        if self.held and (not self.waiting or self.run >= LOOP_BATCH):
            self._let_go()

    def left_queue(self) -> None:
        """A queued request gave up (cancelled): let the gate go if it was kept for nobody."""
        if self.held and not self.waiting and not self.queue.locked():
            self._let_go()

    def _let_go(self) -> None:
        self.held = False
        _release(self.handle)


_loop_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _LoopGate]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def sqlite_write_gate_async(database_path: str | None) -> AsyncIterator[None]:
    """Hold the gate of this SQLite database for work that runs on the event loop (no-op for None)."""
    if not database_path:
        yield
        return
    gates = _loop_gates.setdefault(asyncio.get_running_loop(), {})
    gate = gates.get(database_path) or gates.setdefault(database_path, _LoopGate(database_path))
    gate.waiting += 1
    try:
        await gate.queue.acquire()
    except BaseException:
        gate.waiting -= 1
        gate.left_queue()
        raise
    gate.waiting -= 1
    try:
        await gate.take()
        yield
    finally:
        gate.done()
        gate.queue.release()
