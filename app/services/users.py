"""Users, API tokens and login (with throttling counted in the database)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import ApiToken, LoginFailure, User, utcnow
from app.security import hash_password, new_api_token, new_public_id, verify_password
from app.services.errors import ServiceError
from domain.vocabulary import ROLES

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 8


class UserError(ServiceError):
    """Bad input for a user operation; the message is safe to show."""


class LoginThrottled(Exception):
    pass


def create_user(
    session: Session,
    *,
    username: str,
    role: str,
    password: str | None,
    is_ai: bool = False,
    oidc_account: tuple[str, str] | None = None,
) -> User:
    """A new user; `oidc_account` (issuer, subject) links one made by single sign-on to the provider's account."""
    if not USERNAME_RE.match(username):
        raise UserError("username must be 1-64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = User(
        username=username,
        role=role,
        is_ai=is_ai,
        public_id=new_public_id(),
        password_hash=hash_password(password) if password is not None else None,
        oidc_issuer=oidc_account[0] if oidc_account else None,
        oidc_subject=oidc_account[1] if oidc_account else None,
    )
    try:
        with session.begin_nested():  # a savepoint: a duplicate leaves the caller's transaction usable
            session.add(user)
    except IntegrityError:
        raise UserError(f"user {username!r} already exists", status=409) from None
    return user


def get_user_by_name(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def require_user(session: Session, *, username: str) -> User:
    user = get_user_by_name(session, username=username)
    if user is None:
        raise UserError(f"no user {username!r}", status=404)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def get_user(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}", status=404)
    return user


def update_user(
    session: Session,
    *,
    user_id: int,
    by: User,
    is_active: bool | None = None,
    password: str | None = None,
    labels_excluded: bool | None = None,
) -> User:
    """Reset the password, (de)activate and/or exclude the user's labels from rounds and exports (or bring them
    back); an admin cannot deactivate themself (they would be locked out)."""
    user = get_user(session, user_id=user_id)
    if is_active is False and user.id == by.id:
        raise UserError("you cannot deactivate yourself")
    if password is not None:
        set_password(session, user=user, password=password)
    if is_active is not None:
        set_active(session, user=user, active=is_active)
    if labels_excluded is not None:
        user.labels_excluded = labels_excluded  # nothing is deleted: clearing the flag brings every label back
        session.flush()
    return user


def list_tokens(session: Session, *, user_id: int | None = None) -> list[ApiToken]:
    """Every token (or one user's), oldest first; never the secrets, which are not stored."""
    stmt = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        get_user(session, user_id=user_id)
        stmt = stmt.where(ApiToken.user_id == user_id)
    return list(session.scalars(stmt))


def set_active(session: Session, *, user: User, active: bool) -> User:
    user.is_active = active
    if not active:
        # ends every browser session; reactivation keeps the new version, so the old cookies stay refused
        user.session_version += 1
        # A deactivated user's tokens stop working at once (the lookup also checks is_active).
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    session.flush()
    return user


def set_password(session: Session, *, user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)
    user.session_version += 1  # ends every browser session of the user (whoever changed it)
    session.flush()


def log_out(session: Session, *, user_id: int, session_version: int | None) -> None:
    """End every browser session of the user, if this one (of that version) is still theirs: a stale cookie's
    logout ends nothing."""
    session.execute(
        update(User)
        .where(User.id == user_id, User.session_version == session_version)
        .values(session_version=User.session_version + 1)
    )


def authenticate(
    session: Session, *, username: str, password: str, address: str, max_failures: int, window_s: int
) -> User | None:
    """The user if the password is right; None otherwise. Raises LoginThrottled after too many recent failures
    for this username or from this address (counted in the database, so it holds across processes).

    Ends its own transactions: the password is verified with none open (argon2 costs ~0.1 s of CPU; an open
    transaction would hold SQLite's writer gate, and every annotator with it, for that long). The attempt is
    counted as a failure in one short write before the verification, so concurrent attempts cannot get past the
    limit, and is taken back in another when the password is right."""
    since = utcnow() - timedelta(seconds=window_s)
    by_user = session.scalar(
        select(func.count()).where(LoginFailure.username == username, LoginFailure.created_at > since)
    )
    by_address = session.scalar(
        select(func.count()).where(LoginFailure.address == address, LoginFailure.created_at > since)
    )
    if by_user >= max_failures or by_address >= max_failures:
        session.commit()
        raise LoginThrottled()
    user = get_user_by_name(session, username=username)
    attempt = LoginFailure(username=username[:64], address=address[:64])
    session.add(attempt)
    session.commit()
    ok = verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        return None
    session.delete(attempt)
    session.commit()
    return user


def sign_in_with_oidc(session: Session, *, issuer: str, claims: Mapping[str, Any], role_claim: str = "") -> User:
    """The user a verified ID token (app.oidc) signs in: the one linked to its issuer and subject, else a new one.

    A new user's name is the token's preferred_username, else its email (the first that is a valid username). A
    name an existing user already has is refused (409), whoever that is: sign-in never takes over an account, a
    password one least of all. With `role_claim` set the role follows that claim at every sign-in (admin when it
    names admin, annotator otherwise), so a change at the provider counts at the next sign-in; without it a new
    user is an annotator and stays what it is. A deactivated user is refused (403). Flushes, never commits."""
    subject = claims["sub"]
    role = _role_from_claim(claims.get(role_claim)) if role_claim else None
    user = session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
    if user is None:
        username = _oidc_username(claims)
        if get_user_by_name(session, username=username) is not None:
            raise UserError(
                f"An account named {username!r} already exists and is not linked to this sign-in, so it is not "
                "signed in: ask an admin.",
                status=409,
            )
        return create_user(
            session, username=username, role=role or "annotator", password=None, oidc_account=(issuer, subject)
        )
    if not user.is_active:
        raise UserError(f"The account {user.username!r} is deactivated.", status=403)
    if role is not None and user.role != role:
        user.role = role
        session.flush()
    return user


def _role_from_claim(value: Any) -> str:
    # A role name, or a list of them (a groups claim): admin only when it names admin; anything else, absent or
    # unknown included, is the least privilege.
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return "admin" if "admin" in names else "annotator"


def _oidc_username(claims: Mapping[str, Any]) -> str:
    for key in ("preferred_username", "email"):
        value = claims.get(key)
        if isinstance(value, str) and USERNAME_RE.match(value):
            return value
    raise UserError(
        "The sign-in provider gave no usable name (preferred_username or email, 1-64 letters, digits or _ . @ -)."
    )


def create_token(session: Session, *, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Returns the stored row and the token itself, which is shown once and never stored."""
    if not user.is_active:
        raise UserError(f"user {user.username!r} is deactivated")
    token, token_hash = new_api_token()
    row = ApiToken(user_id=user.id, token_hash=token_hash, name=name)
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, *, token_id: int, user_id: int | None = None) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None or (user_id is not None and row.user_id != user_id):
        raise UserError(f"no token {token_id}", status=404)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
