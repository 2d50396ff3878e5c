"""The export query: every format reads a known set of task kinds."""

from app.services.exports import FORMATS, KINDS_FOR
from domain.vocabulary import TASK_KINDS


def test_every_format_names_the_task_kinds_it_reads():
    assert set(KINDS_FOR) == set(FORMATS)
    assert all(kinds is None or set(kinds) <= set(TASK_KINDS) for kinds in KINDS_FOR.values())
