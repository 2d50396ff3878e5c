"""Export filters: time, annotation id, source, annotators, split and agreement select the annotations."""

from datetime import timedelta

import pytest

from app.services.exports import ExportError, ExportFilters
from tests.app.export_fixtures import T0, build_dataset
from tests.app.export_fixtures import export_lines as rows
from tests.conftest import BACKENDS


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
        ExportFilters(source="robots")
    with pytest.raises(ExportError):
        ExportFilters(min_agreement=2)
