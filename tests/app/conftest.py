"""A live server: the test's app under a real uvicorn in a thread, for what the in-process TestClient cannot show
(a client that reads its response slowly, the address uvicorn reports for a request)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from tests.factories import free_port, wait_for


@pytest.fixture
def serve_live() -> Iterator[Callable[..., str]]:
    """serve_live(app_or_factory, **uvicorn_options) -> the base URL of a uvicorn server running it (stopped at the
    end of the test)."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(target, **options) -> str:
        options = {"host": "127.0.0.1", "log_level": "warning", "access_log": False, **options, "port": free_port()}
        options.pop("workers", None)  # one server in this process
        server = uvicorn.Server(uvicorn.Config(target, **options))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, timeout=30, what="the live server to start")
        return f"http://127.0.0.1:{options['port']}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_server(app, serve_live) -> str:
    """The base URL of this test's app under uvicorn."""
    return serve_live(app)
