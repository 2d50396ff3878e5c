"""Annotation guidelines: markdown an admin writes for the whole project and, optionally, for one task batch.

A batch is the set of tasks one job made: a generation job or a round (`tasks.job_id`; imported tasks belong to no
batch). A batch's own guidelines, while its latest version is not empty, replace the project's for its tasks;
saving an empty version gives the batch back to the project's guidelines.

Every save is a new version (`guideline_versions`: 1, 2, 3 ... within its scope); none is changed or deleted, so
each annotation names the version it was made under (`annotations.guideline_version_id`, set by the submit in
app.services.annotations) and any old version can still be read. The annotate page opens the guidelines the first
time an annotator is shown a version (`guideline_reads`), so a changed text is seen once and then stays folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.annotate.statements import guidelines_in_force
from app.inputs import shown_text_problem
from app.models import GuidelineRead, GuidelineVersion, Job, Task, User, utcnow
from app.services.errors import Conflict, NotFound, ServiceError

MAX_GUIDELINE_BYTES = 256 * 1024
# The job kinds whose jobs make tasks (a batch may get its guidelines before its tasks exist).
BATCH_JOB_KINDS = ("generate", "round")
BATCHES_LISTED = 200  # newest first, in the admin page's scope menu

_IN_FORCE_FOR_TASK = text(f"SELECT {guidelines_in_force('t.job_id')} FROM tasks t WHERE t.id = :task")


class GuidelinesInvalid(ServiceError):
    """The text cannot be saved (HTTP 422); nothing is stored."""


@dataclass(frozen=True)
class GuidelineView:
    id: int  # what annotations record: unique across scopes
    job_id: int | None  # the batch; None: the project's
    version: int  # 1, 2, 3 ... within its scope
    body: str  # markdown; empty: none
    created_at: datetime
    author: str | None  # the admin's username (None once that user is gone)

    @property
    def scope(self) -> str:
        return "project" if self.job_id is None else f"batch of job {self.job_id}"


@dataclass(frozen=True)
class SavedGuidelines:
    guidelines: GuidelineView
    created: bool  # False: the text was the current version's already, nothing new was stored


@dataclass(frozen=True)
class ShownGuidelines:
    guidelines: GuidelineView
    opened: bool  # the first time this annotator is shown this version: the page shows it unfolded


@dataclass(frozen=True)
class Batch:
    job_id: int
    kind: str
    round_number: int | None
    status: str
    tasks: int
    has_guidelines: bool  # its own, not the project's


@dataclass(frozen=True)
class GuidelinesPage:
    """What /admin/guidelines shows for one scope."""

    job_id: int | None
    current: GuidelineView | None  # the scope's own latest version
    project: GuidelineView | None  # the project's latest (a batch without its own starts from it)
    versions: list[GuidelineView]  # the scope's, newest first
    batches: list[Batch]


def _view_query():
    return select(GuidelineVersion, User.username).outerjoin(User, User.id == GuidelineVersion.created_by_id)


def _view(row) -> GuidelineView:
    g, username = row
    return GuidelineView(
        id=g.id, job_id=g.job_id, version=g.version, body=g.body, created_at=g.created_at, author=username
    )


def clean_body(body: str) -> str:
    """The text as stored: newlines as `\\n` (a browser's form sends CRLF), no blank lines around it; or
    GuidelinesInvalid."""
    body = body.replace("\r\n", "\n").replace("\r", "\n").strip()
    problem = shown_text_problem(body)
    if problem:
        raise GuidelinesInvalid(f"the guidelines {problem}")
    if len(body.encode("utf-8")) > MAX_GUIDELINE_BYTES:
        raise GuidelinesInvalid(f"the guidelines are longer than {MAX_GUIDELINE_BYTES // 1024} KiB")
    return body


def _check_batch(session: Session, job_id: int) -> None:
    job = session.get(Job, job_id)
    makes_tasks = job is not None and (
        job.kind in BATCH_JOB_KINDS or session.scalar(select(exists().where(Task.job_id == job_id)))
    )
    if not makes_tasks:
        raise NotFound(f"job {job_id} made no tasks: a batch is the tasks of one generation job or round")


def current_guidelines(session: Session, *, job_id: int | None = None) -> GuidelineView | None:
    """The scope's own latest version (the project's for None), empty or not; None when it has none."""
    scope = GuidelineVersion.job_id.is_(None) if job_id is None else GuidelineVersion.job_id == job_id
    row = session.execute(_view_query().where(scope).order_by(GuidelineVersion.version.desc()).limit(1)).first()
    return _view(row) if row else None


def save_guidelines(
    session: Session, *, body: str, job_id: int | None, author_id: int | None, now: datetime | None = None
) -> SavedGuidelines:
    """Store the text as the scope's next version, unless it is the current one already (then nothing is stored:
    saving twice is harmless). 422 for text that cannot be shown, 404 for a job that is no batch, 409 when another
    admin saved the same scope at the same moment. The caller commits."""
    body = clean_body(body)
    if job_id is not None:
        _check_batch(session, job_id)
    current = current_guidelines(session, job_id=job_id)
    if current is not None and current.body == body:
        return SavedGuidelines(current, created=False)
    version = GuidelineVersion(
        job_id=job_id,
        version=(current.version + 1) if current else 1,
        body=body,
        created_by_id=author_id,
        created_at=now or utcnow(),
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError:  # the scope's version numbers are unique: PostgreSQL lets two saves race to it
        session.rollback()
        raise Conflict("another admin saved these guidelines at the same moment: reload to see their version") from None
    return SavedGuidelines(guideline_version(session, version.id), created=True)


def guideline_version(session: Session, version_id: int) -> GuidelineView:
    """One version, current or old; NotFound for an unknown id."""
    row = session.execute(_view_query().where(GuidelineVersion.id == version_id)).first()
    if row is None:
        raise NotFound(f"guideline version {version_id} does not exist")
    return _view(row)


def list_versions(
    session: Session, *, job_id: int | None = None, limit: int = 100, offset: int = 0
) -> list[GuidelineView]:
    """The scope's versions, newest first (the project's for None)."""
    scope = GuidelineVersion.job_id.is_(None) if job_id is None else GuidelineVersion.job_id == job_id
    rows = session.execute(
        _view_query().where(scope).order_by(GuidelineVersion.version.desc()).limit(limit).offset(offset)
    )
    return [_view(r) for r in rows]


def guidelines_for_task(session: Session, *, task_id: int) -> GuidelineView | None:
    """The guidelines in force for a task: its batch's, else the project's; None when none were written."""
    found = session.execute(_IN_FORCE_FOR_TASK, {"task": task_id}).first()
    if found is None:
        raise NotFound(f"task {task_id} does not exist")
    return guideline_version(session, found[0]) if found[0] is not None else None


def show_to_annotator(session: Session, *, user_id: int, version_id: int | None) -> ShownGuidelines | None:
    """The guidelines to show beside a task (its `guideline_version_id`), opened when this annotator has not been
    shown this version before; that showing is recorded (one INSERT that does nothing the second time). None when
    there is nothing to show. The caller commits."""
    if version_id is None:
        return None
    guidelines = guideline_version(session, version_id)
    if not guidelines.body:
        return None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = session.execute(
        insert(GuidelineRead.__table__)
        .values(user_id=user_id, guideline_version_id=version_id, read_at=utcnow())
        .on_conflict_do_nothing()
        .returning(GuidelineRead.__table__.c.user_id)  # a row only when it was added (rowcount varies by driver)
    ).first()
    return ShownGuidelines(guidelines, opened=added is not None)


def guideline_batches(session: Session, *, limit: int = BATCHES_LISTED) -> list[Batch]:
    """The batches an admin can write guidelines for, newest first: jobs that make tasks, with their task counts."""
    tasks = select(func.count(Task.id)).where(Task.job_id == Job.id).scalar_subquery()
    own = exists().where(GuidelineVersion.job_id == Job.id)
    rows = session.execute(
        select(Job.id, Job.kind, Job.round_number, Job.status, tasks, own)
        .where(Job.kind.in_(BATCH_JOB_KINDS) | exists().where(Task.job_id == Job.id))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return [Batch(*r) for r in rows]


def guidelines_page(session: Session, *, job_id: int | None) -> GuidelinesPage:
    """Everything /admin/guidelines shows for one scope (the project's for None); NotFound for a job that is no
    batch."""
    if job_id is not None:
        _check_batch(session, job_id)
    project = current_guidelines(session)
    return GuidelinesPage(
        job_id=job_id,
        current=project if job_id is None else current_guidelines(session, job_id=job_id),
        project=project,
        versions=list_versions(session, job_id=job_id),
        batches=guideline_batches(session),
    )
