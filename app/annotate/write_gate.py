"""The SQLite writer gate: one write transaction at a time per database file, across threads and processes.

SQLite has one writer at a time; a waiting connection polls with sleeps of up to 100 ms (busy_timeout), which under
load costs far more than the few milliseconds a transaction holds the lock. The hot routes queue up here instead:
a thread lock within the process plus an flock shared by every server process on `<database>.write-gate`.

Every write transaction takes it: `gate_engine()` (app.db, on the default IMMEDIATE engine) takes it before
`BEGIN IMMEDIATE` and lets it go after the COMMIT/ROLLBACK (or when the connection is invalidated or returned to the
pool), so no writer that is not gated holds SQLite's write lock while the event loop's `BEGIN IMMEDIATE` would wait
for it (up to busy_timeout, freezing the whole server process). A transaction that runs while its task already holds
the gate (`_held`, a context variable) does not take it again: the thread lock is process-wide, a second take in the
same process would deadlock. Read-only (DEFERRED) engines are not gated: WAL readers never wait for the writer.

Ways in:
- the engine's begin listener: blocking, for sync code (worker threads, the job worker, the CLI).
- `sqlite_write_gate(path)`: blocking, for a block of work in a worker thread (transactions inside it are not
  gated again).
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
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.to_thread

# Consecutive transactions one process may run while its own requests queue and others wait for the gate
# (at well under a millisecond each, a few ms of waiting for the other processes at most).
LOOP_BATCH = 8

# How long a transaction waits for the gate held in this process before giving up (SQLite's busy_timeout): only a
# thread that already holds it through another connection waits that long (before: SQLITE_BUSY after as long).
TAKE_TIMEOUT_S = 30.0

_thread_lock = threading.Lock()
_held: ContextVar[bool] = ContextVar("sqlite_write_gate_held", default=False)  # this task/thread holds the gate
_loop_thread: int | None = None  # the thread of the event loop that holds the gate for its requests, if one does
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


def _acquire(handle, *, blocking: bool = True, timeout: float = -1) -> bool:
    """The thread lock, then the flock; False when not taken (non-blocking, or the thread lock's timeout)."""
    if not _thread_lock.acquire(blocking, timeout if blocking else -1):
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


def _acquire_for_loop(handle, loop_thread: int) -> bool:
    """In a worker thread, for an event loop: marks the gate as the loop's as soon as it is taken."""
    global _loop_thread
    _acquire(handle)
    _loop_thread = loop_thread
    return True


def _release(handle) -> None:
    global _loop_thread
    _loop_thread = None
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
    token = _held.set(True)
    try:
        yield
    finally:
        _held.reset(token)
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
        global _loop_thread
        if _acquire(self.handle, blocking=False):
            _loop_thread = threading.get_ident()
        else:
            with anyio.CancelScope(shield=True):  # once the thread has the gate, this task must get to release it
                await anyio.to_thread.run_sync(_acquire_for_loop, self.handle, threading.get_ident())
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
        token = _held.set(True)
        try:
            yield
        finally:
            _held.reset(token)
    finally:
        gate.done()
        gate.queue.release()


class GateOnLoop(RuntimeError):
    """A SQLite write transaction began on the event loop while that loop holds the gate for its own requests:
    waiting there would deadlock (run it in a worker thread, or inside sqlite_write_gate_async)."""


class _EngineGate:
    """The gate as one engine's transactions take it: the pooled DBAPI connection that holds it, if any."""

    def __init__(self, database_path: str) -> None:
        self.database_path = database_path
        self.owner: Any = None  # the raw DBAPI connection whose transaction took the gate

    def begin(self, conn) -> None:
        """The engine's `begin` listener: the gate (unless this task holds it already), then BEGIN IMMEDIATE."""
        if _held.get():
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        if _loop_thread is not None and _loop_thread == threading.get_ident():
            raise GateOnLoop(
                f"SQLite write transaction on the event loop while it holds the writer gate of {self.database_path}"
            )
        if not _acquire(_gate_file(self.database_path), timeout=TAKE_TIMEOUT_S):
            raise TimeoutError(
                f"the SQLite writer gate of {self.database_path} was held in this process for "
                f"{TAKE_TIMEOUT_S:.0f} s (a thread holding two write transactions at once?)"
            )
        self.owner = owner = conn.connection.dbapi_connection
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.end(owner)
            raise

    def end(self, dbapi_connection) -> None:
        """The transaction on this DBAPI connection is over (or the connection is gone): let the gate go if it
        holds it."""
        if dbapi_connection is not None and self.owner is dbapi_connection:
            self.owner = None
            _release(_gate_file(self.database_path))


def gate_engine(engine, database_path: str) -> None:
    """Make every transaction of this (IMMEDIATE) SQLite engine take the gate: before BEGIN IMMEDIATE, let go after
    the DBAPI COMMIT or ROLLBACK returns (not before: the next writer's BEGIN IMMEDIATE would meet SQLite's lock),
    and when the connection is invalidated or checked in still holding it (an error path that skipped the
    rollback). A process killed while holding it frees it with its open file (flock)."""
    from sqlalchemy import event

    gate = _EngineGate(database_path)
    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def gated_commit(dbapi_connection) -> None:
        do_commit(dbapi_connection)  # a failed COMMIT keeps the gate until the rollback that follows
        gate.end(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))

    def gated_rollback(dbapi_connection) -> None:
        try:
            do_rollback(dbapi_connection)
        finally:
            gate.end(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))

    dialect.do_commit, dialect.do_rollback = gated_commit, gated_rollback
    event.listen(engine, "begin", gate.begin)
    for name in ("checkin", "invalidate", "close", "close_detached"):
        event.listen(engine, name, lambda dbapi_connection, *_: gate.end(dbapi_connection))
    engine._write_gate = gate  # for tests
