"""GET /healthz."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_healthz_503_when_database_unreachable(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from app import db
    from app.main import create_app

    app = create_app(check_database=False)
    unreachable = db.make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    monkeypatch.setattr("app.db.get_read_engine", lambda: unreachable)
    with TestClient(app) as c:
        response = c.get("/healthz")
    monkeypatch.undo()  # before the settings fixture's teardown disposes the (cached) engines
    assert response.status_code == 503 and response.json()["database"] == "unreachable"
