"""Upgrades keep data: a database filled at an earlier revision with every kind of row is upgraded to head; every
row is still there with the values it had, and the current app serves every page, list, export and snapshot on it,
on SQLite and PostgreSQL.

The rows are written with SQLAlchemy Core on the schema reflected at the fill revision, never through app.models
(which describes head), so each revision gets exactly the columns it had. Guards fail when a table or column of the
fill revision is left unfilled, or a kind of row (role, task kind, source, split, job status, ...) is missing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, insert, inspect, select, text
from sqlalchemy.pool import NullPool

from app.migrations_runner import alembic_config, head_revision, upgrade
from app.services.ai_calibration import CALIBRATED_KINDS
from app.services.ai_feedback import LABEL_AI_KIND
from app.services.annotations import CHOICES
from app.services.rounds.config import ROUND_KIND
from app.services.rounds.flagged import FLAGGED_TASK_PRIORITY
from app.services.world_build import WORLD_BUILD_KIND
from domain.vocabulary import (
    ASSIGNMENT_STATUSES,
    JOB_STATUSES,
    MODEL_KINDS,
    MODEL_STAGES,
    QUALIFICATION_STATUSES,
    ROLES,
    SELECTIONS,
    SOURCES,
    SPLITS,
    TASK_KINDS,
)
from tests.app.test_security_routes import admin_only, all_routes, concrete, review_only
from tests.conftest import BACKENDS, CI, PG_ADMIN_URL, _dispose_engines, _drop_pg_database, _new_pg_database
from tests.factories import csrf_from, session_csrf

# The schemas an installation upgrades from: the last release's (the first release ended at 0005) and the revision
# just before head (the last release once head is the one being written). Move LAST_RELEASE to a release's head when
# it ships; the revision before head follows head by itself. The initial schema too: from it every migration runs
# on filled tables (SQLite copies a table to alter it; the copy must keep the rows that reference it).
INITIAL = "0001"
LAST_RELEASE = "0005"


def _revision_before_head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_revision(head_revision()).down_revision


FILL_REVISIONS = list(dict.fromkeys([INITIAL, LAST_RELEASE, _revision_before_head()]))
# PostgreSQL alters tables in place, so the initial schema's case (rows kept through SQLite's table copies) is
# SQLite's alone: PostgreSQL upgrades from the last release and the revision before head, which keeps CI short.
CASES = [
    (backend, revision)
    for backend in BACKENDS
    for revision in FILL_REVISIONS
    if backend == "sqlite" or revision in (LAST_RELEASE, _revision_before_head())
]

PASSWORD = "password123"
ADMIN_TOKEN, ALICE_TOKEN, REVOKED_TOKEN = "rlhf_admin_upgrade_token", "rlhf_alice_upgrade_token", "rlhf_revoked_token"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# Each vocabulary the product agrees on, and the column whose filled rows must use every one of its values.
KINDS = {
    ("users", "role"): ROLES,
    ("tasks", "kind"): TASK_KINDS,
    ("tasks", "selection"): SELECTIONS,
    ("annotations", "kind"): TASK_KINDS,
    ("annotations", "source"): SOURCES,
    ("annotations", "choice"): CHOICES,
    ("prompts", "split"): SPLITS,
    ("jobs", "status"): JOB_STATUSES,
    ("jobs", "kind"): ("generate", ROUND_KIND, LABEL_AI_KIND, WORLD_BUILD_KIND),
    ("model_versions", "kind"): MODEL_KINDS,
    ("model_versions", "stage"): MODEL_STAGES,
    ("assignments", "status"): ASSIGNMENT_STATUSES,
    ("qualification_results", "status"): QUALIFICATION_STATUSES,
    ("adjudications", "kind"): TASK_KINDS,
    ("ai_calibrations", "kind"): CALIBRATED_KINDS,
}


# ---- the filled database -------------------------------------------------------------------------------------


def filled_rows(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every kind of row of every table, in insertion order (referenced rows first), with the columns of head;
    `fill` keeps the columns the fill revision has. Ids are given so that pages can be asked for by id."""
    from app.security import hash_password, hash_token, new_public_id
    from app.services.prompts import prompt_hash

    password_hash = hash_password(PASSWORD)
    t = [T0 + timedelta(minutes=i) for i in range(60)]

    def user(id, username, role, **kw):
        return {
            "id": id,
            "username": username,
            "role": role,
            "password_hash": password_hash,
            "is_active": True,
            "is_ai": False,
            "public_id": new_public_id(),
            "session_version": 0,
            "labels_excluded": False,
            "created_at": t[0],
            **kw,
        }

    def prompt(id, text=None, messages=None, split="train", **kw):
        return {
            "id": id,
            "text": text,
            "messages": messages,
            "content_hash": prompt_hash(text=text if messages is None else None, messages=messages),
            "source": "import",
            "tags": [],
            "split": split,
            "meta": {},
            "created_at": t[1],
            "retired_at": None,
            **kw,
        }

    def generation(id, prompt_id, text, model_id=2, **kw):
        return {
            "id": id,
            "prompt_id": prompt_id,
            "model_version_id": model_id,
            "text": text,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": 32,
            "seed": id,
            "finish_reason": "eos",
            "num_tokens": 3,
            "logprob": -1.5,
            "source": "model" if model_id else "imported",
            "job_id": 2,
            "created_at": t[2],
            **kw,
        }

    def task(id, prompt_id, kind, *, overlap=1, done=0, **kw):
        return {
            "id": id,
            "prompt_id": prompt_id,
            "kind": kind,
            "overlap": overlap,
            "priority": 0,
            "done_count": done,
            "completed": done >= overlap,
            "meta": {},
            "job_id": 2,
            "created_at": t[3],
            "retired_at": None,
            "selection": None,
            "selection_score": None,
            "gold": False,
            **kw,
        }

    def annotation(id, task_id, user_id, kind, positions, *, source="human", **kw):
        return {
            "id": id,
            "task_id": task_id,
            "user_id": user_id,
            "source": source,
            "kind": kind,
            "choice": None,
            "chosen_id": None,
            "strength": None,
            "ranking": None,
            "ratings": None,
            "critiques": None,
            "critique": None,
            "rewrite": None,
            "flags": None,
            "positions": positions,
            "time_spent_ms": 900,
            "idempotency_key": f"upgrade-{id}",
            "request_hash": f"{id:064d}",
            "meta": {},
            "created_at": t[10 + id],
            "deleted_at": None,
            "guideline_version_id": None,
            **kw,
        }

    def job(id, kind, status, **kw):
        return {
            "id": id,
            "kind": kind,
            "round_number": None,
            "status": status,
            "priority": 0,
            "config": {},
            "progress_done": 0.0,
            "progress_total": 0.0,
            "progress_message": "",
            "metrics": {},
            "result": {},
            "attempts": 0 if status == "queued" else 1,
            "max_attempts": 3,
            "error": None,
            "failed_stage": None,
            "error_summary": None,
            "error_log": None,
            "output_path": None,
            "worker_id": None,
            "cancel_requested": False,
            "created_by_id": 1,
            "created_at": t[id],
            "started_at": None if status == "queued" else t[id],
            "heartbeat_at": None,
            "finished_at": t[id + 1] if status in ("succeeded", "failed", "cancelled") else None,
            **kw,
        }

    def model(id, name, kind, stage, **kw):
        return {
            "id": id,
            "name": name,
            "kind": kind,
            "stage": stage,
            "parent_id": None,
            "base_model_id": None,
            "path": str(data_dir / "models" / name),
            "job_id": None,
            "round_job_id": None,
            "metrics": {},
            "is_current": False,
            "created_at": t[4],
            **kw,
        }

    def adjudication(id, task_id, reviewer_id, kind, positions, **kw):
        return {
            "id": id,
            "task_id": task_id,
            "reviewer_id": reviewer_id,
            "kind": kind,
            "choice": None,
            "chosen_id": None,
            "strength": None,
            "ranking": None,
            "ratings": None,
            "rewrite": None,
            "positions": positions,
            "created_at": t[46 + id],
            **kw,
        }

    def calibration(id, kind, n, agreed, **kw):
        return {
            "id": id,
            "annotator_id": 4,
            "judge": "reward_model rm#4",
            "job_id": 4,
            "kind": kind,
            "n": n,
            "agreed": agreed,
            "rate": None,
            "low": None,
            "high": None,
            "created_at": t[4],
            **kw,
        }

    failed_round_dir = data_dir / "rounds" / "3"
    return {
        "users": [
            user(1, "admin", "admin"),
            user(2, "alice", "annotator", session_version=2),
            # made by single sign-on: no password, the provider's account
            user(3, "bob", "annotator", password_hash=None, oidc_issuer="https://sso.example.org", oidc_subject="b-17"),
            user(4, "judge", "annotator", password_hash=None, is_ai=True),
            user(5, "carol", "annotator", is_active=False, labels_excluded=True),
            user(6, "rita", "reviewer"),
        ],
        "api_tokens": [
            {"id": 1, "user_id": 1, "token_hash": hash_token(ADMIN_TOKEN), "name": "ci", "created_at": t[0]},
            {"id": 2, "user_id": 2, "token_hash": hash_token(ALICE_TOKEN), "name": "", "created_at": t[0]},
            {
                "id": 3,
                "user_id": 3,
                "token_hash": hash_token(REVOKED_TOKEN),
                "name": "old",
                "created_at": t[0],
                "revoked_at": t[1],
            },
        ],
        "login_failures": [{"id": 1, "username": "alice", "address": "203.0.113.9", "created_at": t[0]}],
        "round_schedules": [
            {
                "id": 1,
                "enabled": False,
                "min_new_annotations": 50,
                "every_minutes": 60.0,
                "config": {"algo": "dpo"},
                "last_fired_at": t[5],
                "last_annotation_id": 2,
                "updated_at": t[5],
            }
        ],
        "jobs": [
            job(
                1,
                "round",
                "succeeded",
                round_number=1,
                config={"algo": "dpo"},
                progress_done=1.0,
                progress_total=1.0,
                progress_message="done",
                metrics={"reward/eval_accuracy": 0.75},
                result={
                    "policy_id": 3,
                    "reward_model_id": 4,
                    "parent_policy_id": 2,
                    "baseline_policy_id": 2,
                    "verdict_job_id": 2,
                    "tasks": 2,
                },
                output_path=str(data_dir / "rounds" / "1"),
                worker_id="w1",
                heartbeat_at=t[1],
            ),
            job(2, "generate", "succeeded", config={"n": 2}, result={"tasks": 8}),
            job(
                3,
                "round",
                "failed",
                round_number=2,
                config={"algo": "ppo"},
                error="Traceback ...\nRuntimeError: out of memory",
                failed_stage="reward",
                error_summary="out of memory",
                error_log="reward/stderr.log",
                output_path=str(failed_round_dir),
            ),
            job(4, "label-ai", "cancelled", cancel_requested=True, config={"judge": "reward_model"}),
            job(5, "round", "running", round_number=3, config={"algo": "rs"}, worker_id="w2", heartbeat_at=t[6]),
            job(6, "world", "queued", created_by_id=None),
        ],
        "job_metrics": [
            {"id": 1, "job_id": 1, "stage": "reward", "step": 10, "values": {"loss": 0.5}, "created_at": t[2]},
            {"id": 2, "job_id": 1, "stage": "dpo", "step": 20, "values": {"loss": 0.25}, "created_at": t[3]},
        ],
        "model_versions": [
            model(1, "tiny-pretrained", "policy", "pretrained"),
            model(2, "tiny-sft", "policy", "sft", parent_id=1, job_id=2),
            model(3, "round-1-policy", "policy", "rlhf", parent_id=2, job_id=1, round_job_id=1, is_current=True),
            model(4, "round-1-reward", "reward", "rlhf", job_id=1, round_job_id=1, is_current=True),
            model(5, "imported", "policy", "imported", path=""),
            model(6, "tiny-sft-lora", "policy", "sft", base_model_id=2, metrics={"lora_r": 8}),
        ],
        "prompts": [
            prompt(1, "What is 2+2?", tags=["math"], meta={"origin": "seed"}),
            prompt(2, "Name a colour."),
            prompt(3, "Count to three."),
            prompt(4, "Greet me."),
            prompt(5, messages=[{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}]),
            prompt(6, "Held out?", split="eval"),
            prompt(7, "An old question.", retired_at=t[8]),
            prompt(8, "Gold: what is 1+1?"),
        ],
        "generations": [
            generation(1, 1, "four-4"),
            generation(2, 1, "five-5"),
            generation(3, 2, "red-colour"),
            generation(4, 2, "blue-colour"),
            generation(5, 3, "one two three"),
            generation(6, 3, "one two"),
            generation(7, 3, "uno"),
            generation(8, 4, "Hello there!"),
            generation(9, 4, "=cmd|' /C calc'!A0"),
            generation(10, 5, "Blue sky.", model_id=None, job_id=None),
            generation(11, 5, "A long story about light.", model_id=None, job_id=None),
            generation(12, 7, "old-a"),
            generation(13, 7, "old-b"),
            generation(14, 8, "two-2"),
            generation(15, 8, "three-3"),
            # the round's verdict: its new policy beside the one before it, on a held-out prompt
            generation(16, 6, "Held out, yes.", model_id=3),
            generation(17, 6, "No.", model_id=2),
            # a flagged answer of the round (it grew long and repeats itself) beside the old one
            generation(18, 1, "four four four four", model_id=3, job_id=1, finish_reason="length", num_tokens=32),
            generation(19, 1, "four", model_id=2, job_id=1),
        ],
        "tasks": [
            task(1, 1, "pairwise", overlap=2, done=2, selection="uncertainty", selection_score=0.02),
            task(2, 2, "pairwise", overlap=2, done=2, selection="random"),
            task(3, 3, "ranking", overlap=2, done=2, selection="disagreement", selection_score=0.4),
            task(4, 4, "rating", done=1, priority=5),
            task(5, 5, "pairwise", overlap=2, job_id=None),  # open: alice holds it, the admin may take it
            task(6, 7, "pairwise", retired_at=t[8]),
            task(7, 8, "pairwise", done=1, gold=True),
            task(8, 6, "pairwise", overlap=2, done=2, selection="random", verdict_round_id=1, meta={"order_seed": "v"}),
            task(
                9,
                1,
                "pairwise",
                done=1,
                priority=FLAGGED_TASK_PRIORITY,
                job_id=1,
                flag_reason="length_growth,repetition",
            ),
        ],
        "task_positions": [
            {"task_id": task_id, "position": position, "generation_id": generation_id}
            for task_id, generation_ids in {
                1: [1, 2],
                2: [3, 4],
                3: [5, 6, 7],
                4: [8, 9],
                5: [10, 11],
                6: [12, 13],
                7: [14, 15],
                8: [16, 17],
                9: [18, 19],
            }.items()
            for position, generation_id in enumerate(generation_ids)
        ],
        "gold_answers": [
            {
                "task_id": 7,
                "answer": {"choice": "chosen", "chosen_id": 14},
                "explanation": "1+1 is 2.",
                "qualification": True,
                "created_at": t[3],
            }
        ],
        "qualification_results": [
            {"user_id": 2, "status": "passed", "correct": 1, "total": 1, "threshold": 0.8, "decided_at": t[20]},
            {"user_id": 3, "status": "failed", "correct": 0, "total": 1, "threshold": 0.8, "decided_at": t[21]},
            {
                "user_id": 5,
                "status": "allowed",
                "correct": 0,
                "total": 1,
                "threshold": 0.8,
                "decided_at": t[22],
                "decided_by_id": 1,
            },
        ],
        "guideline_versions": [
            {
                "id": 1,
                "job_id": None,
                "version": 1,
                "body": "# Prefer correct answers",
                "created_by_id": 1,
                "created_at": t[2],
            },
            {
                "id": 2,
                "job_id": 2,
                "version": 1,
                "body": "Colours: prefer the common one.",
                "created_by_id": 1,
                "created_at": t[2],
            },
        ],
        "guideline_reads": [{"user_id": 2, "guideline_version_id": 1, "read_at": t[3]}],
        "assignments": [
            {
                "id": 1,
                "task_id": 1,
                "user_id": 2,
                "status": "done",
                "permutation": [2, 1],
                "leased_at": t[10],
                "lease_expires_at": t[40],
                "skip_reason": None,
                "updated_at": t[11],
            },
            {
                "id": 2,
                "task_id": 6,
                "user_id": 3,
                "status": "skipped",
                "permutation": [12, 13],
                "leased_at": t[10],
                "lease_expires_at": t[40],
                "skip_reason": "unclear prompt",
                "updated_at": t[12],
            },
            {
                "id": 3,
                "task_id": 5,
                "user_id": 2,
                "status": "leased",
                "permutation": [11, 10],
                "leased_at": t[30],
                "lease_expires_at": t[50],
                "updated_at": t[30],
            },
        ],
        "annotations": [
            annotation(
                1,
                1,
                2,
                "pairwise",
                [2, 1],
                choice="chosen",
                chosen_id=1,
                strength=3,
                critique="four is right",
                flags=["broken"],
                guideline_version_id=1,
            ),
            annotation(2, 1, 3, "pairwise", [1, 2], choice="chosen", chosen_id=1, strength=1),
            annotation(3, 2, 2, "pairwise", [3, 4], choice="tie"),
            annotation(4, 2, 3, "pairwise", [4, 3], choice="both_bad", flags=["unsafe"]),
            annotation(5, 3, 2, "ranking", [5, 6, 7], ranking=[5, 7, 6]),
            annotation(
                6,
                4,
                3,
                "rating",
                [8, 9],
                ratings={"8": "good", "9": "bad"},
                critiques={"9": "not a greeting"},
                rewrite="Hello, nice to meet you!",
            ),
            annotation(
                7,
                5,
                4,
                "pairwise",
                [10, 11],
                source="ai",
                choice="chosen",
                chosen_id=10,
                strength=2,
                time_spent_ms=None,
                meta={"judge": "reward_model", "scores": [1.5, -0.5]},
            ),
            annotation(8, 4, 2, "rating", [8, 9], ratings={"8": "bad", "9": "bad"}, deleted_at=t[45]),
            annotation(9, 7, 2, "pairwise", [14, 15], choice="chosen", chosen_id=14, strength=2),
            annotation(10, 3, 1, "ranking", [7, 6, 5], ranking=[5, 6, 7]),  # an admin labels too
            annotation(11, 8, 2, "pairwise", [17, 16], choice="chosen", chosen_id=16, strength=2),  # the verdict's
            annotation(12, 8, 3, "pairwise", [16, 17], choice="tie"),
            annotation(13, 9, 3, "pairwise", [18, 19], choice="chosen", chosen_id=19, strength=3),  # the flagged's
        ],
        # the disagreements' final labels: the reviewer's, then the admin's that supersedes it on task 2
        "adjudications": [
            adjudication(1, 2, 6, "pairwise", [3, 4], choice="chosen", chosen_id=3, strength=2, note="red is commoner"),
            adjudication(2, 2, 1, "pairwise", [3, 4], choice="tie", note="either colour answers it"),
            adjudication(3, 3, 6, "ranking", [5, 6, 7], ranking=[5, 6, 7], note="complete counts first"),
            adjudication(
                4, 4, 6, "rating", [8, 9], ratings={"8": "good", "9": "bad"}, rewrite="Hi there!", note="9 is a formula"
            ),
        ],
        # the cancelled label-ai job's calibration of its judge: no human ranking pairs to compare, so unknown
        "ai_calibrations": [
            calibration(1, "pairwise", 3, 2, rate=2 / 3, low=0.21, high=0.94),
            calibration(2, "ranking", 0, 0),
        ],
    }


