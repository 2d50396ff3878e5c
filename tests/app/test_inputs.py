"""app.inputs, as every route applies it: ids and offsets beyond 64 bits, lone surrogates, integers too long to
convert, NUL and bidi overrides in prompts, and unknown fields on admin APIs all get a 4xx with a message (never a
500), and nothing is stored."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from app.models import Annotation, Prompt, Task
from tests.factories import make_tasks, task_line

HUGE = 2**64  # past SQLite's (and PostgreSQL's bigint) range


def _detail(response) -> str:
    return json.dumps(response.json())


@pytest.mark.parametrize(
    "method,path,role",
    [
        ("DELETE", f"/api/v1/annotations/{HUGE}", "annotator"),
        ("GET", f"/api/v1/annotations?offset={HUGE}", "annotator"),
        ("POST", f"/api/v1/tasks/{HUGE}/skip", "annotator"),
        ("GET", f"/api/v1/prompts?offset={HUGE}", "admin"),
        ("PATCH", f"/api/v1/users/{HUGE}", "admin"),
        ("GET", f"/api/v1/users/{HUGE}/tokens", "admin"),
        ("GET", f"/api/v1/jobs/{HUGE}", "admin"),
        ("GET", f"/api/v1/jobs/1/metrics?after={HUGE}", "admin"),
        ("POST", f"/api/v1/models/{HUGE}/promote", "admin"),
        ("GET", f"/api/v1/exports/trl?until_id={HUGE}", "admin"),
    ],
)
def test_ids_and_offsets_beyond_64_bits_are_422(client, api, method, path, role):
    _, headers = api(role)
    body = {"reason": "r"} if path.endswith("/skip") else {} if method in ("PATCH", "POST") else None
    response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == 422, (path, response.text)
    assert "less than or equal to 9223372036854775807" in _detail(response)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_submit_for_a_task_id_beyond_64_bits_is_422(client, db, api, fast_path):
    _, headers = api()
    headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    url = "/api/v1/annotations" + ("" if fast_path else "?via=route")  # a query string skips the fast path
    response = client.post(url, headers=headers, json={"task_id": 2**63, "choice": "tie"})
    assert response.status_code == 422 and "task_id" in _detail(response)


def test_a_lone_surrogate_in_a_critique_is_422_and_nothing_is_stored(client, db, api):
    (task_id,) = make_tasks(db, task_line())
    _, headers = api()
    offer = client.get("/api/v1/tasks/next", headers=headers).json()
    body = '{"task_id": ' + str(offer["task_id"]) + ', "choice": "tie", "critique": "bad \\ud800 text"}'
    for url in ("/api/v1/annotations", "/api/v1/annotations?via=route"):
        response = client.post(
            url,
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex, "content-type": "application/json"},
            content=body.encode(),
        )
        assert response.status_code == 422 and "surrogate" in _detail(response), response.text
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Annotation)) == 0 and task_id == offer["task_id"]


def test_a_lone_surrogate_in_a_new_users_name_is_422(client, api):
    _, headers = api("admin")
    response = client.post(
        "/api/v1/users",
        headers={**headers, "content-type": "application/json"},
        content=b'{"username": "a\\udc00b", "password": "long-password"}',
    )
    assert response.status_code == 422 and response.json()["detail"].startswith("username: ")


def test_an_integer_of_5000_digits_is_422(client, db, api):
    _, headers = api("admin")
    line = json.dumps(task_line())[:-1] + ', "priority": ' + "9" * 5000 + "}"
    response = client.post(
        "/api/v1/tasks", headers={**headers, "content-type": "application/json"}, content=f"[{line}]".encode()
    )
    assert response.status_code == 422 and "not JSON" in response.json()["detail"]
    prompts = client.post(
        "/api/v1/prompts",
        headers={**headers, "content-type": "application/json"},
        content=('[{"prompt": "p", "n": ' + "9" * 5000 + "}]").encode(),
    )
    assert prompts.status_code == 422
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Task)) == 0


@pytest.mark.parametrize("char", ["\x00", "\u202e", "\u2066"])
def test_nul_and_bidi_overrides_in_prompts_are_422_naming_the_item(client, db, api, char):
    _, headers = api("admin")
    prompts = client.post(
        "/api/v1/prompts", headers=headers, json=[{"prompt": "fine"}, {"prompt": f"evil {char} text"}]
    )
    assert prompts.status_code == 422, prompts.text
    assert prompts.json()["detail"]["errors"][0].startswith("body:2:"), prompts.json()
    chat = client.post("/api/v1/prompts", headers=headers, json=[{"messages": [{"role": "user", "content": char}]}])
    assert chat.status_code == 422 and "messages[0].content" in _detail(chat)
    tasks = client.post("/api/v1/tasks", headers=headers, json=[task_line(), {**task_line(), "prompt": f"a{char}b"}])
    assert tasks.status_code == 422 and tasks.json()["errors"][0]["line"] == 2, tasks.text
    response = task_line()
    response["responses"] = ["fine", f"evil{char}"]
    tasks = client.post("/api/v1/tasks", headers=headers, json=[response])
    assert tasks.status_code == 422 and "responses[1]" in tasks.json()["errors"][0]["reason"]
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Prompt)) == 0


@pytest.mark.parametrize(
    "method,path,body,unknown",
    [
        ("POST", "/api/v1/users", {"username": "u1", "password": "long-password", "is_admin": True}, "is_admin"),
        ("PATCH", "/api/v1/users/{me}", {"is_active": True, "colour": "blue"}, "colour"),
        ("POST", "/api/v1/users/{me}/tokens", {"name": "t", "scope": "all"}, "scope"),
        ("POST", "/api/v1/models", {"path": "/x", "name": "m", "kind": "policy", "tag": "x"}, "tag"),
        ("POST", "/api/v1/generate", {"count": 1, "temprature": 0.5}, "temprature"),
        ("POST", "/api/v1/rounds", {"algo": "dpo", "bogus": 1}, "bogus"),
        ("PUT", "/api/v1/rounds/schedule", {"enabled": False, "bogus": 1}, "bogus"),
        ("POST", "/api/v1/label-ai", {"bogus": 1}, "bogus"),
    ],
)
def test_unknown_fields_on_admin_apis_are_422_naming_them(client, api, method, path, body, unknown):
    admin, headers = api("admin")
    response = client.request(method, path.format(me=admin.id), headers=headers, json=body)
    assert response.status_code == 422, (path, response.text)
    assert f"{unknown}: Extra inputs are not permitted" in response.json()["detail"], response.text


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/api/v1/annotations?via=route", {"task_id": 1, "choice": "tie", "time_spent_ms": 2**40}),
        ("POST", "/api/v1/generate", {"priority": 2**70}),
        ("PUT", "/api/v1/rounds/schedule", {"min_new_annotations": 2**40}),
        ("PUT", "/api/v1/rounds/schedule", {"every_minutes": 1e300}),
    ],
)
def test_numbers_past_their_columns_are_4xx(client, api, method, path, body):
    _, headers = api("annotator" if "annotations" in path else "admin")
    response = client.request(method, path, headers={**headers, "Idempotency-Key": "k"}, json=body)
    assert response.status_code == 422, response.text
    assert next(iter(k for k in body if k not in ("task_id", "choice"))) in response.json()["detail"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", f"/admin/jobs/{HUGE}"),
        ("POST", f"/admin/jobs/{HUGE}/cancel"),
        ("GET", f"/admin/rounds/{HUGE}"),
        ("POST", f"/admin/models/{HUGE}/promote"),
        ("POST", f"/admin/users/{HUGE}/active"),
        ("GET", f"/admin/tasks?page={HUGE}"),
        ("GET", f"/admin/prompts?page={2**62}"),
    ],
)
def test_page_ids_and_page_numbers_beyond_64_bits_are_422(client, make_user, login, method, path):
    csrf = login(make_user("admin"))
    response = client.request(method, path, headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert response.status_code == 422, (path, response.status_code, response.text[:300])


def test_the_annotate_form_with_a_task_id_beyond_64_bits_is_422(client, make_user, login):
    csrf = login(make_user("annotator"))
    response = client.post("/annotate/submit", data={"csrf_token": csrf, "task_id": str(HUGE), "pick": "tie"})
    assert response.status_code == 422 and "task id" in response.text
