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


def test_an_app_started_without_the_cli_keeps_its_data_private(tmp_path, monkeypatch):
    """`uvicorn --factory app.main:create_app` gets what `rlhf serve` gets: umask 077, and a data dir an older
    version left readable by others made 0700."""
    import os

    from app.main import create_app
    from tests.conftest import _clear_caches

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    monkeypatch.setenv("RLHF_DATA_DIR", str(data))
    monkeypatch.setenv("RLHF_SECRET_KEY", "k")
    _clear_caches()
    before = os.umask(0o022)
    try:
        create_app(check_database=False)
        assert os.umask(0o022) == 0o077
        assert (data.stat().st_mode & 0o777) == 0o700
    finally:
        os.umask(before)
        _clear_caches()
