"""Load test of the annotation hot path: `GET /api/v1/tasks/next` + `POST /api/v1/annotations` against a real
`rlhf serve`, on SQLite and PostgreSQL, with 1 and 2 server workers.

For each (backend, workers):
  1. a fresh database (`rlhf db upgrade`), N annotators with tokens, enough pairwise tasks;
  2. closed loop with 8 and then 32 clients for --seconds each: annotations/s and p50/p99 of a next+submit pair;
  3. open loop at an offered --rate annotations/s for --seconds: p50/p99 of next and of submit, measured from the
     scheduled start (so a stall counts against us: no coordinated omission);
  4. counts: annotations stored vs acknowledged (201), duplicates (task, annotator) and overlap violations.

The client is a minimal asyncio HTTP/1.1 keep-alive client (one connection per simulated annotator), so the
load generator costs little CPU next to the server on a small machine.

    .venv/bin/python bench/annotate_load.py                       # everything (about 4 minutes)
    .venv/bin/python bench/annotate_load.py --backends sqlite --workers 2 --seconds 5
Results: printed, and written as JSON to bench/out/annotate_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("RLHF_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# ---- a tiny HTTP/1.1 client -----------------------------------------------------------------------------------


class Conn:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Authorization: Bearer {self.token}"]
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class Tally:
    def __init__(self) -> None:
        self.acked: list[int] = []  # annotation ids acknowledged with 201
        self.conflicts = 0  # 409: lease expired and task filled (allowed, nothing stored)
        self.errors: list[str] = []


async def one_annotation(conn: Conn, tally: Tally, timings: dict[str, list[float]] | None = None) -> bool:
    """next + submit; False when nothing is left for this annotator."""
    t0 = time.perf_counter()
    status, data = await conn.request("GET", "/api/v1/tasks/next")
    t1 = time.perf_counter()
    if status == 204:
        return False
    if status != 200:
        tally.errors.append(f"next {status} {data[:200]!r}")
        return False
    task = json.loads(data)
    first = task["responses"][0]["id"]
    body = json.dumps(
        {"task_id": task["task_id"], "choice": "chosen", "chosen_id": first, "strength": 2, "time_spent_ms": 1000}
    ).encode()
    status, data = await conn.request("POST", "/api/v1/annotations", body, {"Idempotency-Key": uuid.uuid4().hex})
    t2 = time.perf_counter()
    if status == 201:
        tally.acked.append(json.loads(data)["annotation_id"])
    elif status == 409:
        tally.conflicts += 1
    else:
        tally.errors.append(f"submit {status} {data[:200]!r}")
    if timings is not None:
        timings["next"].append(t1 - t0)
        timings["submit"].append(t2 - t1)
        timings["pair"].append(t2 - t0)
    return True


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000


async def closed_loop(conns: list[Conn], seconds: float, tally: Tally, server_pid: int) -> dict:
    timings = {"next": [], "submit": [], "pair": []}
    cpu_before = cpu_seconds(server_pid)
    deadline = time.perf_counter() + seconds
    before = len(tally.acked)

    async def client(conn: Conn) -> None:
        while time.perf_counter() < deadline:
            if not await one_annotation(conn, tally, timings):
                return

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - start
    done = len(tally.acked) - before
    cpu = cpu_seconds(server_pid) - cpu_before
    return {
        "clients": len(conns),
        "seconds": round(elapsed, 2),
        "annotations": done,
        "server_cpu_ms_per_annotation": round(cpu * 1000 / max(done, 1), 2),
        "annotations_per_s": round(done / elapsed, 1),
        "pair_p50_ms": round(pct(timings["pair"], 0.5), 2),
        "pair_p99_ms": round(pct(timings["pair"], 0.99), 2),
    }


async def open_loop(conns: list[Conn], rate: float, seconds: float, tally: Tally) -> dict:
    """Arrivals every 1/rate s; each takes an idle annotator connection. Latency counts from the scheduled time."""
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    nexts, submits, late_starts = [], [], []
    before = len(tally.acked)

    async def arrival(scheduled: float) -> None:
        conn = await idle.get()
        try:
            start = time.perf_counter()
            late_starts.append(start - scheduled)
            status, data = await conn.request("GET", "/api/v1/tasks/next")
            t1 = time.perf_counter()
            nexts.append(t1 - scheduled)
            if status != 200:
                if status != 204:
                    tally.errors.append(f"next {status}")
                return
            task = json.loads(data)
            body = json.dumps({"task_id": task["task_id"], "choice": "tie"}).encode()
            status, data = await conn.request(
                "POST", "/api/v1/annotations", body, {"Idempotency-Key": uuid.uuid4().hex}
            )
            submits.append(time.perf_counter() - t1)
            if status == 201:
                tally.acked.append(json.loads(data)["annotation_id"])
            elif status == 409:
                tally.conflicts += 1
            else:
                tally.errors.append(f"submit {status}")
        finally:
            idle.put_nowait(conn)

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(arrival(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    done = len(tally.acked) - before
    return {
        "offered_per_s": rate,
        "seconds": round(elapsed, 2),
        "annotations": done,
        "achieved_per_s": round(done / elapsed, 1),
        "next_p50_ms": round(pct(nexts, 0.5), 2),
        "next_p99_ms": round(pct(nexts, 0.99), 2),
        "submit_p50_ms": round(pct(submits, 0.5), 2),
        "submit_p99_ms": round(pct(submits, 0.99), 2),
    }


# ---- server CPU: a figure that does not depend on what else the machine is running ---------------------------


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_seconds(root: int) -> float:
    """user + system CPU of the server and its worker processes."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