def reflected(conn) -> MetaData:
    metadata = MetaData()
    metadata.reflect(conn)
    metadata.remove(metadata.tables["alembic_version"])
    return metadata


def _checked_values(inspector, table: str, column: str, *, default) -> set[str]:
    """The values the column's `IN (...)` CHECK admits at the inspected revision (`default` where it has none)."""
    for check in inspector.get_check_constraints(table):
        if check["name"] == f"ck_{table}_{column}":
            return set(re.findall(r"'([^']*)'", check["sqltext"]))
    return set(default)


def fill(conn, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The rows, restricted to the tables and columns of the connection's revision; the guards first."""
    schema = reflected(conn)
    unfilled = sorted(set(schema.tables) - set(rows))
    assert not unfilled, f"tables the filler does not fill (add their rows to filled_rows): {unfilled}"
    for name, table in schema.tables.items():
        kept = [{k: v for k, v in row.items() if k in table.c} for row in rows[name]]
        empty = [c.name for c in table.c if all(row.get(c.name) is None for row in kept)]
        assert not empty, f"{name}: columns no filled row sets (give one a value): {empty}"
        rows[name] = kept
    inspector = inspect(conn)
    for (name, column), values in KINDS.items():
        if name in schema.tables and column in schema.tables[name].c:
            # a value the revision's CHECK does not admit yet (the reviewer role before 0011): its rows wait for it
            admitted = set(values) & _checked_values(inspector, name, column, default=values)
            rows[name] = [row for row in rows[name] if row.get(column) in admitted | {None}]
            missing = admitted - {row.get(column) for row in rows[name]}
            assert not missing, f"{name}.{column}: no filled row has {sorted(missing)}"
    for name, table_rows in rows.items():
        if name in schema.tables:
            for row in table_rows:  # one at a time: the rows of a table set different columns
                conn.execute(insert(schema.tables[name]).values(row))
    if conn.dialect.name == "postgresql":  # explicit ids leave the sequences behind: as the app had them
        for name, table in schema.tables.items():
            if "id" in table.c and rows[name]:
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
                )


