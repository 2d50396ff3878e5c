"""The data model (DESIGN.md "The data"). The schema is created only by Alembic (migrations/)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from domain.vocabulary import (
    ASSIGNMENT_STATUSES,
    JOB_STATUSES,
    MODEL_KINDS,
    MODEL_STAGES,
    QUALIFICATION_STATUSES,
    ROLES,
    SOURCES,
    SPLITS,
    TASK_KINDS,
)

# Stable constraint names so Alembic migrations (and downgrades) name the same things on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A big integer primary key that is still SQLite's rowid alias (SQLite only autoincrements "INTEGER").
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive; they come back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        # A single sign-on account is the provider's (issuer) subject: one user each, whatever its name is there.
        UniqueConstraint("oidc_issuer", "oidc_subject"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    # None: cannot log in with a password (AI annotators, single sign-on users)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Set for a user made by single sign-on (app.oidc): the OpenID Connect issuer and its `sub` for the person.
    oidc_issuer: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_ai: Mapped[bool] = mapped_column(Boolean, default=False)  # an AI judge's own annotator identity
    # Pseudonymous id for exports: stable, and says nothing about the username.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    # In every session cookie; bumped on logout, password change and deactivation: a cookie with an older one is
    # refused, so those end every session of the user.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Set by an admin (a careless annotator, say): rounds and exports leave this user's labels out. Reversible:
    # the annotations stay, and clearing the flag brings them back.
    labels_excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # sha256 hex of a random 256-bit secret: one indexed lookup per request (argon2 is for passwords).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")


class LoginFailure(Base):
    """Failed logins, counted in the database so throttling holds across server processes."""

    __tablename__ = "login_failures"
    __table_args__ = (Index(None, "username", "created_at"), Index(None, "address", "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        CheckConstraint(_in("split", SPLITS), name="split"),
        CheckConstraint("text IS NOT NULL OR messages IS NOT NULL", name="text_or_messages"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    text: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[Any] | None]  # chat prompt: [{"role", "content"}, ...]
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the canonical content
    source: Mapped[str] = mapped_column(String(64), default="import")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    split: Mapped[str] = mapped_column(String(8), default="train", index=True)  # eval: held out (verdicts only)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Retired: kept for provenance, never shown, trained on or exported again (its tasks retire with it).
    retired_at: Mapped[datetime | None]


class ModelVersion(Base):
    """The model registry: policies and reward models, with lineage. One current model per kind."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("kind", MODEL_KINDS), name="kind"),
        CheckConstraint(_in("stage", MODEL_STAGES), name="stage"),
        Index(
            "uq_model_versions_one_current",
            "kind",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    path: Mapped[str] = mapped_column(Text)
    # a LoRA adapter directory: the registered model its adapter_config.json names as base (None: a whole model,
    # or a base that is not registered; the adapter directory names it either way)
    base_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))  # the run that made it
    round_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Generation(Base):
    """One response: from a policy version with every sampling parameter, or imported (model_version_id None)."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int | None]
    top_p: Mapped[float | None] = mapped_column(Float)
    max_new_tokens: Mapped[int | None]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # eos | length
    num_tokens: Mapped[int | None]
    logprob: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64), default="model")  # model | imported | rewrite
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
        CheckConstraint("overlap >= 1", name="overlap"),
        # The assignment query walks open tasks by priority, then age.
        Index("ix_tasks_open_queue", "completed", "priority", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    overlap: Mapped[int] = mapped_column(default=1)  # how many distinct human annotators it needs
    priority: Mapped[int] = mapped_column(default=0)
    # Human annotations stored (not deleted); completed once it reaches overlap. Kept in the same transaction as
    # the annotation, so the queue never has to count on the hot path.
    done_count: Mapped[int] = mapped_column(default=0)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))  # generation job
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]  # never offered, trained on or exported again; kept for provenance
    # How a generation picked this task out of its candidates (domain SELECTIONS; none for imported tasks) and the
    # group's informativeness under that criterion (trainer.active_selection; none when no reward model scored it).
    selection: Mapped[str | None] = mapped_column(String(16))
    selection_score: Mapped[float | None] = mapped_column(Float)
    # Why a round's reward-hacking checks flagged the new policy's answer (domain FLAG_REASONS, comma-joined; none
    # for every other task): shown to admins, never to annotators (app.services.rounds.flagged).
    flag_reason: Mapped[str | None] = mapped_column(String(64))
    # A task with a known answer (its gold_answers row): offered only at the gold rate or for qualification, never
    # by the regular queue; its annotations measure the annotator and are never preference data.
    gold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # A round's human verdict (app.services.verdict): an eval prompt answered by the round's new policy and by the
    # policy it was evaluated against, blind. Eval-split prompts, so never training data.
    verdict_round_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)

    positions: Mapped[list[TaskPosition]] = relationship(order_by="TaskPosition.position", back_populates="task")


class TaskPosition(Base):
    """The task's responses in canonical order; each annotator sees a shuffled permutation of it."""

    __tablename__ = "task_positions"
    __table_args__ = (UniqueConstraint("task_id", "generation_id"),)

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id"), index=True)

    task: Mapped[Task] = relationship(back_populates="positions")
    generation: Mapped[Generation] = relationship()


