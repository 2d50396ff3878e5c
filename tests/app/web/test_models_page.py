"""/admin/models: register, promote, roll back; a bad directory is refused with the reason."""

from sqlalchemy import func, select

from app.models import ModelVersion
from tests.factories import make_model


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


def test_an_adapter_model_shows_its_base(client, db, make_user, login):
    base = make_model(db, "base")
    adapter = make_model(db, "sft-lora")
    adapter.base_model_id = base.id
    db.commit()
    login(make_user("admin"))
    page = client.get("/admin/models").text
    assert f"LoRA adapter on #{base.id}" in page and page.count("LoRA adapter on") == 1
