"""Export filters: time, annotation id, source, annotators, split and agreement select the annotations."""

from datetime import UTC, datetime, timedelta

import pytest

from app.services.exports import ExportError, ExportFilters, filters_from_strings
from tests.conftest import BACKENDS
from tests.factories import T0, build_dataset
from tests.factories import export_lines as rows


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_filters(db):
    d = build_dataset(db)
    ids = lambda **kw: sorted({x["annotation_id"] for x in rows(db, "rich", **kw)})  # noqa: E731
    assert ids(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5)) == [d.a3.id, d.a4.id, d.a5.id]
    assert ids(until_id=d.a2.id) == [d.a1.id, d.a2.id]
    assert ids(source="ai") == [d.a7.id]
    assert d.a7.id not in ids(source="human")
    assert ids(annotators=("bob",)) == [d.a2.id, d.a4.id, d.a6.id, d.a8.id]
    assert ids(annotators=(d.alice.public_id,)) == [d.a1.id, d.a3.id, d.a5.id]
    assert ids(split="eval") == [d.a8.id]
    # Task 1: both chose the same (agreement 1); task 2: tie vs both-bad (0); single-annotation tasks have none.
    assert ids(min_agreement=0.5) == [d.a1.id, d.a2.id]
    assert ids(min_agreement=0.0) == [d.a1.id, d.a2.id, d.a3.id, d.a4.id]
    with pytest.raises(ExportError):
        ExportFilters.checked(source="robots")
    with pytest.raises(ExportError):
        ExportFilters.checked(min_agreement=2)


def test_filters_from_strings_reads_what_the_cli_api_and_page_send():
    blank = filters_from_strings(since="", until="", until_id="", source="", annotators=["", " "], split="")
    assert blank == ExportFilters()
    filters = filters_from_strings(
        since="2026-01-01", until_id="7", source="human", annotators=["alice, bob", "carol"], min_agreement="0.5"
    )
    assert filters.since == datetime(2026, 1, 1, tzinfo=UTC) and filters.until_id == 7
    assert filters.annotators == ("alice", "bob", "carol") and filters.min_agreement == 0.5
    for bad, needle in (
        ({"until_id": "x"}, "until id must be an integer"),
        ({"since": "soon"}, "since must be an ISO 8601"),
        ({"source": "robots"}, "source must be one of human, ai, all, not 'robots'"),
        ({"split": "test"}, "split must be train or eval"),
    ):
        with pytest.raises(ExportError, match=needle) as caught:
            filters_from_strings(**bad)
        assert caught.value.status == 422
