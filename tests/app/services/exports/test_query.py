"""The export query: every format reads a known set of task kinds."""

import pytest

from app.services.exports import FORMATS, KINDS_FOR
from domain.vocabulary import TASK_KINDS
from tests.conftest import BACKENDS


def test_every_format_names_the_task_kinds_it_reads():
    assert set(KINDS_FOR) == set(FORMATS)
    assert all(kinds is None or set(kinds) <= set(TASK_KINDS) for kinds in KINDS_FOR.values())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_an_excluded_annotators_labels_leave_every_format_and_come_back(db):
    from app.services.users import update_user
    from tests.factories import build_dataset, export_lines, make_annotator

    data = build_dataset(db)
    admin = make_annotator(db, "boss", role="admin")
    before = {fmt: export_lines(db, fmt) for fmt in FORMATS}
    assert any(line["annotation_id"] == data.a6.id for line in before["kto"])  # bob's rating is there
    db.rollback()  # the exports' streaming connection options last as long as their transaction
    update_user(db, user_id=data.bob.id, by=admin, labels_excluded=True)
    db.commit()
    bob = {data.a2.id, data.a4.id, data.a6.id, data.a8.id}
    for fmt in FORMATS:
        ids = {line["annotation_id"] for line in export_lines(db, fmt)}
        assert not ids & bob, fmt
        assert ids == {line["annotation_id"] for line in before[fmt]} - bob, fmt
    db.rollback()
    update_user(db, user_id=data.bob.id, by=admin, labels_excluded=False)  # reversible: nothing was deleted
    db.commit()
    assert {fmt: export_lines(db, fmt) for fmt in FORMATS} == before
