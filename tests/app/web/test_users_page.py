"""/admin/users: create, deactivate, reset passwords, tokens."""

from sqlalchemy import select

from app.models import ApiToken, User


def test_users_page_create_deactivate_reset_tokens(client, db, make_user, login):
    admin = make_user("admin")
    admin_id = admin.id
    csrf = login(admin)
    res = client.post(
        "/admin/users",
        data={"csrf_token": csrf, "username": "newbie", "password": "long-password", "role": "annotator"},
        follow_redirects=False,
    )
    assert res.status_code == 303
    user_id = db.scalar(select(User.id).where(User.username == "newbie"))
    db.rollback()
    res = client.post("/admin/users", data={"csrf_token": csrf, "username": "newbie", "password": "long-password"})
    assert res.status_code == 409 and "already exists" in res.text  # the API's status for a duplicate too
    res = client.post(f"/admin/users/{user_id}/tokens", data={"csrf_token": csrf, "name": "laptop"})
    assert res.status_code == 200
    token = res.text.split('data-testid="new-token">')[1].split("<")[0]
    assert client.get("/api/v1/tasks/next", headers={"Authorization": f"Bearer {token}"}).status_code != 401
    token_id = db.scalar(select(ApiToken.id).where(ApiToken.user_id == user_id))
    db.rollback()
    res = client.post(
        f"/admin/users/{user_id}/tokens/{token_id}/revoke", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert res.status_code == 303
    db.expire_all()
    assert db.get(ApiToken, token_id).revoked_at is not None
    db.rollback()
    res = client.post(f"/admin/users/{user_id}/password", data={"csrf_token": csrf, "password": "short"})
    assert res.status_code == 422 and "at least 8" in res.text
    res = client.post(
        f"/admin/users/{user_id}/password",
        data={"csrf_token": csrf, "password": "another-long-one"},
        follow_redirects=False,
    )
    assert res.status_code == 303
    res = client.post(
        f"/admin/users/{user_id}/active", data={"csrf_token": csrf, "active": "false"}, follow_redirects=False
    )
    assert res.status_code == 303
    db.expire_all()
    assert not db.get(User, user_id).is_active
    db.rollback()
    res = client.post(f"/admin/users/{admin_id}/active", data={"csrf_token": csrf, "active": "false"})
    assert res.status_code == 422 and "yourself" in res.text
    assert (
        client.post("/admin/users", data={"username": "x", "password": "long-password"}).status_code == 403
    )  # no CSRF


def test_a_flagged_annotator_is_shown_and_their_labels_excluded_and_included_with_one_action(
    client, db, make_user, login, monkeypatch
):
    from tests.factories import annotate_pairwise, pairwise_task

    monkeypatch.setenv("RLHF_FLAG_MIN_LABELS", "3")
    from app.settings import get_settings

    get_settings.cache_clear()
    admin = make_user("admin")
    liner = make_user("annotator")
    for i in range(4):
        task, gens = pairwise_task(db, prompt_text=f"q{i}")
        annotate_pairwise(db, task, liner, chosen=gens[0], shown=gens)
    db.commit()
    liner_id = liner.id
    csrf = login(admin)
    page = client.get("/admin/users").text
    flags = page.split(f'data-testid="flags-{liner_id}">')[1].split("</td>")[0]
    assert "straight-lining: first shown 100% of the time" in flags and "Exclude labels" in flags
    res = client.post(
        f"/admin/users/{liner_id}/labels", data={"csrf_token": csrf, "excluded": "true"}, follow_redirects=False
    )
    assert res.status_code == 303 and "labels+excluded" in res.headers["location"]
    db.expire_all()
    assert db.get(User, liner_id).labels_excluded is True
    db.rollback()
    page = client.get("/admin/users").text
    assert "labels excluded" in page and "Include labels again" in page
    client.post(f"/admin/users/{liner_id}/labels", data={"csrf_token": csrf, "excluded": "false"})
    db.expire_all()
    assert db.get(User, liner_id).labels_excluded is False  # reversible
    get_settings.cache_clear()
