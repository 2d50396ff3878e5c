"""Single sign-on in a real browser (Debian chromium): a real `rlhf serve` configured for a real OpenID Connect
provider on a local port (tests/oidc_provider.py). Clicking "Sign in with SSO" goes to the provider and back through
the callback, signed in as the user the provider names, created with the role its claim gives; a forged ID token
comes back to the login page with the reason, signing no one in."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import User
from tests.browser.conftest import ARTIFACTS
from tests.oidc_provider import running_provider

pytestmark = pytest.mark.browser


@pytest.fixture
def provider():
    with running_provider() as provider:
        yield provider


@pytest.fixture
def server_env(server_env, provider):
    return {
        **server_env,
        "RLHF_OIDC_ISSUER": provider.issuer,
        "RLHF_OIDC_CLIENT_ID": provider.client_id,
        "RLHF_OIDC_CLIENT_SECRET": provider.client_secret,
        "RLHF_OIDC_ROLE_CLAIM": "groups",
    }


def test_sso_goes_through_the_provider_and_back_signed_in(db, server, browser, provider):
    provider.user = {"sub": "p-42", "preferred_username": "grace", "groups": ["admin"]}
    page = browser.new_page()
    page.goto(f"{server}/admin")  # the login page, to come back here
    page.click("text=Sign in with SSO")
    page.wait_for_url(f"{server}/admin")
    assert page.inner_text("h1") == "Admin" and "grace" in page.content()
    db.rollback()
    user = db.execute(select(User.role, User.oidc_issuer, User.oidc_subject).where(User.username == "grace")).one()
    db.rollback()
    assert tuple(user) == ("admin", provider.issuer, "p-42")

    # a token meant for another client, in a fresh browser: back at the login page, told why, not signed in
    provider.user = {"sub": "p-43", "preferred_username": "mallory"}
    provider.tamper = {"aud": "another-client"}
    other = browser.new_context().new_page()
    other.goto(f"{server}/login")
    with other.expect_response(lambda r: "/auth/oidc/callback" in r.url) as callback:
        other.click("text=Sign in with SSO")
    assert callback.value.status == 401
    assert "did not verify" in other.inner_text("[role=alert]")
    other.screenshot(path=str(ARTIFACTS / "sso-refused.png"))
    other.goto(f"{server}/")
    assert "/login" in other.url
    db.rollback()
    assert db.scalar(select(User.id).where(User.username == "mallory")) is None
    db.rollback()