def all_rows(conn) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every row of every table, by primary key."""
    out = {}
    for name, table in reflected(conn).tables.items():
        key = list(table.primary_key.columns)
        out[name] = {tuple(r[c.name] for c in key): dict(r) for r in conn.execute(select(table)).mappings()}
    return out


# ---- the test -----------------------------------------------------------------------------------------------


@pytest.fixture
def db_url(backend, tmp_path):
    """An empty database (tests/conftest.py's is a copy of one already at head): the test migrates it itself."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
        return
    try:
        name, url = _new_pg_database("template0")
    except Exception as exc:
        if CI:
            pytest.fail(f"PostgreSQL is mandatory under CI and unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    yield url
    _dispose_engines()
    _drop_pg_database(name)


def _log_in(client, username: str) -> dict[str, str]:
    page = client.get("/login")
    form = {"username": username, "password": PASSWORD, "csrf_token": csrf_from(page.text), "next": "/"}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 303, username
    return {"X-CSRF-Token": session_csrf(client)}


# The filled row each path parameter names; a route whose row's table is not in the fill revision is not asked.
ROUTE_IDS = {
    "job_id": ("jobs", "3"),  # the failed round: its page, metrics and log
    "round_id": ("jobs", "1"),  # the succeeded round: its report and snapshot
    "user_id": ("users", "2"),
    "token_id": ("api_tokens", "2"),
    "model_id": ("model_versions", "3"),
    "task_id": ("tasks", "2"),  # the disagreement with final labels: its review page
    "prompt_id": ("prompts", "1"),
    "annotation_id": ("annotations", "1"),  # alice's
    "version_id": ("guideline_versions", "1"),
    "fmt": ("annotations", "rich"),
    "name": ("annotations", "manifest.json"),
}
# Routes that show what a revision before its table or column could not have held (404: none written, no log).
ROUTE_NEEDS = {"/api/v1/guidelines": ("guideline_versions", "id"), "/admin/jobs/{job_id}/log": ("jobs", "error_log")}
# Routes of an optional service the test does not configure: they answer as on an installation without it.
ROUTE_STATUS = {"/auth/oidc/login": 404, "/auth/oidc/callback": 404}  # single sign-on is not configured


def _walk(client, routes, headers, columns, **ids: str) -> list[tuple[str, int]]:
    """GET each route (`ids` names other rows than ROUTE_IDS) that the fill revision's `columns` (table -> its
    columns) could serve; the ones that answered neither 200 nor a redirect elsewhere than the login form (nor, for
    ROUTE_STATUS's, their status)."""
    sample = {p: value for p, (_table, value) in ROUTE_IDS.items()} | ids
    failures = []
    for path in routes:
        table, column = ROUTE_NEEDS.get(path, ("users", "id"))
        if column not in columns.get(table, ()) or any(
            t not in columns for p, (t, _value) in ROUTE_IDS.items() if "{" + p in path
        ):
            continue
        response = client.get(concrete(path, sample), headers=headers, follow_redirects=False)
        redirected = response.is_redirect and not response.headers["location"].startswith("/login")
        if path in ROUTE_STATUS:
            if response.status_code != ROUTE_STATUS[path]:
                failures.append((concrete(path, sample), response.status_code))
        elif response.status_code != 200 and not redirected:
            failures.append((concrete(path, sample), response.status_code))
    return failures


@pytest.mark.parametrize(("backend", "revision"), CASES, indirect=["backend"])
def test_an_upgrade_keeps_every_row_and_the_app_works_on_it(settings, backend, revision):
    from app.db import get_sessionmaker, make_engine
    from app.main import create_app
    from app.services.exports import FORMATS, iter_export
    from app.services.snapshots import SnapshotFilters, snapshot_dir, write_snapshot

    url = settings.sqlalchemy_url
    upgrade(url, revision)
    log = settings.data_dir / "rounds" / "3" / "reward" / "stderr.log"
    log.parent.mkdir(parents=True)
    log.write_text("RuntimeError: out of memory\n", encoding="utf-8")
    engine = make_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        fill(conn, filled_rows(settings.data_dir))
    with engine.connect() as conn:
        before = all_rows(conn)

    upgrade(url, "head")
    with engine.connect() as conn:
        after = all_rows(conn)
    engine.dispose()
    for name, rows in before.items():
        assert set(after[name]) == set(rows), name
        for key, row in rows.items():
            assert {c: after[name][key][c] for c in row} == row, (name, key)

    # the current app on the upgraded database
    annotations_of_revision = {key[0] for key in before["annotations"]}
    gold_at_fill = "gold" in next(iter(before["tasks"].values()))
    exported = annotations_of_revision - {8} - ({9} if gold_at_fill else set())  # undone; a gold task's
    session = get_sessionmaker()()
    try:
        out = snapshot_dir(settings.data_dir, 1)
        manifest = write_snapshot(session, out=out, filters=SnapshotFilters(), round_id=1)
        assert manifest["rows"] and all(manifest["rows"].values()), manifest["rows"]  # every file has lines
        service = {fmt: [line for batch in iter_export(session, fmt=fmt) for line in batch] for fmt in FORMATS}
    finally:
        session.close()
    assert {line["annotation_id"] for line in service["rich"]} == exported
    texts = {g["text"] for g in before["generations"].values()} | {"Hello, nice to meet you!"}
    for fmt, lines in service.items():
        assert any(value in json.dumps(lines) for value in texts), fmt

    gets = sorted(path for method, path in all_routes() if method == "GET")
    pages = [p for p in gets if not p.startswith("/api/")]  # the API takes bearer tokens only
    columns = {name: set(next(iter(rows.values()))) for name, rows in before.items()}
    with TestClient(create_app()) as client:
        admin = _log_in(client, "admin")
        assert _walk(client, pages, admin, columns, annotation_id="10") == []
        for fmt, lines in service.items():
            for response in (
                client.get("/admin/exports/download", params={"format": fmt}, headers=admin),
                client.get(f"/api/v1/exports/{fmt}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
            ):
                assert response.status_code == 200, (fmt, response.text)
                assert [json.loads(x) for x in response.text.splitlines()] == lines, fmt
        as_csv = client.get("/admin/exports/download", params={"format": "rich", "csv": "true"}, headers=admin)
        assert as_csv.status_code == 200 and as_csv.headers["x-row-count"] == str(len(service["rich"]))
    with TestClient(create_app()) as client:  # bearer tokens only: every API list
        api = [p for p in gets if p.startswith("/api/")]
        as_admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert _walk(client, api, as_admin, columns) == []
        # what the merged features read from the upgraded rows: the two policies met on the verdict's and the
        # flagged task's three judgements; the verdict, the final labels and the calibration where the revision had them
        assert client.get("/api/v1/leaderboard", headers=as_admin).json()["comparisons"] == 3
        verdict = client.get("/api/v1/rounds/1", headers=as_admin).json()["human_verdict"]
        assert (verdict["wins"], verdict["ties"]) == ((1, 1) if "verdict_round_id" in columns["tasks"] else (0, 0))
        final = client.get("/api/v1/review/2", headers=as_admin).json()
        assert "either colour answers it" in json.dumps(final) or "adjudications" not in columns
        calibrated = client.get("/api/v1/label-ai/calibration", headers=as_admin).json()
        assert [c["judge"] for c in calibrated] == (["reward_model rm#4"] if "ai_calibrations" in columns else [])
        mine = [p for p in api if not (admin_only("GET", p) or review_only("GET", p))]
        assert _walk(client, mine, {"Authorization": f"Bearer {ALICE_TOKEN}"}, columns) == []
        assert (
            client.get("/api/v1/annotations", headers={"Authorization": f"Bearer {REVOKED_TOKEN}"}).status_code == 401
        )
    with TestClient(create_app()) as client:
        alice = _log_in(client, "alice")
        assert (
            _walk(client, [p for p in pages if not (admin_only("GET", p) or review_only("GET", p))], alice, columns)
            == []
        )
        assert "A long story about light." in client.get("/annotate").text  # her leased task
        # and labels it: a new row after the upgraded ones
        bearer = {"Authorization": f"Bearer {ALICE_TOKEN}", "Idempotency-Key": "after-upgrade"}
        body = {"task_id": 5, "choice": "chosen", "chosen_id": 11, "strength": 1}
        submitted = client.post("/api/v1/annotations", headers=bearer, json=body)
        next_id = max(annotations_of_revision) + 1
        assert submitted.status_code == 201 and submitted.json() == {"annotation_id": next_id}, submitted.text
    if any(user["role"] == "reviewer" for user in before["users"].values()):  # a revision with the role
        with TestClient(create_app()) as client:
            rita = _log_in(client, "rita")
            assert _walk(client, [p for p in pages if review_only("GET", p)], rita, columns) == []
            assert "either colour answers it" in client.get("/review/tasks/2").text  # the current final label


def test_the_filler_refuses_a_table_or_a_column_it_leaves_empty(tmp_path):
    """A table or column a later migration adds cannot be skipped silently: the fill fails naming it."""
    from app.db import make_engine

    url = f"sqlite:///{tmp_path / 'guard.sqlite3'}"
    upgrade(url, INITIAL)
    engine = make_engine(url, poolclass=NullPool)
    for change, named in (
        ("CREATE TABLE reviews (id INTEGER PRIMARY KEY)", "reviews"),
        ("ALTER TABLE users ADD COLUMN nickname VARCHAR(64)", "nickname"),
    ):
        with engine.begin() as conn:
            conn.execute(text(change))
            with pytest.raises(AssertionError, match=named):
                fill(conn, filled_rows(tmp_path))
            conn.rollback()
    engine.dispose()


def test_the_filler_refuses_a_vocabulary_value_no_row_has_once_the_schema_admits_it(tmp_path):
    """A vocabulary value is required from the revision whose CHECK admits it (the reviewer role, 0011); before it
    its rows are left out (the upgrade test's earlier fills, which the CHECK would refuse otherwise)."""
    from app.db import make_engine

    url = f"sqlite:///{tmp_path / 'roles.sqlite3'}"
    upgrade(url, "0011")
    engine = make_engine(url, poolclass=NullPool)
    rows = filled_rows(tmp_path)
    rows["users"] = [user for user in rows["users"] if user["role"] != "reviewer"]
    with engine.begin() as conn, pytest.raises(AssertionError, match="users.role: no filled row has \\['reviewer'\\]"):
        fill(conn, rows)
    engine.dispose()


def test_sqlite_references_broken_before_the_upgrade_do_not_stop_it(tmp_path):
    """Migrations run with SQLite's foreign keys off and fail on a reference they broke; one the database already
    had broken (written with foreign keys off, as the sqlite3 shell does) is not theirs: it stays, the upgrade runs."""
    import sqlite3
    from contextlib import closing

    path = tmp_path / "dangling.sqlite3"
    upgrade(f"sqlite:///{path}", INITIAL)
    with closing(sqlite3.connect(path)) as conn:  # foreign keys off: sqlite3's default
        conn.execute(
            "INSERT INTO api_tokens (id, user_id, token_hash, name, created_at) VALUES (1, 77, 'h', '', '2026-11-20')"
        )
        conn.commit()
    upgrade(f"sqlite:///{path}", "head")
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)
        assert conn.execute("SELECT id, user_id FROM api_tokens").fetchall() == [(1, 77)]
