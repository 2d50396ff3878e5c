"""The annotate hot path's SQL, written once: for the services it runs (app.services.assignment: next_task and the
slot locks; app.services.annotations: submit_annotation) and the bearer-token lookup (app.annotate.auth).

Why prepared text and not expressions: on this path, building ORM expressions and flushing the unit of work cost
more than the queries themselves (measured: about 10x the time SQLite spends executing them); and with the same
statements built with SQLAlchemy Core from the ORM tables, a next + submit pair took about 9% longer in process
(SQLite: 2.6 ms against 2.4 ms, medians of alternating rounds), a cost the annotate throughput would show. So the
texts stay, here in one place, with their bind and result types; they name the tables and columns app.models
declares, and the service tests run every one of them on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text, bindparam, column, text

from app.models import UTCDateTime

CANDIDATE_BATCH = 16

_DT = UTCDateTime()
_NO = bindparam("no", value=False, type_=Boolean())
_YES = bindparam("yes", value=True, type_=Boolean())


def prepared(
    statement: str,
    *,
    dates: tuple[str, ...] = ("now", "expires"),
    json_in: tuple[str, ...] = (),
    columns: dict[str, Any] | None = None,
):
    """A textual statement with its bind types (`dates` as UTC datetimes, `json_in` as JSON, `:no` as false) and,
    given `columns`, its result types."""
    stmt = text(statement)
    named = set(re.findall(r":(\w+)", statement))
    binds = [bindparam(n, type_=_DT) for n in dates if n in named]
    binds += [bindparam(n, type_=JSON(none_as_null=True)) for n in json_in]
    if "no" in named:
        binds.append(_NO)
    if "yes" in named:
        binds.append(_YES)
    stmt = stmt.bindparams(*binds)
    return stmt.columns(*(column(n, t) for n, t in columns.items())) if columns else stmt


# ---- the bearer token's user -----------------------------------------------------------------------------------

TOKEN_USER = prepared(
    "SELECT u.id, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id "
    "WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL AND u.is_active"
)

# ---- assignment: leases and slots -------------------------------------------------------------------------------

LOCK_USER = prepared("SELECT id FROM users WHERE id = :user FOR UPDATE")
# A lease is not worth an fsync: if the database crashed right after, the annotator would just be offered a task
# again (annotations keep the durable commit). Same round trip as the user lock.
LOCK_USER_LEASE_ASYNC = prepared(
    "SELECT set_config('synchronous_commit', 'off', true) FROM users WHERE id = :user FOR UPDATE"
)
HELD = prepared(
    "SELECT task_id, permutation, lease_expires_at FROM assignments WHERE user_id = :user AND "
    "status = 'leased' AND lease_expires_at > :now ORDER BY leased_at LIMIT 1",
    columns={"task_id": Integer(), "permutation": JSON(), "lease_expires_at": _DT},
)
# Retired and gold tasks are never offered by the regular queue (residual filters: few rows are retired or gold,
# the queue index still leads).
TOP_PRIORITY = prepared("SELECT max(priority) FROM tasks WHERE completed = :no AND retired_at IS NULL AND gold = :no")
NEXT_PRIORITY = prepared(
    "SELECT max(priority) FROM tasks WHERE completed = :no AND retired_at IS NULL AND gold = :no "
    "AND priority < :priority"
)
_CANDIDATE_WHERE = (
    "FROM tasks t WHERE t.completed = :no AND t.retired_at IS NULL AND t.gold = :no AND t.priority = :priority "
    "AND t.id > :after "
    "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id AND a.user_id = :user "
    "AND a.status IN ('done', 'skipped')) "
    "AND t.done_count + (SELECT count(*) FROM assignments l WHERE l.task_id = t.id AND l.status = 'leased' "
    "AND l.lease_expires_at > :now) < t.overlap ORDER BY t.id"
)
CANDIDATES = prepared(f"SELECT t.id {_CANDIDATE_WHERE} LIMIT {CANDIDATE_BATCH}")
# PostgreSQL: find and lock in one statement; the slot is then re-checked by a statement that sees every commit
# made before the lock was granted.
CANDIDATE_LOCKED = prepared(f"SELECT t.id {_CANDIDATE_WHERE} LIMIT 1 FOR UPDATE OF t SKIP LOCKED")
SLOT_CHECK = prepared(
    "SELECT t.done_count, t.overlap, t.completed, (SELECT count(*) FROM assignments l WHERE l.task_id = t.id "
    "AND l.status = 'leased' AND l.lease_expires_at > :now AND l.user_id <> :user), (SELECT a.status FROM "
    "assignments a WHERE a.task_id = t.id AND a.user_id = :user) FROM tasks t WHERE t.id = :task"
)
# Gold tasks (app.services.gold): one the annotator has neither done nor skipped, of the qualification set
# (:qualification true) or of those mixed into the queue at the gold rate. No slot limit: every annotator may do each.
GOLD_CANDIDATE = prepared(
    "SELECT t.id FROM gold_answers g JOIN tasks t ON t.id = g.task_id WHERE g.qualification = :qualification "
    "AND t.gold = :yes AND t.retired_at IS NULL AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id "
    "AND a.user_id = :user AND a.status IN ('done', 'skipped')) ORDER BY t.id LIMIT 1",
    columns={"id": Integer()},
).bindparams(bindparam("qualification", type_=Boolean()))
QUALIFICATION_STATUS = prepared("SELECT status FROM qualification_results WHERE user_id = :user")
TASK_SLOTS = "SELECT done_count, overlap, completed FROM tasks WHERE id = :task"
TASK_SLOTS_SQLITE = prepared(TASK_SLOTS)  # the IMMEDIATE transaction already excludes other writers
TASK_SLOTS_LOCKED = prepared(TASK_SLOTS + " FOR UPDATE")
LEASED_BY_OTHERS = prepared(
    "SELECT count(*) FROM assignments WHERE task_id = :task AND status = 'leased' AND "
    "lease_expires_at > :now AND user_id <> :user"
)


def guidelines_in_force(job: str) -> str:
    """SQL: the id of the guideline version in force for the tasks of batch `job` (an SQL expression for the job id;
    NULL for tasks of no batch): the batch's latest version unless it is empty, else the project's latest, else NULL.
    Versions are few: each subquery reads a handful of rows."""
    return (
        f"COALESCE((SELECT gv.id FROM guideline_versions gv WHERE gv.job_id = {job} AND gv.body <> '' AND "
        f"gv.version = (SELECT max(gm.version) FROM guideline_versions gm WHERE gm.job_id = {job})), "
        "(SELECT max(gp.id) FROM guideline_versions gp WHERE gp.job_id IS NULL))"
    )


# The task as shown: its responses in canonical order, each row also carrying the kind, the prompt and the guideline
# version in force (a subquery on the bound task id, not on the row: SQLite evaluates it once).
OFFER = prepared(
    "SELECT g.id, g.text, t.kind, p.text AS prompt_text, p.messages, "
    f"{guidelines_in_force('(SELECT tj.job_id FROM tasks tj WHERE tj.id = :task)')} AS guideline_version_id "
    "FROM task_positions tp JOIN generations g ON g.id = tp.generation_id JOIN tasks t ON t.id = tp.task_id "
    "JOIN prompts p ON p.id = t.prompt_id WHERE tp.task_id = :task ORDER BY tp.position",
    columns={
        "id": Integer(),
        "text": Text(),
        "kind": String(),
        "prompt_text": Text(),
        "messages": JSON(),
        "guideline_version_id": Integer(),
    },
)
# One statement for "lease it": a new row with a fresh shuffle, or this annotator's expired lease renewed with the
# order they saw before (RETURNING gives whichever permutation the row now has).
UPSERT_LEASE = prepared(
    "INSERT INTO assignments (task_id, user_id, status, permutation, leased_at, lease_expires_at, updated_at) "
    "VALUES (:task, :user, 'leased', :permutation, :now, :expires, :now) ON CONFLICT (task_id, user_id) DO UPDATE "
    "SET leased_at = :now, lease_expires_at = :expires, updated_at = :now RETURNING permutation",
    json_in=("permutation",),
    columns={"permutation": JSON()},
)

# ---- annotations: submit ---------------------------------------------------------------------------------------

# The task and its response ids; on PostgreSQL the task row is locked by this very statement (its done_count is
# read from the locked, latest row version), so everything after it in a submit is serialized per task.
_TASK_RESPONSES = (
    "SELECT t.kind, t.done_count, t.overlap, tp.generation_id, t.gold, t.retired_at, t.job_id FROM tasks t "
    "JOIN task_positions tp ON tp.task_id = t.id WHERE t.id = :task ORDER BY tp.position"
)
TASK_RESPONSES_SQLITE = prepared(_TASK_RESPONSES)
TASK_RESPONSES_LOCKED = prepared(_TASK_RESPONSES + " FOR UPDATE OF t")
# Both "was this key used?" and "what is my assignment?" in one round trip.
SUBMIT_STATE = prepared(
    "SELECT (SELECT id FROM annotations WHERE user_id = :user AND idempotency_key = :key) AS key_id, "
    "(SELECT request_hash FROM annotations WHERE user_id = :user AND idempotency_key = :key) AS key_hash, "
    "(SELECT id FROM assignments WHERE task_id = :task AND user_id = :user) AS assignment_id, "
    "(SELECT status FROM assignments WHERE task_id = :task AND user_id = :user) AS status, "
    "(SELECT permutation FROM assignments WHERE task_id = :task AND user_id = :user) AS permutation, "
    "(SELECT lease_expires_at FROM assignments WHERE task_id = :task AND user_id = :user) AS lease_expires_at",
    dates=(),
    columns={
        "key_id": Integer(),
        "key_hash": String(),
        "assignment_id": Integer(),
        "status": String(),
        "permutation": JSON(),
        "lease_expires_at": UTCDateTime(),
    },
)
BY_KEY = prepared(
    "SELECT id, request_hash, task_id, deleted_at FROM annotations WHERE user_id = :user AND idempotency_key = :key"
)
MARK_DONE = prepared("UPDATE assignments SET status = 'done', updated_at = :now WHERE id = :id")
COUNT_DONE = prepared(
    "UPDATE tasks SET done_count = done_count + 1, completed = (done_count + 1 >= overlap) WHERE id = :task"
)
ANNOTATION_FIELDS = (
    "task_id",
    "user_id",
    "source",
    "kind",
    "choice",
    "chosen_id",
    "strength",
    "ranking",
    "ratings",
    "critiques",
    "critique",
    "rewrite",
    "flags",
    "positions",
    "time_spent_ms",
    "idempotency_key",
    "request_hash",
    "meta",
    "created_at",
)
# The guideline version: the one the annotator says they were shown (`:guideline`, when it is a version of this
# task's batch or of the project), else the one in force now; computed inside the INSERT, no round trip of its own.
_GUIDELINE_SHOWN = (
    "(SELECT gc.id FROM guideline_versions gc WHERE gc.id = :guideline AND (gc.job_id IS NULL OR gc.job_id = :batch))"
)
INSERT_ANNOTATION = prepared(
    f"INSERT INTO annotations ({', '.join(ANNOTATION_FIELDS)}, guideline_version_id) VALUES "
    f"({', '.join(':' + f for f in ANNOTATION_FIELDS)}, "
    f"COALESCE({_GUIDELINE_SHOWN}, {guidelines_in_force(':batch')})) RETURNING id",
    dates=("created_at",),
    json_in=("ranking", "ratings", "critiques", "flags", "positions", "meta"),
)
