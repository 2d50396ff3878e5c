"""Which annotations an export takes: the filters, and how the CLI, the API and the admin page give them.

since (created_at >= since), until (created_at < until), until_id (annotation id <= until_id), source
human|ai|all, annotators (usernames or pseudonymous ids), split (the prompt's), min_agreement (only tasks with
at least two annotations whose agreement, see agreement.py, is >= the value), labels raw|adjudicated (adjudicated:
a task with a reviewer's final label gives that label in place of its human annotations the other filters admit,
app.services.review; the agreement filter does not apply to it: the reviewer settled the task).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from app.services.errors import ServiceError, validation_message
from domain.vocabulary import LABEL_SETS, SOURCE_FILTERS, SOURCES, SPLITS, one_of


class ExportError(ServiceError):
    """Bad export arguments; the message is safe to show."""


class ExportFilters(BaseModel):
    """Checked when built: `ExportFilters.checked(...)` turns a bad value into an ExportError with its message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: datetime | None = None
    until: datetime | None = None
    until_id: int | None = None
    source: str = "all"
    annotators: tuple[str, ...] = ()
    split: str | None = None
    min_agreement: float | None = None
    labels: str = "raw"

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source not in SOURCE_FILTERS:
            # The sources first, then "all": the order this message has always had.
            raise ValueError(f"source must be one of {', '.join((*SOURCES, 'all'))}, not {source!r}")
        return source

    @field_validator("split")
    @classmethod
    def _known_split(cls, split: str | None) -> str | None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be {' or '.join(SPLITS)}, not {split!r}")
        return split

    @field_validator("min_agreement")
    @classmethod
    def _agreement_range(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError("min agreement must be between 0 and 1")
        return value

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, labels: str) -> str:
        problem = one_of("labels", labels, LABEL_SETS)
        if problem:
            raise ValueError(problem)
        return labels

    @classmethod
    def checked(cls, **values: Any) -> ExportFilters:
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ExportError(validation_message(exc)) from None

    def describe(self) -> dict[str, Any]:
        out = self.model_dump()
        out["annotators"] = list(self.annotators)
        for key in ("since", "until"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def parse_time(value: str | None, *, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(f"{name} must be an ISO 8601 date or time, not {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def filters_from_strings(
    *,
    since: str | None = None,
    until: str | None = None,
    until_id: int | str | None = None,
    source: str | None = None,
    annotators: list[str] | None = None,
    split: str | None = None,
    min_agreement: float | str | None = None,
    labels: str | None = None,
) -> ExportFilters:
    """Filters as the CLI, the API and the admin page take them (empty strings mean no filter; the page's form
    sends its numbers as text)."""
    try:
        until_id = int(until_id) if until_id not in (None, "") else None
        min_agreement = float(min_agreement) if min_agreement not in (None, "") else None
    except ValueError:
        raise ExportError("until id must be an integer and min agreement a number") from None
    names = tuple(n.strip() for a in (annotators or []) for n in a.split(",") if n.strip())
    return ExportFilters.checked(
        since=parse_time(since, name="since"),
        until=parse_time(until, name="until"),
        until_id=until_id,
        source=source or "all",
        annotators=names,
        split=split or None,
        min_agreement=min_agreement,
        labels=labels or "raw",
    )
