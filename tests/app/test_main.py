"""The application refuses an un-migrated database."""

import pytest


def test_app_refuses_unmigrated_database(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from app.db import DatabaseNotMigrated
    from app.main import create_app
    from tests.conftest import _clear_caches

    monkeypatch.setenv("RLHF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RLHF_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    _clear_caches()
    try:
        with pytest.raises(DatabaseNotMigrated, match="rlhf db upgrade"):
            with TestClient(create_app()):
                pass
    finally:
        _clear_caches()
