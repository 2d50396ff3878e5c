"""app.services.users: who a verified single sign-on (sign_in_with_oidc) is, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.models import User
from app.services.users import UserError, create_user, set_active, sign_in_with_oidc
from tests.conftest import BACKENDS

ISSUER = "https://id.example.org"


def claims(sub: str = "s-1", **more) -> dict:
    return {"sub": sub, "preferred_username": "ada", "email": "ada@example.org", **more}


def count(db) -> int:
    return db.scalar(select(func.count()).select_from(User))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_first_sign_in_creates_a_linked_annotator_then_finds_it(db, backend):
    user = sign_in_with_oidc(db, issuer=ISSUER, claims=claims())
    db.commit()
    assert (user.username, user.role, user.oidc_issuer, user.oidc_subject, user.password_hash) == (
        "ada",
        "annotator",
        ISSUER,
        "s-1",
        None,
    )
    again = sign_in_with_oidc(db, issuer=ISSUER, claims=claims(preferred_username="ada2"))
    assert again.id == user.id and again.username == "ada" and count(db) == 1
    # the same subject at another issuer is another person, and needs a name of its own
    with pytest.raises(UserError, match="already exists") as refused:
        sign_in_with_oidc(db, issuer="https://other.example.org", claims=claims())
    assert refused.value.status == 409


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_one_user_per_issuer_and_subject_in_the_database(db, backend):
    create_user(db, username="a", role="annotator", password=None, oidc_account=(ISSUER, "s-1"))
    db.commit()
    db.add(User(username="b", role="annotator", public_id="a_b", oidc_issuer=ISSUER, oidc_subject="s-1"))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    # password users (no link at all) are not one another's duplicates
    create_user(db, username="c", role="annotator", password="password123")
    create_user(db, username="d", role="annotator", password="password123")
    db.commit()


def test_an_existing_account_of_that_name_is_never_taken_over(db):
    owner = create_user(db, username="ada", role="admin", password="password123")
    db.commit()
    with pytest.raises(UserError, match="not linked") as refused:
        sign_in_with_oidc(db, issuer=ISSUER, claims=claims())
    assert refused.value.status == 409
    db.rollback()
    assert (owner.oidc_subject, owner.role, count(db)) == (None, "admin", 1)


def test_the_name_is_preferred_username_else_email_else_refused(db):
    assert sign_in_with_oidc(db, issuer=ISSUER, claims=claims("s-1", preferred_username="Ada L.")).username == (
        "ada@example.org"
    )
    assert sign_in_with_oidc(db, issuer=ISSUER, claims={"sub": "s-2", "email": "bo@example.org"}).username == (
        "bo@example.org"
    )
    with pytest.raises(UserError, match="no usable name"):
        sign_in_with_oidc(db, issuer=ISSUER, claims={"sub": "s-3", "name": "Cy"})


@pytest.mark.parametrize(
    "value, role",
    [
        ("admin", "admin"),
        (["staff", "admin"], "admin"),
        ("annotator", "annotator"),
        ("root", "annotator"),
        (["staff"], "annotator"),
        (None, "annotator"),
        (7, "annotator"),
    ],
)
def test_the_role_claim_names_admin_or_it_is_an_annotator(db, value, role):
    token = claims() if value is None else claims(rlhf_role=value)
    assert sign_in_with_oidc(db, issuer=ISSUER, claims=token, role_claim="rlhf_role").role == role


def test_with_a_role_claim_the_role_follows_it_at_every_sign_in_without_one_it_stays(db):
    user = sign_in_with_oidc(db, issuer=ISSUER, claims=claims(groups=["admin"]), role_claim="groups")
    assert user.role == "admin"
    assert sign_in_with_oidc(db, issuer=ISSUER, claims=claims(groups=[]), role_claim="groups").role == "annotator"
    assert sign_in_with_oidc(db, issuer=ISSUER, claims=claims(groups=["admin"]), role_claim="groups").role == "admin"
    # the setting removed: the role is what it was, whatever the token says
    assert sign_in_with_oidc(db, issuer=ISSUER, claims=claims(groups=[])).role == "admin"


def test_a_deactivated_user_is_refused(db):
    user = sign_in_with_oidc(db, issuer=ISSUER, claims=claims())
    set_active(db, user=user, active=False)
    with pytest.raises(UserError, match="deactivated") as refused:
        sign_in_with_oidc(db, issuer=ISSUER, claims=claims())
    assert refused.value.status == 403
