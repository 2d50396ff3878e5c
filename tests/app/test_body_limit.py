"""app.body_limit: one request-body limit in front of everything. An oversize body is refused 413 before it is
read (by its Content-Length, or by counting a chunked one), the routes behind never see it, upload routes take
the upload maximum; and anonymous requests are refused before their bodies are read."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

UPLOAD = 50 * 1024 * 1024


class Never:
    """An ASGI receive for a body that is never sent: reading it fails the test."""

    calls = 0

    async def __call__(self):
        self.calls += 1
        raise AssertionError("the body was read")


class Endless:
    """An ASGI receive for a chunked body of 64 MiB (as good as endless here); counts what was read."""

    def __init__(self, chunk: int = 64 * 1024, total: int = 64 * 1024 * 1024) -> None:
        self.chunk, self.total, self.read = chunk, total, 0

    async def __call__(self):
        self.read += self.chunk
        return {"type": "http.request", "body": b"x" * self.chunk, "more_body": self.read < self.total}


def call(app, method: str, path: str, headers: dict[str, str], receive) -> tuple[int, dict[str, str], bytes]:
    """One request through the whole ASGI app (every middleware), answered without a server."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def started_app(app, client):
    """The app, its lifespan started (the TestClient's)."""
    return app


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path", ["/api/v1/annotations", "/api/v1/users", "/api/v1/tasks/1/skip", "/login"])
def test_an_oversize_declared_body_is_413_before_it_is_read(started_app, path):
    receive = Never()
    status, headers, body = call(started_app, "POST", path, {**JSON, "content-length": str(200 * 1024 * 1024)}, receive)
    assert status == 413 and b"byte limit" in body and receive.calls == 0
    assert headers["connection"] == "close"


def test_an_oversize_chunked_body_is_413_once_the_limit_is_passed(started_app, settings, api):
    _, auth = api("admin")
    for path in ("/api/v1/annotations", "/api/v1/users"):  # the annotate fast path and a route
        receive = Endless()
        headers = {**JSON, "authorization": auth["Authorization"], "idempotency-key": "k"}
        status, _headers, body = call(started_app, "POST", path, headers, receive)
        assert status == 413 and b"byte limit" in body, (path, body)
        assert settings.max_body_bytes < receive.read <= settings.max_body_bytes + receive.chunk
        # with a token that is no one's, not one chunk is read
        receive = Endless()
        status, _headers, body = call(started_app, "POST", path, {**headers, "authorization": "Bearer x"}, receive)
        assert status == 401 and receive.read == 0, (path, body)


@pytest.mark.parametrize("path", ["/api/v1/annotations", "/api/v1/tasks", "/api/v1/prompts"])
def test_an_anonymous_body_within_the_limit_is_401_unread(started_app, path):
    """The annotate fast path and the import routes refuse a caller without a token before reading the body."""
    receive = Never()
    status, headers, body = call(started_app, "POST", path, {**JSON, "content-length": "1000"}, receive)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and receive.calls == 0, body


def test_upload_routes_take_the_upload_maximum(started_app, settings):
    """A body over the small limit but within the upload maximum reaches the upload route, which refuses the
    anonymous caller before reading it."""
    length = str(settings.max_body_bytes * 4)
    assert settings.max_body_bytes * 4 < settings.max_upload_bytes
    receive = Never()
    status, _headers, _body = call(started_app, "POST", "/api/v1/tasks", {**JSON, "content-length": length}, receive)
    assert status == 401 and receive.calls == 0
    status, _headers, _body = call(started_app, "POST", "/api/v1/users", {**JSON, "content-length": length}, Never())
    assert status == 413


def test_a_body_within_the_limit_goes_through(client, api):
    _, headers = api("admin")
    created = client.post("/api/v1/users", headers=headers, json={"username": "bob", "password": "pw-123456"})
    assert created.status_code == 201, created.text


def test_anonymous_upload_to_the_admin_page_is_refused_before_its_body_is_spooled(started_app):
    """verify_csrf would parse (and spool) the multipart form to find its token: the page's admin check runs
    first, so the anonymous caller is sent to the login form with the body unread."""
    receive = Never()
    headers = {"content-type": "multipart/form-data; boundary=x", "content-length": str(40 * 1024 * 1024)}
    status, out, _body = call(started_app, "POST", "/admin/tasks/upload", headers, receive)
    assert status == 303 and out["location"].startswith("/login") and receive.calls == 0


def test_an_annotators_upload_to_the_admin_page_is_refused_before_its_body_is_read(client, started_app, make_user):
    from tests.factories import csrf_from

    annotator = make_user("annotator")
    page = client.get("/login")
    client.post(
        "/login",
        data={"username": annotator.username, "password": "password123", "csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    cookie = client.cookies.get("rlhf_session")
    receive = Never()
    headers = {
        "content-type": "multipart/form-data; boundary=x",
        "content-length": str(40 * 1024 * 1024),
        "cookie": f"rlhf_session={cookie}",
    }
    status, _out, _body = call(started_app, "POST", "/admin/prompts/upload", headers, receive)
    assert status == 403 and receive.calls == 0


def test_the_csrf_header_is_checked_without_reading_the_form(client, started_app, make_user, login, db):
    """With the token in X-CSRF-Token (htmx sends it from hx-headers), a form-encoded body is not parsed."""
    from tests.factories import make_job

    job = make_job(db, kind="generate")
    db.commit()
    csrf = login(make_user("admin"))
    cookie = client.cookies.get("rlhf_session")
    receive = Never()
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "content-length": "1000",
        "cookie": f"rlhf_session={cookie}",
        "x-csrf-token": csrf,
    }
    status, _out, _body = call(started_app, "POST", f"/admin/jobs/{job.id}/cancel", headers, receive)
    assert status == 303 and receive.calls == 0


# ---- a live server: the client stops sending, the answer comes anyway ----------------------------------------


@pytest.fixture
def live_server(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _answer_after_a_partial_body(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)  # and nothing more: the rest of the claimed body never comes
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("path", ["/api/v1/annotations", "/api/v1/users"])
def test_a_live_server_answers_413_to_a_200_mb_body_it_never_receives(live_server, path):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = _answer_after_a_partial_body(live_server, head, b"[" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_live_server_answers_413_to_an_endless_chunked_body(live_server, settings, api):
    _, auth = api("admin")
    head = (
        b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {auth['Authorization']}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(settings.max_body_bytes // len(chunk) + 2))
    answer = _answer_after_a_partial_body(live_server, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
