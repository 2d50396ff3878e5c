"""The database engines: SQLite pragmas."""

from sqlalchemy import text


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(db):
    assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert db.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
