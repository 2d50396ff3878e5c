"""/admin/prompts: the upload form works without JS (303 + the page) and refuses bad input with 4xx."""

from sqlalchemy import func, select

from app.models import Prompt


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