# ---- setup: database, users, tasks, server --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rlhf() -> str:
    script = Path(sys.executable).parent / "rlhf"
    return str(script) if script.exists() else shutil.which("rlhf")


def make_database(backend: str, workdir: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.sqlite3'}", lambda: None
    from sqlalchemy import create_engine, text

    name = f"rlhf_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL), drop


def seed(url: str, *, annotators: int, tasks: int, overlap: int) -> list[str]:
    """Annotators (no password: no argon2 cost) with tokens, and pairwise tasks; returns the tokens."""
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine
    from app.services.tasks import TaskSpec, import_task_specs
    from app.services.users import create_token, create_user

    engine = make_engine(url)
    session = sessionmaker(bind=engine, expire_on_commit=False)()
    tokens = []
    for i in range(annotators):
        user = create_user(session, username=f"bench-{i}-{uuid.uuid4().hex[:6]}", role="annotator", password=None)
        tokens.append(create_token(session, user=user)[1])
    specs = [
        TaskSpec(
            line=i + 1,
            text=f"Bench prompt {i}: explain item {i} in a sentence.",
            messages=None,
            responses=[f"Answer one to {i}.", f"Answer two to {i}, a little longer."],
            kind="pairwise",
            overlap=overlap,
        )
        for i in range(tasks)
    ]
    import_task_specs(session, specs=specs)
    session.commit()
    session.close()
    engine.dispose()
    return tokens


def verify(url: str, tally: Tally) -> dict:
    from sqlalchemy import func, select, text

    from app.db import make_engine
    from app.models import Annotation, Task

    engine = make_engine(url)
    with engine.connect() as conn:
        stored_ids = set(
            conn.scalars(select(Annotation.id).where(Annotation.deleted_at.is_(None), Annotation.source == "human"))
        )
        duplicates = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT task_id, user_id FROM annotations WHERE deleted_at IS NULL "
                "GROUP BY task_id, user_id HAVING count(*) > 1) d"
            )
        ).scalar()
        over = conn.execute(select(func.count()).select_from(Task).where(Task.done_count > Task.overlap)).scalar()
        mismatched = conn.execute(
            text(
                "SELECT count(*) FROM tasks t WHERE t.done_count <> (SELECT count(*) FROM annotations a WHERE "
                "a.task_id = t.id AND a.deleted_at IS NULL AND a.source = 'human')"
            )
        ).scalar()
    engine.dispose()
    acked = set(tally.acked)
    return {
        "acknowledged": len(tally.acked),
        "stored": len(stored_ids),
        "lost": len(acked - stored_ids),
        "unacknowledged_stored": len(stored_ids - acked),
        "acked_twice": len(tally.acked) - len(acked),
        "duplicates": duplicates,
        "over_overlap": over,
        "done_count_mismatch": mismatched,
        "conflicts_409": tally.conflicts,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:3],
    }


