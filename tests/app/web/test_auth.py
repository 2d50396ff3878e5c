"""Login, logout, CSRF, throttling, roles and API tokens."""

import logging

import pytest

from tests.factories import csrf_from, session_csrf


def test_login_sets_signed_httponly_lax_cookie_and_logout_clears_it(client, make_user):
    user = make_user("annotator", password="s3cret-pass")
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": user.username, "password": "s3cret-pass", "csrf_token": token, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "rlhf_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert client.get("/", follow_redirects=False).headers["location"] == "/annotate"
    out = client.post("/logout", data={"csrf_token": session_csrf(client)}, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.clear()
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_tampered_cookie_is_anonymous(client, make_user, login):
    login(make_user("admin"))
    tampered = client.cookies.get("rlhf_session")[:-2] + "xx"
    client.cookies.clear()
    client.cookies.set("rlhf_session", tampered)
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


@pytest.mark.parametrize("password,active", [("wrong-password", True), ("password123", False)])
def test_wrong_password_or_inactive_user_is_refused(client, db, make_user, password, active):
    user = make_user("annotator")
    if not active:
        user.is_active = False
        db.commit()
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"username": user.username, "password": password, "csrf_token": token})
    assert response.status_code == 401
    assert "Wrong username or password" in response.text


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_csrf_is_403(client, make_user, token):
    user = make_user("annotator")
    client.get("/login")
    data = {"username": user.username, "password": "password123"}
    if token:
        data["csrf_token"] = token
    assert client.post("/login", data=data).status_code == 403


def test_login_throttled_after_ten_failures_per_user(client, make_user):
    user = make_user("annotator")
    token = csrf_from(client.get("/login").text)
    for _ in range(10):
        assert (
            client.post(
                "/login", data={"username": user.username, "password": "nope-nope", "csrf_token": token}
            ).status_code
            == 401
        )
    # Even the right password is refused while throttled: the count lives in the database.
    response = client.post("/login", data={"username": user.username, "password": "password123", "csrf_token": token})
    assert response.status_code == 429


def test_login_throttled_per_address_across_usernames(client, make_user):
    token = csrf_from(client.get("/login").text)
    for i in range(10):
        client.post("/login", data={"username": f"ghost{i}", "password": "nope-nope", "csrf_token": token})
    user = make_user("annotator")
    response = client.post("/login", data={"username": user.username, "password": "password123", "csrf_token": token})
    assert response.status_code == 429


def test_throttle_holds_across_app_instances(settings, make_user):
    """Two app instances (as two server processes) share the count through the database."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    user = make_user("annotator")
    for instance in (create_app(), create_app()):
        with TestClient(instance) as c:
            token = csrf_from(c.get("/login").text)
            for _ in range(5):
                c.post("/login", data={"username": user.username, "password": "bad-bad-bad", "csrf_token": token})
            last = c.post("/login", data={"username": user.username, "password": "password123", "csrf_token": token})
    assert last.status_code == 429


def test_open_redirect_is_refused(client, make_user):
    user = make_user("annotator")
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": user.username, "password": "password123", "csrf_token": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_passwords_and_tokens_never_logged(client, make_user, make_token, caplog):
    caplog.set_level(logging.DEBUG)
    user = make_user("admin", password="very-secret-pw")
    token = csrf_from(client.get("/login").text)
    client.post("/login", data={"username": user.username, "password": "very-secret-WRONG", "csrf_token": token})
    client.post("/login", data={"username": user.username, "password": "very-secret-pw", "csrf_token": token})
    bearer = make_token(user)
    client.get("/healthz", headers={"Authorization": f"Bearer {bearer}"})
    assert "very-secret" not in caplog.text and bearer not in caplog.text


def test_password_hash_is_argon2(make_user):
    assert make_user("annotator").password_hash.startswith("$argon2")


def test_token_is_stored_as_sha256_only(db, make_user, make_token):
    import hashlib

    from app.models import ApiToken

    user = make_user("admin")
    token = make_token(user)
    row = db.query(ApiToken).filter_by(user_id=user.id).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.token_hash
    assert len(token) >= 43  # 256 bits in urlsafe base64


def test_docs_admin_only_and_served_offline(client, make_user, login):
    assert client.get("/docs", follow_redirects=False).status_code == 303  # anonymous -> login
    login(make_user("annotator"))
    assert client.get("/docs").status_code == 403
    assert client.get("/openapi.json").status_code == 403
    client.cookies.clear()
    login(make_user("admin"))
    page = client.get("/docs")
    assert page.status_code == 200 and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page.text
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "rlhf-studio"


def test_docs_can_be_disabled(monkeypatch, settings, make_user):
    from fastapi.testclient import TestClient

    from app.main import create_app

    monkeypatch.setattr(settings, "docs_enabled", False)
    admin = make_user("admin")
    with TestClient(create_app()) as c:
        token = csrf_from(c.get("/login").text)
        c.post("/login", data={"username": admin.username, "password": "password123", "csrf_token": token})
        assert c.get("/docs").status_code == 404


def test_docs_offer_bearer_token_authorisation_for_the_api(client, make_user, login):
    """Swagger UI's "Authorize" needs a security scheme in the schema, and each API operation must name it."""
    login(make_user("admin"))
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: `rlhf tokens create --username NAME` or the users page.",
    }
    for path, method in (("/api/v1/jobs/{job_id}", "get"), ("/api/v1/exports/{fmt}", "get"), ("/api/v1/users", "get")):
        assert schema["paths"][path][method]["security"] == [{"HTTPBearer": []}], path
