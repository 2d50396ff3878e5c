"""Small test helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import re


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def session_csrf(client) -> str:
    """The CSRF token of the client's current session, read from its signed cookie."""
    from app.security import SessionSigner

    cookie = client.cookies.get("rlhf_session")
    session = SessionSigner("test-secret-key", 3600).loads(cookie)
    assert session is not None and session.user_id is not None
    return session.csrf
