"""Browser tests: a real `rlhf serve` on the test's database, and Debian's chromium driven through Playwright.

One launcher for every browser test: `browser` starts chromium from /usr/bin (never `playwright install`, which
downloads); `server` migrates the test's database with `rlhf db upgrade` and serves it on a free port with the
vendored front-end assets (`cdn_server`: the CDN ones, as by default); `worker` runs `rlhf worker` on the same
database for tests that watch jobs run. Screenshots go to test-artifacts/ (ARTIFACTS).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.factories import ROOT, free_port, rlhf_command, wait_for

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server_env(settings) -> dict[str, str]:
    """The environment of the test's `rlhf` processes: its data dir and database."""
    return {
        **os.environ,
        "RLHF_DATA_DIR": str(settings.data_dir),
        "RLHF_DATABASE_URL": settings.sqlalchemy_url,
        "RLHF_SECRET_KEY": "test-secret-key",
        "RLHF_OFFLINE_ASSETS": "1",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _serve(server_env, tmp_path, *, offline_assets: bool):
    env = {**server_env, "RLHF_OFFLINE_ASSETS": "1" if offline_assets else "0"}
    subprocess.run([*rlhf_command(), "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*rlhf_command(), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None  # died: stop waiting, the assert below says so

        wait_for(up, timeout=60, interval=0.2, what="the server")
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        yield base
        _stop(proc)


@pytest.fixture
def server(server_env, tmp_path):
    """The base URL of `rlhf serve` on this test's database (stopped at the end of the test)."""
    yield from _serve(server_env, tmp_path, offline_assets=True)


@pytest.fixture
def cdn_server(server_env, tmp_path):
    """The same, with the default front-end assets: the CDN copies, the vendored ones as their fallback."""
    yield from _serve(server_env, tmp_path, offline_assets=False)


@pytest.fixture
def worker(server, server_env, tmp_path):
    """Starts `rlhf worker` on the server's database when called (polling every 0.2 s); stopped at the end."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with open(tmp_path / "worker.log", "ab") as log:
            env = {**server_env, "RLHF_WORKER_POLL_S": "0.2", "RLHF_HEARTBEAT_S": "0.5"}
            procs.append(subprocess.Popen([*rlhf_command(), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    yield start
    for proc in procs:
        _stop(proc)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()