def start_server(url: str, data_dir: Path, workers: int) -> tuple[subprocess.Popen, int, Path]:
    env = {
        **os.environ,
        "RLHF_DATABASE_URL": url,
        "RLHF_DATA_DIR": str(data_dir),
        "RLHF_SECRET_KEY": "bench",
        "RLHF_OFFLINE_ASSETS": "1",
    }
    port = free_port()
    log = data_dir / "server.log"
    proc = subprocess.Popen(
        [rlhf(), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server died: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    return proc, port, log


async def run_phases(port: int, tokens: list[str], args, server_pid: int) -> dict:
    tally = Tally()
    results = {"closed": [], "open": None}
    for clients in args.clients:
        conns = [Conn("127.0.0.1", port, t) for t in tokens[:clients]]
        await asyncio.gather(*(c.open() for c in conns))
        for c in conns[: min(4, len(conns))]:  # warm up both workers' connections and caches
            await one_annotation(c, tally)
        results["closed"].append(await closed_loop(conns, args.seconds, tally, server_pid))
        for c in conns:
            c.close()
    conns = [Conn("127.0.0.1", port, t) for t in tokens[: args.open_connections]]
    await asyncio.gather(*(c.open() for c in conns))
    results["open"] = await open_loop(conns, args.rate, args.seconds, tally)
    for c in conns:
        c.close()
    results["tally"] = tally
    return results


def run_one(backend: str, workers: int, args) -> dict:
    from app.db import make_engine

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    url, drop = make_database(backend, workdir)
    try:
        env_url = url
        subprocess.run(
            [rlhf(), "db", "upgrade"],
            env={**os.environ, "RLHF_DATABASE_URL": env_url, "RLHF_DATA_DIR": str(workdir)},
            check=True,
            capture_output=True,
        )
        annotators = max(max(args.clients), args.open_connections)
        t0 = time.perf_counter()
        tokens = seed(url, annotators=annotators, tasks=args.tasks, overlap=args.overlap)
        seeded = time.perf_counter() - t0
        proc, port, log = start_server(url, workdir, workers)
        try:
            results = asyncio.run(run_phases(port, tokens, args, proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        counts = verify(url, results.pop("tally"))
        make_engine(url).dispose()
        return {"backend": backend, "workers": workers, "seed_s": round(seeded, 1), **results, "counts": counts}
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--clients", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=100.0, help="offered annotations/s in the open loop")
    parser.add_argument("--open-connections", type=int, default=32, help="annotators available to the open loop")
    parser.add_argument("--tasks", type=int, default=8000)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "annotate_load.json")
    args = parser.parse_args()

    runs = []
    for backend in args.backends:
        for workers in args.workers:
            run = run_one(backend, workers, args)
            runs.append(run)
            print(f"\n== {backend}, {workers} server worker(s) (seeded {args.tasks} tasks in {run['seed_s']} s)")
            for c in run["closed"]:
                print(
                    f"  closed loop {c['clients']:>2} clients: {c['annotations_per_s']:>7.1f} annotations/s  "
                    f"pair p50 {c['pair_p50_ms']:.1f} ms  p99 {c['pair_p99_ms']:.1f} ms  ({c['annotations']} in "
                    f"{c['seconds']} s; server CPU {c['server_cpu_ms_per_annotation']:.2f} ms per annotation)"
                )
            o = run["open"]
            print(
                f"  open loop {o['offered_per_s']:.0f}/s offered: {o['achieved_per_s']:.1f}/s achieved  "
                f"next p50 {o['next_p50_ms']:.1f} p99 {o['next_p99_ms']:.1f} ms  "
                f"submit p50 {o['submit_p50_ms']:.1f} p99 {o['submit_p99_ms']:.1f} ms"
            )
            k = run["counts"]
            print(
                f"  stored {k['stored']} / acknowledged {k['acknowledged']}: lost {k['lost']}, "
                f"unacknowledged stored {k['unacknowledged_stored']}, duplicates {k['duplicates']}, "
                f"over overlap {k['over_overlap']}, done_count mismatches {k['done_count_mismatch']}, "
                f"409s {k['conflicts_409']}, errors {k['errors']} {k['first_errors']}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
