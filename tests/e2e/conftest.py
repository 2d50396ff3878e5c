"""End-to-end fixtures: real `rlhf serve` / `rlhf worker` processes on a fresh data dir and database, stopped
(and never left behind) at the end of each test. The tiny embedded world comes from tests/conftest.py (once per run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.factories import ROOT, free_port, rlhf_command


@dataclass
class Stack:
    """A data dir + database, and the server and worker processes running on it."""

    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rlhf(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*rlhf_command(), *args],
            env=self.env,
            cwd=self.root,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"rlhf {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*rlhf_command(), *args], env={**self.env, **env}, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_server(self) -> subprocess.Popen:
        self.port = self.port or free_port()
        proc = self.start("serve", "serve", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"rlhf serve exited {proc.returncode}: {self.log('serve')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"rlhf serve did not answer in 60 s: {self.log('serve')}")

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def admin_token(self) -> str:
        self.rlhf(
            "users",
            "create",
            "--username",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
            input="e2e-admin-password\n",
        )
        return self.rlhf("tokens", "create", "--username", "admin").stdout.strip()


@pytest.fixture
def stack(request, tmp_path, backend) -> Stack:
    """On a fresh SQLite file by default; on a fresh PostgreSQL database (a copy of the migrated template) where a
    test is parametrized with `backend` (tests.conftest.BACKENDS, indirect)."""
    data = tmp_path / "data"
    data.mkdir()
    url = request.getfixturevalue("db_url") if backend == "postgres" else f"sqlite:///{data / 'rlhf.sqlite3'}"
    env = {
        **os.environ,
        "RLHF_DATA_DIR": str(data),
        "RLHF_DATABASE_URL": url,
        "RLHF_SECRET_KEY": "e2e-secret",
        "RLHF_OFFLINE_ASSETS": "1",
        "PYTHONPATH": str(ROOT),
        "RLHF_WORKER_POLL_S": "0.2",
        "RLHF_HEARTBEAT_S": "0.5",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    s = Stack(root=tmp_path, env=env)
    s.rlhf("db", "upgrade")
    yield s
    s.stop_all()


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
