"""Anonymous oversize bodies against a live `rlhf serve`: the server's resident memory (peak, VmHWM) and what it
answers when a client without a token, or with a token that is no one's, sends 200 MiB, declared (Content-Length)
or chunked.

    .venv/bin/python bench/anonymous_body.py [--root CHECKOUT] [--mib 200]

`--root` runs another checkout's code (e.g. an older commit from `git archive`), for a before/after on the same
machine. The anchor is the same server's RSS at rest before the first request.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (path, chunked, token): None sends no Authorization header, a string sends it as a bearer token
PROBES = [
    ("/api/v1/annotations", False, None),
    ("/api/v1/users", False, None),
    ("/api/v1/users", True, None),
    ("/api/v1/annotations", True, "not-a-token"),
    ("/api/v1/tasks", True, "not-a-token"),  # an import route: the upload maximum, not the small limit
]


def memory_mib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def send(port: int, path: str, size: int, chunked: bool, token: str | None = None) -> dict:
    """Send up to `size` bytes of body (as fast as the server takes them) and read the status line."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    conn.sendall(head.encode())
    piece, sent, started = b"[" * (1 << 20), 0, time.perf_counter()
    try:
        while sent < size:
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            conn.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: the rest was never sent
    try:
        status = conn.recv(200).split(b"\r\n")[0].decode(errors="replace")
    except OSError as exc:
        status = repr(exc)
    conn.close()
    return {"answer": status, "sent_mib": sent >> 20, "s": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code serves")
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="rlhf-bench-body-")
    env = {**os.environ, "PYTHONPATH": str(args.root), "RLHF_DATA_DIR": data, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-c", "from app.cli import main; main()"]
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=args.root, check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=args.root, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        print(json.dumps({"code": str(args.root), "at rest": memory_mib(server.pid)}))
        for path, chunked, token in PROBES:
            result = send(port, path, args.mib << 20, chunked, token)
            time.sleep(0.3)
            who = "anonymous" if token is None else "wrong token"
            print(json.dumps({"path": path, "chunked": chunked, "caller": who, **result, **memory_mib(server.pid)}))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
