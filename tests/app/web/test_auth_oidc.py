"""Single sign-on (app/web/auth.py's /auth/oidc routes, app.oidc) against a real OpenID Connect provider on a local
port (tests/oidc_provider.py): the app in process, each redirect between the two followed by hand, as a browser
would. The browser test (tests/browser/test_sso_in_browser.py) goes through the same flow in chromium."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from app.models import User
from tests.oidc_provider import running_provider


@pytest.fixture
def provider():
    with running_provider() as provider:
        yield provider


@pytest.fixture
def configure(monkeypatch, settings, provider):
    """configure(**settings) -> an app client with single sign-on at the test's provider (and these settings)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import get_settings

    clients = []

    def make(**overrides: str) -> TestClient:
        values = {
            "oidc_issuer": provider.issuer,
            "oidc_client_id": provider.client_id,
            "oidc_client_secret": provider.client_secret,
            **overrides,
        }
        for name, value in values.items():
            monkeypatch.setenv(f"RLHF_{name.upper()}", value)
        get_settings.cache_clear()
        client = TestClient(create_app())
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def to_provider(client, next: str = "/") -> str:
    """Clicks "Sign in with SSO": the provider's authorization URL the app redirects to."""
    response = client.get("/auth/oidc/login", params={"next": next}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"]


def back_from_provider(authorization_url: str) -> str:
    """The provider signs its user in at once and redirects to the app's callback: that URL."""
    response = httpx.get(authorization_url, follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def sign_in(client, next: str = "/"):
    return client.get(back_from_provider(to_provider(client, next)), follow_redirects=False)


def users(db) -> int:
    db.rollback()
    count = db.scalar(select(func.count()).select_from(User))
    db.rollback()  # the test's session holds no transaction while the app works (SQLite's writer gate)
    return count


def stored(db, username: str) -> tuple | None:
    """(role, oidc_issuer, oidc_subject, password_hash, is_active) of the user, read in a transaction of its own."""
    db.rollback()
    row = db.execute(
        select(User.role, User.oidc_issuer, User.oidc_subject, User.password_hash, User.is_active).where(
            User.username == username
        )
    ).first()
    db.rollback()
    return tuple(row) if row else None


def test_first_sign_in_creates_an_annotator_and_logs_in(configure, provider, db):
    client = configure()
    page = client.get("/login")
    assert "Sign in with SSO" in page.text
    authorization_url = to_provider(client, next="/annotate")
    query = parse_qs(urlsplit(authorization_url).query)
    # the authorization-code flow with state, nonce and PKCE (S256), back to this app's callback
    assert authorization_url.startswith(f"{provider.issuer}/authorize?")
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["state"] and query["nonce"] and query["code_challenge"]
    assert query["redirect_uri"] == ["http://testserver/auth/oidc/callback"]
    response = client.get(back_from_provider(authorization_url), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/annotate"
    assert stored(db, "ada") == ("annotator", provider.issuer, "person-1", None, True)
    assert "ada" in client.get("/").text  # logged in
    assert client.get("/login", follow_redirects=False).status_code == 303


def test_the_next_sign_in_is_the_same_user_even_renamed_at_the_provider(configure, provider, db):
    client = configure()
    assert sign_in(client).status_code == 303
    client.cookies.clear()
    provider.user = {**provider.user, "preferred_username": "ada.lovelace"}
    assert sign_in(client).status_code == 303
    assert users(db) == 1 and stored(db, "ada") is not None


def test_the_role_claim_makes_an_admin_and_follows_the_provider(configure, provider, db):
    client = configure(oidc_role_claim="groups")
    provider.user = {**provider.user, "groups": ["staff", "admin"]}
    assert sign_in(client).status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 200
    assert stored(db, "ada")[0] == "admin"
    # no longer admin at the provider: an annotator from the next sign-in on
    client.cookies.clear()
    provider.user = {**provider.user, "groups": ["staff"]}
    assert sign_in(client).status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 403
    assert stored(db, "ada")[0] == "annotator"


def test_without_a_role_claim_setting_a_role_claim_in_the_token_counts_for_nothing(configure, provider, db):
    client = configure()
    provider.user = {**provider.user, "role": "admin", "groups": ["admin"]}
    assert sign_in(client).status_code == 303
    assert stored(db, "ada")[0] == "annotator"


def test_a_password_account_with_the_same_name_is_never_taken_over(configure, provider, make_user, db):
    make_user("admin", username="ada")
    client = configure()
    response = sign_in(client)
    assert response.status_code == 409 and "already exists" in response.text
    assert stored(db, "ada")[:3] == ("admin", None, None) and users(db) == 1
    assert client.get("/admin", follow_redirects=False).headers["location"].startswith("/login")


def test_a_deactivated_user_is_refused(configure, provider, db):
    client = configure()
    assert sign_in(client).status_code == 303
    db.execute(update(User).where(User.username == "ada").values(is_active=False))
    db.commit()
    client.cookies.clear()
    response = sign_in(client)
    assert response.status_code == 403 and "deactivated" in response.text
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_a_tampered_state_is_refused_and_nothing_is_written(configure, provider, db):
    client = configure()
    callback = urlsplit(back_from_provider(to_provider(client)))
    query = {k: v[0] for k, v in parse_qs(callback.query).items()}
    response = client.get(f"{callback.path}?{urlencode({**query, 'state': 'forged'})}", follow_redirects=False)
    assert response.status_code == 400 and "state does not match" in response.text
    assert provider.token_requests == 0 and users(db) == 0  # refused before the code was even spent


def test_a_callback_counts_once_and_only_in_the_browser_that_started_it(configure, provider, db):
    client = configure()
    callback = back_from_provider(to_provider(client))
    other_browser = configure()
    response = other_browser.get(callback, follow_redirects=False)
    assert response.status_code == 400 and "No sign-in was started" in response.text
    assert client.get(callback, follow_redirects=False).status_code == 303
    replayed = client.get(callback, follow_redirects=False)  # the flow cookie is spent
    assert replayed.status_code == 400 and users(db) == 1


@pytest.mark.parametrize(
    "tamper, why",
    [
        ({"aud": "some-other-client"}, "aud"),
        ({"iss": "http://127.0.0.1:1"}, "iss"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "exp"),
        ({"nonce": "replayed-nonce"}, "nonce"),
        ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash"),
    ],
)
def test_an_id_token_with_a_wrong_claim_is_refused(configure, provider, db, tamper, why):
    client = configure()
    provider.tamper = tamper
    response = sign_in(client)
    assert response.status_code == 401 and "did not verify" in response.text and why in response.text
    assert users(db) == 0
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_an_id_token_signed_with_an_unpublished_key_is_refused(configure, provider, db):
    client = configure()
    provider.sign_with_other_key = True
    response = sign_in(client)
    assert response.status_code == 401 and "did not verify" in response.text and users(db) == 0


def test_a_wrong_client_secret_is_refused_by_the_provider(configure, provider, db):
    client = configure(oidc_client_secret="not-the-secret")
    response = sign_in(client)
    assert response.status_code == 400 and "invalid_client" in response.text and users(db) == 0


def test_a_refusal_at_the_provider_is_shown(configure, provider, db):
    client = configure()
    state = parse_qs(urlsplit(to_provider(client)).query)["state"][0]
    response = client.get(
        "/auth/oidc/callback", params={"error": "access_denied", "state": state}, follow_redirects=False
    )
    assert response.status_code == 403 and "access_denied" in response.text and users(db) == 0


def test_a_provider_that_is_down_or_not_itself_gives_a_clear_page(configure, provider, db, monkeypatch):
    down = configure(oidc_issuer="http://127.0.0.1:1")  # nothing listens on port 1
    response = down.get("/auth/oidc/login", follow_redirects=False)
    assert response.status_code == 502 and "did not answer" in response.text
    assert "Log in" in response.text  # the password form is still there
    provider.discovery_issuer = "http://elsewhere.example"
    impostor = configure()
    response = impostor.get("/auth/oidc/login", follow_redirects=False)
    assert response.status_code == 502 and "not the configured" in response.text and users(db) == 0


def test_without_settings_there_is_no_sso(client):
    assert "Sign in with SSO" not in client.get("/login").text
    assert client.get("/auth/oidc/login", follow_redirects=False).status_code == 404
    assert client.get("/auth/oidc/callback?code=x&state=y", follow_redirects=False).status_code == 404


def test_the_next_page_stays_on_this_site(configure, provider):
    client = configure()
    response = client.get(back_from_provider(to_provider(client, next="//evil.example/")), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