class GoldAnswer(Base):
    """A gold task's known answer, in generation ids: {"choice", "chosen_id"} (pairwise), {"ranking"} (best
    first) or {"ratings": {"<generation id>": "good"|"bad"}}. Kept apart from tasks so nothing that shows a task
    can read it."""

    __tablename__ = "gold_answers"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    answer: Mapped[dict[str, Any]] = mapped_column()
    explanation: Mapped[str | None] = mapped_column(Text)  # shown to the annotator after the qualification set
    qualification: Mapped[bool] = mapped_column(Boolean, default=False)  # in the qualification set, not mixed in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QualificationResult(Base):
    """An annotator's graded qualification set (or an admin's leave to annotate without it). No row: not yet
    finished. An admin's reset deletes the row."""

    __tablename__ = "qualification_results"
    __table_args__ = (CheckConstraint(_in("status", QUALIFICATION_STATUSES), name="status"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    correct: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    threshold: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))  # an admin's allow


class Assignment(Base):
    """An annotator's hold on a task: a lease (until lease_expires_at), then done or skipped."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id"),
        CheckConstraint(_in("status", ASSIGNMENT_STATUSES), name="status"),
        Index(None, "user_id", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="leased")
    permutation: Mapped[list[Any]] = mapped_column()  # generation ids in the order shown to this annotator
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_expires_at: Mapped[datetime]
    skip_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Annotation(Base):
    """One annotator's feedback on one task, stored in terms of generation ids (never display positions alone)."""

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        CheckConstraint(_in("source", SOURCES), name="source"),
        CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
        # A human annotates a task once (undo soft-deletes, then the task may be done again).
        Index(
            "uq_annotations_human_task_user",
            "task_id",
            "user_id",
            unique=True,
            sqlite_where=text("source = 'human' AND deleted_at IS NULL"),
            postgresql_where=text("source = 'human' AND deleted_at IS NULL"),
        ),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(8), default="human")
    kind: Mapped[str] = mapped_column(String(16))
    # pairwise: chosen | tie | both_bad; chosen_id is a generation id; strength 1 slightly, 2 clearly, 3 much
    choice: Mapped[str | None] = mapped_column(String(16))
    chosen_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id"))
    strength: Mapped[int | None]
    ranking: Mapped[list[Any] | None]  # generation ids, best first
    ratings: Mapped[dict[str, Any] | None]  # {"<generation id>": "good" | "bad"}
    critiques: Mapped[dict[str, Any] | None]  # {"<generation id>": text}
    critique: Mapped[str | None] = mapped_column(Text)  # overall
    rewrite: Mapped[str | None] = mapped_column(Text)  # the ideal response: an SFT demonstration
    flags: Mapped[list[Any] | None]  # e.g. ["unsafe", "broken"]
    positions: Mapped[list[Any]] = mapped_column()  # generation ids in the order shown
    time_spent_ms: Mapped[int | None]
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the submitted body: replay vs conflict
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. AI judge name and its raw scores
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]  # undo: kept, excluded from exports and counts
    # The guidelines shown while it was made (None: none were written yet, or an AI label or an import).
    guideline_version_id: Mapped[int | None] = mapped_column(ForeignKey("guideline_versions.id"))


