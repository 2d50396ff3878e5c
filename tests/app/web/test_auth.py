"""Login, logout, CSRF, throttling, roles and API tokens."""

import logging

import pytest

from tests.conftest import BACKENDS
from tests.factories import csrf_from, session_csrf, transaction_held


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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_passwords_are_verified_with_no_transaction_open(client, db, make_user, db_url, monkeypatch):
    """argon2 takes ~0.1 s of CPU per login: before, a failed login held its transaction (on SQLite the writer gate,
    so every annotator waited) across it. The failure still counts."""
    import time

    from sqlalchemy import func, select

    from app.models import LoginFailure
    from app.security import verify_password
    from app.services import users

    held: list[bool] = []

    def watched_verify(password_hash, password) -> bool:
        time.sleep(0.4)  # longer than transaction_held's "more than a moment"
        held.append(transaction_held(db_url))
        return verify_password(password_hash, password)

    monkeypatch.setattr(users, "verify_password", watched_verify)
    user = make_user("annotator")
    token = csrf_from(client.get("/login").text)
    data = {"username": user.username, "csrf_token": token}
    assert client.post("/login", data={**data, "password": "wrong-password"}).status_code == 401
    assert client.post("/login", data={**data, "password": "password123"}, follow_redirects=False).status_code == 303
    assert held == [False, False]
    failures = db.scalar(select(func.count()).where(LoginFailure.username == user.username))
    assert failures == 1  # the wrong password counts, the right one does not


# ---- sessions end at logout, password change and deactivation -----------------------------------------------------


def _saved_cookie_opens(app, cookie: str, path: str = "/admin") -> bool:
    """Whether a browser that kept this session cookie still gets the page."""
    from fastapi.testclient import TestClient

    with TestClient(app) as other:
        other.cookies.set("rlhf_session", cookie)
        response = other.get(path, follow_redirects=False)
    if response.status_code == 303:
        assert response.headers["location"].startswith("/login")
        return False
    assert response.status_code == 200, response.status_code
    return True


def test_a_saved_cookie_no_longer_opens_pages_after_logout(app, client, make_user, login):
    admin = make_user("admin")
    login(admin)
    saved = client.cookies.get("rlhf_session")
    assert _saved_cookie_opens(app, saved)
    second = _second_session(app, admin)  # another browser of the same user
    client.post("/logout", data={"csrf_token": session_csrf(client)}, follow_redirects=False)
    assert not _saved_cookie_opens(app, saved)
    assert not _saved_cookie_opens(app, second)  # logout ends every session of the user
    with_htmx = _stale_htmx(app, saved)
    assert with_htmx.status_code == 200 and with_htmx.headers["HX-Redirect"].startswith("/login")
    login(admin)  # logging in again gives a cookie that works
    assert _saved_cookie_opens(app, client.cookies.get("rlhf_session"))


def _second_session(app, user) -> str:
    from fastapi.testclient import TestClient

    with TestClient(app) as other:
        token = csrf_from(other.get("/login").text)
        other.post("/login", data={"username": user.username, "password": "password123", "csrf_token": token})
        return other.cookies.get("rlhf_session")


def _stale_htmx(app, cookie: str):
    from fastapi.testclient import TestClient

    with TestClient(app) as other:
        other.cookies.set("rlhf_session", cookie)
        return other.get("/admin", headers={"HX-Request": "true"}, follow_redirects=False)


def test_a_stale_cookies_logout_does_not_end_the_new_session(app, client, make_user, login):
    from fastapi.testclient import TestClient

    user = make_user("admin")
    login(user)
    old = client.cookies.get("rlhf_session")
    client.post("/logout", data={"csrf_token": session_csrf(client)}, follow_redirects=False)
    login(user)
    current = client.cookies.get("rlhf_session")
    with TestClient(app) as other:
        other.cookies.set("rlhf_session", old)
        other.post("/logout", data={"csrf_token": session_csrf(other)}, follow_redirects=False)
    assert _saved_cookie_opens(app, current)


def test_a_password_reset_ends_the_users_sessions_and_not_others(app, client, db, make_user, login):
    from app.services.users import set_password

    annotator, admin = make_user("annotator"), make_user("admin")
    theirs = _second_session(app, annotator)
    assert _saved_cookie_opens(app, theirs, "/annotate")
    csrf = login(admin)
    reset = client.post(
        f"/admin/users/{annotator.id}/password", data={"password": "new-password-1", "csrf_token": csrf}
    )
    assert reset.status_code == 200 and "password reset" in reset.text
    assert not _saved_cookie_opens(app, theirs, "/annotate")
    assert _saved_cookie_opens(app, client.cookies.get("rlhf_session"))  # the admin's own session goes on
    mine = client.cookies.get("rlhf_session")
    set_password(db, user=db.merge(admin), password="changed-by-cli")  # `rlhf users passwd`
    db.commit()
    assert not _saved_cookie_opens(app, mine)


def test_deactivation_ends_sessions_and_reactivation_does_not_revive_them(app, client, make_user, login):
    annotator, admin = make_user("annotator"), make_user("admin")
    theirs = _second_session(app, annotator)
    csrf = login(admin)
    for active in ("false", "true"):
        client.post(f"/admin/users/{annotator.id}/active", data={"active": active, "csrf_token": csrf})
        assert not _saved_cookie_opens(app, theirs, "/annotate")
    assert _saved_cookie_opens(app, _second_session(app, annotator), "/annotate")  # a new login works


def test_the_api_takes_no_session_cookie(client, make_user, login):
    login(make_user("admin"))
    assert client.get("/api/v1/users").status_code == 401
    assert client.get("/api/v1/tasks/next").status_code == 401  # the annotate fast path too


def test_docs_and_schema_take_an_admin_bearer_token(client, api):
    """Scripts generate clients from /openapi.json with a token; before, a token got a 303 to the login form."""
    _, admin = api("admin")
    schema = client.get("/openapi.json", headers=admin, follow_redirects=False)
    assert schema.status_code == 200 and "/api/v1/tasks/next" in schema.json()["paths"]
    assert client.get("/docs", headers=admin, follow_redirects=False).status_code == 200
    _, annotator = api("annotator")
    assert client.get("/openapi.json", headers=annotator).status_code == 403
    wrong = client.get("/openapi.json", headers={"Authorization": "Bearer nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get("/openapi.json", follow_redirects=False).status_code == 303  # no token: the login form


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
