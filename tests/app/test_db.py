"""The database engines: SQLite pragmas."""

from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(db):
    assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert db.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
