"""Admin pages: each renders for an admin; forms work without JS (303 + the page) and refuse bad input with 4xx."""

from sqlalchemy import func, select

from app.models import ApiToken, Job, ModelVersion, Prompt, User
from tests.app.export_fixtures import build_dataset
from tests.app.factories import make_model


def test_every_admin_page_renders(client, db, make_user, login):
    build_dataset(db)
    login(make_user("admin"))
    for path, needle in [
        ("/admin", "Recent jobs"),
        ("/admin/prompts", "Prompt file"),
        ("/admin/models", "Register"),
        ("/admin/generate", "Responses per prompt K"),
        ("/admin/exports", "Margin from strength"),
        ("/admin/stats", "Krippendorff"),
        ("/admin/users", "New token"),
    ]:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert needle in page.text, path
    stats = client.get("/admin/stats").text
    assert "Disagreement queue" in stats and 'data-testid="alpha-pairwise"' in stats and "alice" in stats


def test_prompt_upload_form_all_or_nothing_and_limits(client, db, make_user, login, settings, monkeypatch):
    csrf = login(make_user("admin"))
    ok = client.post(
        "/admin/prompts/upload",
        data={"csrf_token": csrf},
        files={"file": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": "a"}\n{"prompt": "b", "split": "eval"}\n')},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/admin/prompts?created=2&duplicates=1"
    assert "Imported 2 prompt(s); 1 duplicate(s) skipped." in client.get(ok.headers["location"]).text
    bad = client.post(
        "/admin/prompts/upload",
        data={"csrf_token": csrf},
        files={"file": ("p.jsonl", b'{"prompt": "c"}\n{"prompt": 5}\n')},
    )
    assert bad.status_code == 422 and "p.jsonl:2:" in bad.text and "Nothing was imported" in bad.text
    wrong = client.post("/admin/prompts/upload", data={"csrf_token": csrf}, files={"file": ("p.exe", b"MZ")})
    assert wrong.status_code == 422 and "unknown file type" in wrong.text
    monkeypatch.setattr(settings, "max_upload_bytes", 10)
    big = client.post(
        "/admin/prompts/upload",
        data={"csrf_token": csrf},
        files={"file": ("p.jsonl", b'{"prompt": "long enough to be over"}\n')},
    )
    assert big.status_code == 413 and "limit" in big.text
    assert db.scalar(select(func.count()).select_from(Prompt)) == 2
    db.rollback()  # SQLite: never hold the write lock while the app serves a request
    # htmx gets the list block only
    frag = client.post(
        "/admin/prompts/upload",
        data={"csrf_token": csrf},
        headers={"HX-Request": "true"},
        files={"file": ("p.csv", b"nope\n1\n")},
    )
    assert frag.status_code in (413, 422) and "<html" not in frag.text


def test_models_page_promote_and_refuse_bad_directory(client, db, make_user, login, tmp_path):
    a = make_model(db, "base", is_current=True)
    b = make_model(db, "sft-1")
    db.commit()
    csrf = login(make_user("admin"))
    res = client.post(f"/admin/models/{b.id}/promote", data={"csrf_token": csrf}, follow_redirects=False)
    assert res.status_code == 303
    db.expire_all()
    assert db.get(ModelVersion, b.id).is_current and not db.get(ModelVersion, a.id).is_current
    db.rollback()
    res = client.post(
        "/admin/models/register",
        data={"csrf_token": csrf, "path": str(tmp_path), "name": "x", "kind": "policy", "stage": "sft"},
    )
    assert res.status_code == 422 and "no config.json" in res.text
    assert db.scalar(select(func.count()).select_from(ModelVersion)) == 2
    db.rollback()
    res = client.post("/admin/models/rollback", data={"csrf_token": csrf, "kind": "policy"}, follow_redirects=False)
    assert res.status_code == 303
    db.expire_all()
    assert db.get(ModelVersion, a.id).is_current


def test_generate_form_enqueues_a_job_or_shows_the_reason(client, db, make_user, login):
    make_model(db, "base", is_current=True)
    db.add(Prompt(text="hi", content_hash="h1", tags=[], split="train", meta={}))
    db.commit()
    csrf = login(make_user("admin"))
    page = client.get("/admin/generate").text
    assert 'name="temperature" type="number" step="any" min="0" value="1.0"' in page  # defaults shown
    res = client.post(
        "/admin/generate",
        data={
            "csrf_token": csrf,
            "model_id": "",
            "split": "train",
            "count": "5",
            "num_samples": "4",
            "temperature": "0.7",
            "top_k": "0",
            "top_p": "1",
            "max_new_tokens": "16",
            "seed": "3",
            "task_kind": "ranking",
            "overlap": "2",
            "priority": "0",
            "tag": "",
        },
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"].startswith("/admin/jobs/")
    job = db.scalar(select(Job))
    assert job.kind == "generate" and job.config["num_samples"] == 4 and job.config["temperature"] == 0.7
    db.rollback()
    res = client.post("/admin/generate", data={"csrf_token": csrf, "num_samples": "12"})
    assert res.status_code == 422 and "2..8" in res.text
    res = client.post("/admin/generate", data={"csrf_token": csrf, "count": "many"})
    assert res.status_code == 422 and "must be a number" in res.text
    assert db.scalar(select(func.count()).select_from(Job)) == 1


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
