"""Passwords (argon2), API tokens (sha256 of a random 256-bit secret), signed session cookies, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

TOKEN_PREFIX = "rlhf_"
SESSION_COOKIE = "rlhf_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

_hasher = PasswordHasher()


@lru_cache
def _dummy_hash() -> str:
    """Verifying against this keeps the time of "no such user" equal to "wrong password" (made on first use:
    hashing costs ~0.1 s, which every CLI start would pay otherwise)."""
    return _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_api_token() -> tuple[str, str]:
    """A fresh token and the hash to store. The token itself is shown once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 bits of randomness
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_public_id() -> str:
    return "a_" + secrets.token_hex(8)


@dataclass(frozen=True)
class BrowserSession:
    """What the signed cookie carries: the user (None when logged out), the user's session version when the cookie
    was issued (the cookie counts only while it is still the user's), and the CSRF token of this session."""

    user_id: int | None
    csrf: str
    session_version: int | None = None

    @classmethod
    def anonymous(cls) -> BrowserSession:
        return cls(user_id=None, csrf=secrets.token_urlsafe(24))


class SessionSigner:
    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="rlhf-session")
        self._max_age_s = max_age_s

    def dumps(self, session: BrowserSession) -> str:
        return self._serializer.dumps({"u": session.user_id, "c": session.csrf, "v": session.session_version})

    def loads(self, cookie: str | None) -> BrowserSession | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self._max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        user_id, version = data.get("u"), data.get("v")
        if not isinstance(user_id, int) or not isinstance(version, int):
            return BrowserSession(user_id=None, csrf=data["c"])  # a cookie without a version counts as logged out
        return BrowserSession(user_id=user_id, csrf=data["c"], session_version=version)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())
