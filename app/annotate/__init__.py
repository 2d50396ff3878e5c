"""The annotate hot path: the two endpoints an annotator's client calls all day, `GET /api/v1/tasks/next` and
`POST /api/v1/annotations`, and the transactions behind every annotate API route.

Why a package of its own: profiled under bench/annotate_load.py, FastAPI's part of such a request (matching the
path against every router, solving dependencies, the request/response and exception wrappers) cost about as much
server CPU as the transaction itself; and SQLite has a single writer, whose busy-wait (sleeps of up to 100 ms)
costs far more under load than the few milliseconds a transaction holds the lock.

What it guarantees:
- The fast path has no behaviour of its own: `middleware.AnnotateFastPath` answers a well-formed request with the
  same work functions (`work`) the documented FastAPI routes (app.api.tasks, app.api.annotations) call, in the
  same transaction runner, with the same error responses; anything else goes on to the routes.
- One write transaction at a time per SQLite file, across threads and processes (`write_gate`; every write
  transaction of the default engine takes it, see app.db), with the event loop never blocked waiting for it.
- Bounded PostgreSQL concurrency: at most `pg_annotate_concurrency` annotate transactions per process
  (`transaction`).
- Nothing half-written: each request is one transaction, committed by its work or rolled back on any error.
- One bearer-token rule (`auth`: bearer scheme, an unrevoked token of an active user, else 401 with
  `WWW-Authenticate: Bearer`) for the fast path and every other API route (app.deps).
- The hot path's SQL is written once (`statements`), prepared, for the services it runs.

This package never imports the routes (app.api, app.web): an import-linter contract in pyproject.toml says so.
"""
