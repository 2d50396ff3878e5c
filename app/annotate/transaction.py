"""One annotate API request's transaction: the writer gate (SQLite) or a slot (PostgreSQL), a database handle,
the bearer token's user, the work, which commits; rolled back on any error."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.annotate.auth import TokenUser, token_user
from app.annotate.write_gate import sqlite_write_gate_async
from app.db import get_engine, get_sessionmaker
from app.settings import Settings, get_settings

# What runs inside the transaction: (database handle, the caller, settings) -> the response. It commits what it
# keeps; raising (an HTTPException or a ServiceError) rolls everything back.
Work = Callable[[Any, TokenUser, Settings], Response]


def _gate_path() -> str | None:
    engine = get_engine()
    return engine.url.database if engine.dialect.name == "sqlite" else None


async def as_api_user(request: Request, work: Work, *, core: bool = False) -> Response:
    """The whole hot request: writer gate, database session, bearer-token user, the work (which commits).
    `core=True` gives the work a Core Connection instead of an ORM Session: for the prepared-SQL services
    (next_task, submit_annotation), whose statements then skip the Session's bookkeeping (measured: a fifth of
    the server CPU per annotation).

    SQLite: on the event loop. The gate lets one write transaction per database run at a time anyway, so a worker
    thread buys no concurrency, only hand-offs: the request's hop to the thread and back, and a GIL switch at every
    sqlite3 call (measured with bench/annotate_load.py: half the server CPU per annotation). The loop never waits
    for the gate itself, and queued requests share one hold of it (see app.annotate.write_gate). PostgreSQL: in one
    worker thread, where round trips and row-lock waits do not hold up the loop, at most `pg_annotate_concurrency`
    at once (the rest wait on the loop). Sync dependencies would each cost one more hand-off, so the annotate API
    does not use them."""
    path = _gate_path()
    if path is None:
        async with _pg_slots():
            return await run_in_threadpool(_in_transaction, request, work, core)
    async with sqlite_write_gate_async(path):
        return _in_transaction(request, work, core)


_PG_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _pg_slots() -> asyncio.Semaphore:
    """This event loop's limit on concurrent PostgreSQL annotate transactions (a semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _PG_SLOTS:
        _PG_SLOTS[loop] = asyncio.Semaphore(get_settings().pg_annotate_concurrency)
    return _PG_SLOTS[loop]


def _in_transaction(request: Request, work: Work, core: bool) -> Response:
    db = get_engine().connect() if core else get_sessionmaker()()
    try:
        return work(db, token_user(request, db), get_settings())
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()