class Adjudication(Base):
    """A reviewer's final label for a task (app.services.review), in the task kind's shape and generation ids, with
    the reviewer's note. The newest row of a task is its current label: a new one supersedes, the older stay as
    its history."""

    __tablename__ = "adjudications"
    __table_args__ = (CheckConstraint(_in("kind", TASK_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # as in Annotation: pairwise choice (chosen | tie | both_bad), chosen_id and strength; ranking; ratings
    choice: Mapped[str | None] = mapped_column(String(16))
    chosen_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id"))
    strength: Mapped[int | None]
    ranking: Mapped[list[Any] | None]
    ratings: Mapped[dict[str, Any] | None]
    rewrite: Mapped[str | None] = mapped_column(Text)
    positions: Mapped[list[Any]] = mapped_column()  # the task's generation ids in canonical order (as shown)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuidelineVersion(Base):
    """One saved version of the annotation guidelines (markdown): the project's (job_id None) or one task batch's
    (job_id: the generation job or round that made the batch's tasks). Every save adds a row; none is changed."""

    __tablename__ = "guideline_versions"
    __table_args__ = (
        # version counts 1, 2, 3 ... within its scope (NULL job_ids never collide in a plain unique constraint).
        Index(
            "uq_guideline_versions_project_version",
            "version",
            unique=True,
            sqlite_where=text("job_id IS NULL"),
            postgresql_where=text("job_id IS NULL"),
        ),
        Index(
            "uq_guideline_versions_batch_version",
            "job_id",
            "version",
            unique=True,
            sqlite_where=text("job_id IS NOT NULL"),
            postgresql_where=text("job_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))  # the batch; None: the whole project
    version: Mapped[int] = mapped_column()
    body: Mapped[str] = mapped_column(Text)  # markdown; empty: none (a batch then falls back to the project's)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuidelineRead(Base):
    """An annotator has been shown this guideline version opened: the annotate page opens it only once per version."""

    __tablename__ = "guideline_reads"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    guideline_version_id: Mapped[int] = mapped_column(
        ForeignKey("guideline_versions.id", ondelete="CASCADE"), primary_key=True
    )
    read_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """The job queue lives here: the worker claims queued jobs and runs each in a child process."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        Index(None, "status", "priority", "id"),
        # Never two rounds at once, whatever the pages do.
        Index(
            "uq_jobs_one_active_round",
            "kind",
            unique=True,
            sqlite_where=text("kind = 'round' AND status IN ('queued', 'running')"),
            postgresql_where=text("kind = 'round' AND status IN ('queued', 'running')"),
        ),
        UniqueConstraint("round_number"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    round_number: Mapped[int | None] = mapped_column()  # rounds only: 1, 2, 3 ... in their own sequence
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(default=0)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress_done: Mapped[float] = mapped_column(Float, default=0.0)
    progress_total: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # latest values; the series is in job_metrics
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the job produced (ids, counts, hashes)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    error: Mapped[str | None] = mapped_column(Text)  # the last lines of the failure
    failed_stage: Mapped[str | None] = mapped_column(String(32))  # the step a failed job was in
    error_summary: Mapped[str | None] = mapped_column(Text)  # the failure's one meaningful line, in plain words
    error_log: Mapped[str | None] = mapped_column(Text)  # the log that tells more, relative to output_path
    train_processes: Mapped[int | None] = mapped_column()  # processes each training stage runs on; None: trains none
    output_path: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobMetric(Base):
    """One line of a job's metrics.jsonl (step, total_steps, named values), for the live plots."""

    __tablename__ = "job_metrics"
    __table_args__ = (Index(None, "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32), default="")  # which step of a round (reward, ppo, ...)
    step: Mapped[int] = mapped_column(default=0)
    values: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoundSchedule(Base):
    """Start a round automatically after N new human annotations and/or every T minutes (single row)."""

    __tablename__ = "round_schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    min_new_annotations: Mapped[int | None]
    every_minutes: Mapped[float | None] = mapped_column(Float)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the round config it starts with
    last_fired_at: Mapped[datetime | None]
    last_annotation_id: Mapped[int | None] = mapped_column(BigInteger)  # highest id seen at the last round
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AICalibration(Base):
    """An AI judge's agreement with people on one task kind, from one calibration (`label-ai` scores a seeded sample
    of human-labelled tasks without storing those labels). The rows of one calibration share created_at. n 0: no
    human labels of that kind to compare, so rate, low and high are unknown (NULL)."""

    __tablename__ = "ai_calibrations"
    __table_args__ = (
        CheckConstraint(_in("kind", TASK_KINDS), name="kind"),
        Index(None, "annotator_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))  # the judge's identity
    judge: Mapped[str] = mapped_column(String(200))  # the judge and its model, e.g. "reward_model rm#3"
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column()  # comparisons: pairwise tasks, or pairs within rankings
    agreed: Mapped[int] = mapped_column()
    rate: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)  # the Wilson 95% interval
    high: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
