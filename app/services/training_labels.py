"""The annotations a round may train on, declared once: the snapshot's upper bound, the round's count of preference
pairs and the annotator weights all read the same rows the snapshot's exports hold. With labels=adjudicated, a
task's current final label (app.services.review) stands in for its human annotations: `training_labels` leaves
those out and `final_labels` gives the final labels."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select

from app.models import Adjudication, Annotation, Prompt, Task, User


def current_adjudications() -> Select:
    """SELECT the id of each task's current final label (app.services.review): its newest adjudication."""
    return select(func.max(Adjudication.id)).group_by(Adjudication.task_id)


def adjudicated_tasks() -> Select:
    """SELECT the tasks with a final label: with labels=adjudicated their human annotations give way to it."""
    return select(Adjudication.task_id)


def training_labels(
    *columns,
    source: str = "all",
    since: datetime | None = None,
    until_id: int | None = None,
    labels: str = "raw",
) -> Select:
    """SELECT `columns` over live annotations of train-split prompts, neither task nor prompt retired, no gold task
    (gold grades the annotator, it is never preference data), no annotator whose labels are excluded; by source,
    since and up to until_id. With labels=adjudicated, no human annotation of a task with a final label."""
    stmt = (
        select(*columns)
        .join(Task, Task.id == Annotation.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(
            Annotation.deleted_at.is_(None),
            Prompt.split == "train",
            Task.retired_at.is_(None),
            Prompt.retired_at.is_(None),
            Task.gold.is_(False),
            Annotation.user_id.not_in(select(User.id).where(User.labels_excluded.is_(True))),
        )
    )
    if source != "all":
        stmt = stmt.where(Annotation.source == source)
    if since is not None:
        stmt = stmt.where(Annotation.created_at >= since)
    if until_id is not None:
        stmt = stmt.where(Annotation.id <= until_id)
    if labels == "adjudicated":
        stmt = stmt.where((Annotation.source != "human") | Annotation.task_id.not_in(adjudicated_tasks()))
    return stmt


def final_labels(*columns, source: str = "all", since: datetime | None = None, until_id: int | None = None) -> Select:
    """SELECT `columns` (of Adjudication) over the current final labels of the tasks with a human annotation that
    `training_labels` admits by the same filters: what labels=adjudicated trains on in place of those annotations."""
    admitted = training_labels(Annotation.task_id, source=source, since=since, until_id=until_id)
    return select(*columns).where(
        Adjudication.id.in_(current_adjudications()),
        Adjudication.task_id.in_(admitted.where(Annotation.source == "human")),
    )
