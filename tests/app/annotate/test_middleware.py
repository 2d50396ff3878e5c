"""The annotate fast path answers well-formed next/submit requests itself and hands everything else, body and all,
to the FastAPI routes: the answers are the same either way."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.annotate.middleware import AnnotateFastPath
from tests.factories import make_annotators, make_tasks, task_line


class Recorder:
    """An inner app that records what reaches it and answers 418."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def fast(settings):
    inner = Recorder()
    return TestClient(AnnotateFastPath(inner)), inner  # no lifespan: the recorder only speaks http


def test_well_formed_next_and_submit_never_reach_the_routes(fast, db, make_token):
    client, inner = fast
    (task_id,) = make_tasks(db, task_line(overlap=1))
    (user,) = make_annotators(db, 1)
    auth = {"Authorization": f"Bearer {make_token(user)}"}
    offer = client.get("/api/v1/tasks/next", headers=auth)
    assert offer.status_code == 200 and offer.json()["task_id"] == task_id
    ids = [r["id"] for r in offer.json()["responses"]]
    body = {"task_id": task_id, "choice": "chosen", "chosen_id": ids[0], "strength": 2}
    keyed = {**auth, "Idempotency-Key": "k1"}
    first = client.post("/api/v1/annotations", headers=keyed, json=body)
    assert first.status_code == 201, first.text
    assert client.post("/api/v1/annotations", headers=keyed, json=body).json() == first.json()  # replay
    assert client.post("/api/v1/annotations", headers=keyed, json={**body, "strength": 3}).status_code == 409
    assert client.get("/api/v1/tasks/next", headers=auth).status_code == 204
    denied = client.get("/api/v1/tasks/next", headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert inner.seen == []


@pytest.mark.parametrize("case", ["no key", "long key", "form body", "unknown field", "not json", "query string"])
def test_malformed_submits_go_to_the_route_with_their_body(fast, db, make_token, case):
    client, inner = fast
    (user,) = make_annotators(db, 1)
    body = json.dumps({"task_id": 1, "choice": "tie"}).encode()
    auth = {"Authorization": f"Bearer {make_token(user)}"}
    headers = {**auth, "Idempotency-Key": "k", "Content-Type": "application/json"}
    path = "/api/v1/annotations"
    if case == "no key":
        del headers["Idempotency-Key"]
    elif case == "long key":
        headers["Idempotency-Key"] = "k" * 129
    elif case == "form body":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif case == "unknown field":
        body = json.dumps({"task_id": 1, "colour": "blue"}).encode()
    elif case == "not json":
        body = b"{task_id"
    else:
        path += "?x=1"
    assert client.post(path, headers=headers, content=body).status_code == 418
    assert inner.seen == [("POST", "/api/v1/annotations", body)]


def test_a_malformed_submit_with_a_wrong_token_is_refused_not_parsed(fast):
    """The route would validate the body before its dependency checks the token (422 to a stranger): the fast path
    checks the token first."""
    client, inner = fast
    headers = {"Authorization": "Bearer nope", "Idempotency-Key": "k", "Content-Type": "application/json"}
    response = client.post("/api/v1/annotations", headers=headers, content=b"{task_id")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert inner.seen == []


def test_the_route_and_the_fast_path_answer_alike(client, db, api):
    """Through the whole app: the same request, fast (no query string) and routed (a query string), same answer."""
    (task_id,) = make_tasks(db, task_line(overlap=2))
    _, auth = api()
    fast_offer = client.get("/api/v1/tasks/next", headers=auth)
    routed_offer = client.get("/api/v1/tasks/next?via=route", headers=auth)  # the lease held: the same offer
    assert fast_offer.json() == routed_offer.json() and fast_offer.status_code == routed_offer.status_code == 200
    ids = [r["id"] for r in fast_offer.json()["responses"]]
    body = {"task_id": task_id, "choice": "chosen", "chosen_id": ids[1], "strength": 1}
    created = client.post("/api/v1/annotations", headers={**auth, "Idempotency-Key": "a"}, json=body)
    replayed = client.post("/api/v1/annotations?via=route", headers={**auth, "Idempotency-Key": "a"}, json=body)
    assert (created.status_code, replayed.status_code) == (201, 200) and created.json() == replayed.json()
    for path in ("/api/v1/tasks/next", "/api/v1/tasks/next?via=route"):
        denied = client.get(path, headers={"Authorization": "Bearer nope"})
        assert (denied.status_code, denied.json(), denied.headers["www-authenticate"]) == (
            401,
            {"detail": "unknown or revoked token"},
            "Bearer",
        )
