"""GET /api/v1/exports/{format}: the file with its sha256 (`Repr-Digest`) and row count (`X-Row-Count`)."""

import base64
import hashlib
import json

import pytest

from tests.conftest import BACKENDS
from tests.factories import build_dataset, transaction_held


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_get_export_digest_row_count_filters_and_cleanup(client, db, api, settings):
    build_dataset(db)
    _, headers = api("admin")
    res = client.get("/api/v1/exports/trl", params={"include_ties": "true", "source": "human"}, headers=headers)
    assert res.status_code == 200
    digest = base64.b64encode(hashlib.sha256(res.content).digest()).decode()
    assert res.headers["repr-digest"] == f"sha-256=:{digest}:"
    lines = [json.loads(x) for x in res.text.splitlines()]
    assert res.headers["x-row-count"] == str(len(lines)) == "9" and all("tie" in x for x in lines)  # 1 rewrite pair
    again = client.get("/api/v1/exports/trl", params={"include_ties": "true", "source": "human"}, headers=headers)
    assert again.content == res.content
    res = client.get("/api/v1/exports/rich", params={"annotator": "bob", "csv": "true"}, headers=headers)
    assert res.status_code == 200 and res.headers["x-row-count"] == "4" and res.text.startswith("annotation_id,")
    assert client.get("/api/v1/exports/parquet", headers=headers).status_code == 404
    assert client.get("/api/v1/exports/trl", params={"since": "soon"}, headers=headers).status_code == 422
    assert client.get("/api/v1/exports/kto", params={"csv": "true"}, headers=headers).status_code == 422
    assert not list((settings.data_dir / "exports").glob("*.jsonl"))  # served, then removed


# ---- a slow export reader beside annotators ---------------------------------------------------------------------


class SlowReader:
    """An HTTP client that reads the response head, then nothing more until closed: the server's send of the body
    waits on it (a small receive buffer keeps what the kernel takes in for it small)."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        import socket

        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((host, int(port)))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1024)
        self.head = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")

    def close(self) -> None:
        self.sock.close()


def _big_rich_export(db, annotations: int = 40, text_bytes: int = 30_000) -> None:
    """Rich export lines of ~3 x text_bytes each: far more than the socket buffers between server and reader."""
    from tests.factories import annotate_pairwise, make_annotator, pairwise_task

    annotator = make_annotator(db)
    for i in range(annotations):
        task, gens = pairwise_task(
            db, prompt_text=f"{i} " + "p" * text_bytes, texts=("a" * text_bytes, "b" * text_bytes)
        )
        annotate_pairwise(db, task, annotator, chosen=gens[0])
    db.commit()


def _annotate_for(base_url: str, annotators: list[dict[str, str]], seconds: float) -> list[float]:
    """Each annotator takes and submits tasks for `seconds`; the latency of every next and submit request."""
    import threading
    import time
    import uuid

    import httpx

    latencies: list[float] = []
    errors: list[BaseException] = []

    def run(headers: dict[str, str]) -> None:
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            try:
                while time.monotonic() < deadline:
                    t0 = time.monotonic()
                    offer = http.get("/api/v1/tasks/next")
                    latencies.append(time.monotonic() - t0)
                    assert offer.status_code in (200, 204), offer.text
                    if offer.status_code == 204:
                        continue
                    t0 = time.monotonic()
                    done = http.post(
                        "/api/v1/annotations",
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                        json={"task_id": offer.json()["task_id"], "choice": "tie"},
                    )
                    latencies.append(time.monotonic() - t0)
                    assert done.status_code == 201, done.text
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(headers,)) for headers in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sorted(latencies)


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_slow_export_reader_does_not_hold_up_annotators(live_server, db, api, backend, db_url):
    """An admin downloads the rich export and stops reading mid-body; meanwhile annotators take and submit tasks.
    Before: the admin's token lookup kept its transaction (on SQLite the writer gate) until the whole response was
    sent, so every annotator waited for the reader; on PostgreSQL the connection sat idle in transaction."""
    import threading
    import time

    from tests.factories import make_tasks, task_line

    _big_rich_export(db)
    make_tasks(db, *[task_line() for _ in range(300)])
    _, admin = api("admin")
    annotators = [api()[1] for _ in range(2)]
    alone = _annotate_for(live_server, annotators, seconds=1.0)

    reader = SlowReader(live_server, "/api/v1/exports/rich", admin)
    assert reader.head.startswith("HTTP/1.1 200"), reader.head
    length = int(next(x for x in reader.head.split("\r\n") if x.lower().startswith("content-length:")).split(":")[1])
    assert length > 2_000_000  # more than the buffers can take: the body's send waits on the reader
    stop_reading = threading.Timer(3.0, reader.close)  # lets annotators stuck behind the reader finish (before)
    stop_reading.start()
    try:
        time.sleep(0.5)
        held = transaction_held(db_url)
        beside = _annotate_for(live_server, annotators, seconds=1.5)
    finally:
        stop_reading.cancel()
        reader.close()
    assert not held  # before: SQLite's writer gate, or PostgreSQL's connection idle in transaction
    p50, p99 = _quantile(beside, 0.5), _quantile(beside, 0.99)
    print(
        f"{backend}: alone p50 {_quantile(alone, 0.5) * 1e3:.1f} ms p99 {_quantile(alone, 0.99) * 1e3:.1f} ms; "
        f"beside a slow export reader p50 {p50 * 1e3:.1f} ms p99 {p99 * 1e3:.1f} ms ({len(beside)} requests)"
    )
    # before: the first request of each annotator waited the reader's 3 s out
    assert p99 < max(1.0, 5 * _quantile(alone, 0.99)), (p50, p99)


def test_an_empty_export_is_a_404_with_the_reason_not_an_empty_file(client, db, api, settings):
    build_dataset(db)
    _admin, headers = api("admin")
    answer = client.get("/api/v1/exports/sft?source=ai", headers=headers)
    assert answer.status_code == 404
    assert "empty sft export: no annotation matches (source=ai)" in answer.json()["detail"]
    assert list((settings.data_dir / "exports").iterdir()) == []  # nothing half-written is kept


def test_an_export_carries_annotator_weights_only_when_asked_and_gold_is_refused_409(client, db, api):
    build_dataset(db)
    _, headers = api("admin")
    plain = [json.loads(x) for x in client.get("/api/v1/exports/trl", headers=headers).text.splitlines()]
    res = client.get("/api/v1/exports/trl", params={"annotator_weighting": "dawid_skene"}, headers=headers)
    assert res.status_code == 200
    weighted = [json.loads(x) for x in res.text.splitlines()]
    assert all("weight" not in line for line in plain)
    assert [{k: v for k, v in line.items() if k != "weight"} for line in weighted] == plain
    assert all(0.0 <= line["weight"] <= 1.0 for line in weighted)
    res = client.get("/api/v1/exports/trl", params={"annotator_weighting": "gold"}, headers=headers)
    assert res.status_code == 409 and "no gold tasks answered" in res.json()["detail"]
    res = client.get("/api/v1/exports/trl", params={"annotator_weighting": "loud"}, headers=headers)
    assert res.status_code == 422 and "annotator_weighting must be one of" in res.json()["detail"]
