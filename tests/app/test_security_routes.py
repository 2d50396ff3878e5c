"""Point 9: walk EVERY route of the app as anonymous, as an annotator and as a reviewer. Admin pages, admin APIs
and exports refuse all three; review pages and the review API refuse annotators (reviewers and admins only); every
other route refuses anonymous callers unless it is on the short public list."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute

from app import api, web

ROUTERS = [*api.ROUTERS, *web.ROUTERS]

# Routes anyone may call (login form, single sign-on, health checks).
PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/auth/oidc/login"),
    ("GET", "/auth/oidc/callback"),
    ("GET", "/health"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/health/ready"),
    ("GET", "/health/live"),
}
# Admin-only by path: every page under /admin, the leaderboard, the docs, and the admin APIs (exports included).
ADMIN_PATH = re.compile(
    r"^/(admin(/|$)|leaderboard$|docs|openapi\.json|"
    r"api/v1/(users|prompts|exports|stats|generate|models|jobs|rounds|gold|label-ai|leaderboard)(/|$))"
)
# Reviewers' (and admins') routes: the review pages and the review API.
REVIEW_PATH = re.compile(r"^/(review|api/v1/review)(/|$)")
# Admin-only routes on paths annotators may read (GET /api/v1/guidelines is theirs too; writing it is not).
ADMIN_METHODS = {("PUT", "/api/v1/guidelines")}
SAMPLE = {
    "job_id": "1",
    "user_id": "1",
    "token_id": "1",
    "model_id": "1",
    "fmt": "trl",
    "task_id": "1",
    "round_id": "1",
    "prompt_id": "1",
    "annotation_id": "1",
    "version_id": "1",
}


def all_routes() -> list[tuple[str, str]]:
    seen = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                    seen.add((method, route.path))
    return sorted(seen, key=lambda mp: (mp[1], mp[0]))


def concrete(path: str, sample: dict[str, str] = SAMPLE) -> str:
    """The path with each parameter filled in from `sample` ("1" for a name it lacks)."""
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: sample.get(m.group(1), "1"), path)


def refused(response) -> bool:
    """401/403, or (pages) a redirect to the login form."""
    if response.status_code in (401, 403):
        return True
    if response.status_code in (302, 303, 307) and response.headers.get("location", "").startswith("/login"):
        return True
    return response.status_code == 200 and response.headers.get("HX-Redirect", "").startswith("/login")


def _call(client, method: str, path: str, headers: dict | None = None):
    return client.request(method, concrete(path), headers=headers or {}, follow_redirects=False)


def admin_only(method: str, path: str) -> bool:
    return bool(ADMIN_PATH.match(path)) or (method, path) in ADMIN_METHODS


def review_only(method: str, path: str) -> bool:
    return bool(REVIEW_PATH.match(path))


def test_the_walk_covers_the_review_routes():
    review = [r for r in all_routes() if review_only(*r)]
    for needed in [
        ("GET", "/review"),
        ("GET", "/review/tasks/{task_id}"),
        ("POST", "/review/tasks/{task_id}"),
        ("GET", "/api/v1/review/queue"),
        ("GET", "/api/v1/review/{task_id}"),
        ("POST", "/api/v1/review/{task_id}"),
    ]:
        assert needed in review, needed
    assert not any(admin_only(*r) for r in review)


def test_the_walk_covers_my_admin_routes():
    routes = all_routes()
    admin = [r for r in routes if admin_only(*r)]
    for needed in [
        ("GET", "/admin"),
        ("POST", "/admin/prompts/upload"),
        ("GET", "/admin/exports/download"),
        ("GET", "/api/v1/exports/{fmt}"),
        ("GET", "/api/v1/stats"),
        ("POST", "/api/v1/users/{user_id}/tokens"),
        ("POST", "/api/v1/generate"),
        ("POST", "/admin/users/{user_id}/password"),
        ("PUT", "/api/v1/gold/{task_id}"),
        ("POST", "/api/v1/gold/qualification/{user_id}/reset"),
        ("POST", "/admin/gold/qualification/{user_id}/allow"),
        ("GET", "/admin/guidelines"),
        ("POST", "/admin/guidelines"),
        ("GET", "/admin/guidelines/versions/{version_id}"),
        ("PUT", "/api/v1/guidelines"),
        ("POST", "/admin/users/{user_id}/labels"),
        ("GET", "/api/v1/users/signals"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("POST", "/api/v1/label-ai"),
        ("GET", "/api/v1/label-ai/calibration"),
        ("GET", "/api/v1/rounds/{round_id}"),
        ("POST", "/api/v1/rounds/{round_id}/verdict"),
        ("POST", "/admin/rounds/{round_id}/verdict"),
        ("GET", "/api/v1/leaderboard"),
        ("GET", "/leaderboard"),
    ]:
        assert needed in admin, needed
    assert len(routes) > len(admin) > 30


def test_anonymous_is_refused_everywhere_but_public_routes(client):
    leaks = []
    for method, path in all_routes():
        if (method, path) in PUBLIC:
            continue
        # No body, no valid parameters: authentication comes first, so every route refuses (never a 422).
        response = _call(client, method, path)
        if not refused(response):
            leaks.append((method, path, response.status_code))
    assert not leaks, leaks


def test_annotator_is_refused_on_every_admin_route_by_page_and_by_api(client, make_user, make_token, login):
    annotator = make_user("annotator")
    token = make_token(annotator)
    csrf = login(annotator)
    leaks = []
    for method, path in all_routes():
        if not (admin_only(method, path) or review_only(method, path)):
            continue
        # As the logged-in browser (with a valid CSRF token, so only the role can refuse) and with a bearer token.
        for headers in ({"X-CSRF-Token": csrf}, {"Authorization": f"Bearer {token}", "X-CSRF-Token": csrf}):
            response = _call(client, method, path, headers)
            if response.status_code != 403 and not refused(response):
                leaks.append((method, path, response.status_code))
    assert not leaks, leaks


def test_reviewer_is_refused_on_every_admin_route_and_reaches_every_review_route(client, make_user, make_token, login):
    reviewer = make_user("reviewer")
    token = make_token(reviewer)
    csrf = login(reviewer)
    leaks, shut = [], []
    for method, path in all_routes():
        for headers in ({"X-CSRF-Token": csrf}, {"Authorization": f"Bearer {token}", "X-CSRF-Token": csrf}):
            if admin_only(method, path):
                response = _call(client, method, path, headers)
                if not refused(response):
                    leaks.append((method, path, response.status_code))
            elif review_only(method, path) and path.startswith("/api/") == ("Authorization" in headers):
                # past the role check (the API by token, pages by cookie): the sample task does not exist or the
                # body is missing (404, 422), never refused
                response = _call(client, method, path, headers)
                if refused(response):
                    shut.append((method, path, response.status_code))
    assert not leaks, leaks
    assert not shut, shut


def test_review_routes_open_to_an_admin(client, api):
    _, headers = api("admin")
    assert client.get("/api/v1/review/queue", headers=headers).status_code == 200


def test_admin_routes_open_to_an_admin(client, make_user, api):
    _, headers = api("admin")
    for path in ("/api/v1/stats", "/api/v1/users", "/api/v1/prompts", "/api/v1/models"):
        assert client.get(path, headers=headers).status_code == 200, path


def test_an_anonymous_api_body_is_refused_before_it_is_parsed(client):
    """FastAPI parses a route's declared body before its dependencies: the 401 comes from the edge, so a body that
    is not even JSON gets 401 (not 422) on every kind of API route."""
    for path in ("/api/v1/users", "/api/v1/annotations", "/api/v1/tasks/retire", "/api/v1/rounds"):
        response = client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
    assert client.post("/api/v1/users", headers={"Authorization": "Basic eA=="}, json={}).status_code == 401


def test_a_wrong_token_is_refused_before_the_body_is_parsed(client, api):
    """A token that is there but unknown or revoked is found out at the edge too: a non-JSON body gets 401, not the
    422 of a route that parsed it first, on the admin API and on both paths of a submit (the small one the fast
    path reads, and a large one)."""
    wrong = {"Authorization": "Bearer not-a-token", "Content-Type": "application/json"}
    for path in ("/api/v1/users", "/api/v1/annotations", "/api/v1/tasks/1/skip", "/api/v1/rounds"):
        response = client.post(path, content=b"{not json", headers=wrong)
        assert response.status_code == 401 and response.json()["detail"] == "unknown or revoked token", path
    large = b"{not json" + b" " * (100 * 1024)
    assert client.post("/api/v1/annotations", content=large, headers=wrong).status_code == 401
    # a known token still reaches the route, which says what is wrong with the body
    _, headers = api("admin")
    assert client.post("/api/v1/users", content=b"{not json", headers={**wrong, **headers}).status_code == 422


def test_a_wrong_token_upload_is_refused_before_any_of_it_is_read(client):
    """An upload route takes bodies up to the upload maximum: with a wrong token not one byte of it is received."""
    import asyncio

    received = []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/tasks",
        "raw_path": b"/api/v1/tasks",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", b"Bearer not-a-token"),
            (b"content-type", b"application/json"),
            (b"content-length", str(40 * 1024 * 1024).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 401 and received == []
