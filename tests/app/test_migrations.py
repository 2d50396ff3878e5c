"""Schema only through Alembic: upgrade head -> downgrade base -> upgrade head, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import create_engine, inspect

from app.migrations_runner import downgrade, head_revision, upgrade
from app.models import Base
from tests.conftest import BACKENDS

EXPECTED_TABLES = {
    "users",
    "api_tokens",
    "prompts",
    "model_versions",
    "generations",
    "tasks",
    "task_positions",
    "assignments",
    "annotations",
    "jobs",
    "job_metrics",
    "login_failures",
    "round_schedules",
    "gold_answers",
    "qualification_results",
    "guideline_versions",
    "guideline_reads",
    "ai_calibrations",
    "adjudications",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_upgrade_downgrade_upgrade(settings, backend):
    url = settings.sqlalchemy_url  # a migrated copy of the template
    assert _tables(url) == EXPECTED_TABLES == set(Base.metadata.tables)
    downgrade(url, "base")
    assert _tables(url) == set()
    upgrade(url, "head")
    assert _tables(url) == EXPECTED_TABLES


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_models_match_migrations(settings, backend):
    """No drift between app/models.py and the migrations (what `alembic check` does)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_partial_unique_indexes_hold(db, backend):
    """One current model per kind and one active round are enforced by the database itself."""
    from sqlalchemy.exc import IntegrityError

    from app.models import Job, ModelVersion

    db.add_all(
        [
            ModelVersion(name="a", kind="policy", stage="sft", path="/a", is_current=True),
            ModelVersion(name="b", kind="policy", stage="sft", path="/b", is_current=False),
        ]
    )
    db.commit()
    db.add(ModelVersion(name="c", kind="policy", stage="sft", path="/c", is_current=True))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    db.add(Job(kind="round", status="queued"))
    db.add(Job(kind="round", status="succeeded"))
    db.commit()
    db.add(Job(kind="round", status="running"))
    with pytest.raises(IntegrityError):
        db.commit()


def test_head_revision_is_known():
    assert head_revision()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_round_numbers_are_given_to_the_rounds_already_run_in_their_order(settings, backend):
    from sqlalchemy import text

    url = settings.sqlalchemy_url
    downgrade(url, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        for kind in ("generate", "round", "label-ai", "round"):
            conn.execute(
                text(
                    "INSERT INTO jobs (kind, status, priority, config, progress_done, progress_total, "
                    "progress_message, metrics, result, attempts, max_attempts, cancel_requested, created_at) "
                    "VALUES (:kind, 'succeeded', 0, '{}', 0, 0, '', '{}', '{}', 1, 1, false, CURRENT_TIMESTAMP)"
                ),
                {"kind": kind},
            )
    upgrade(url, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, round_number FROM jobs ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("generate", None), ("round", 1), ("label-ai", None), ("round", 2)]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_reviewer_role_is_allowed_at_head_and_goes_back_to_annotator_on_downgrade(settings, backend):
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    url = settings.sqlalchemy_url
    engine = create_engine(url)
    insert = text(
        "INSERT INTO users (username, role, is_active, is_ai, public_id, session_version, labels_excluded, "
        "created_at) VALUES (:name, :role, true, false, :name, 0, false, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"name": "rev", "role": "reviewer"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"name": "odd", "role": "judge"})
    engine.dispose()
    downgrade(url, "0010")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role FROM users WHERE username = 'rev'")).scalar() == "annotator"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"name": "rev2", "role": "reviewer"})
    engine.dispose()
