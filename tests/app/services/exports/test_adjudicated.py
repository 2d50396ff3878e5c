"""Exports with labels=adjudicated: a task with a reviewer's final label gives that label in place of its human
annotations the filters admit (the newest final label; AI labels and other tasks stay raw), every format builds its
lines from it, `rich` marks it, and the filters (source, until_id, min_agreement) hold."""

from __future__ import annotations

import pytest

from app.services.exports import ExportFilters, ExportResult, iter_export
from app.services.review import adjudicate
from tests.conftest import BACKENDS
from tests.factories import (
    annotate_pairwise,
    annotate_ranking,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
    pairwise_task,
)


def _lines(db, fmt, **filters):
    return [line for batch in iter_export(db, fmt=fmt, filters=ExportFilters(**filters)) for line in batch]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_an_adjudicated_task_exports_its_final_label_in_place_of_its_annotations(db, backend):
    alice, bob = make_annotator(db, "alice"), make_annotator(db, "bob")
    judge, rev = make_annotator(db, "judge", is_ai=True), make_annotator(db, "rev", role="reviewer")
    contested, gens = pairwise_task(db, texts=("right", "wrong"), overlap=2)
    a1 = annotate_pairwise(db, contested, alice, chosen=gens[0])
    a2 = annotate_pairwise(db, contested, bob, chosen=gens[1], strength=1)
    ai = annotate_pairwise(db, contested, judge, chosen=gens[1], source="ai")
    other, other_gens = pairwise_task(db, texts=("fine", "poor"))
    a3 = annotate_pairwise(db, other, alice, chosen=other_gens[0])
    prompt = make_prompt(db)
    ranked = [make_generation(db, prompt, t, seed=i) for i, t in enumerate(("r1", "r2", "r3"))]
    ranking = make_task(db, prompt, ranked, kind="ranking", overlap=2)
    annotate_ranking(db, ranking, alice, ranking=ranked)
    r2 = annotate_ranking(db, ranking, bob, ranking=ranked[::-1])
    adjudicate(db, task_id=contested.id, reviewer=rev, label={"choice": "tie"}, note="first look")
    adjudicate(
        db,
        task_id=contested.id,
        reviewer=rev,
        label={"choice": "chosen", "chosen_id": gens[0].id, "strength": 3},
        note="A is right",
    )
    adjudicate(db, task_id=ranking.id, reviewer=rev, label={"ranking": [g.id for g in ranked]}, note="in order")
    db.commit()

    raw = _lines(db, "trl")
    assert {line["annotation_id"] for line in raw} >= {a1.id, a2.id, ai.id, a3.id}
    assert _lines(db, "trl", labels="raw") == raw
    trl = _lines(db, "trl", labels="adjudicated")
    # the AI label and the other task stay raw; each human-annotated task gives its final label once
    assert [(line["annotation_id"], line["chosen"], line["rejected"], line["margin"]) for line in trl] == [
        (ai.id, "wrong", "right", 2 / 3),
        (a3.id, "fine", "poor", 2 / 3),
        (a2.id, "right", "wrong", 1.0),
        (r2.id, "r1", "r2", 0.0),
        (r2.id, "r1", "r3", 0.0),
        (r2.id, "r2", "r3", 0.0),
    ]
    assert [line["completions"] for line in _lines(db, "rankings", labels="adjudicated")] == [["r1", "r2", "r3"]]

    rich = {(line["task_id"], line["source"]): line for line in _lines(db, "rich", labels="adjudicated")}
    final = rich[contested.id, "human"]
    assert final["adjudicated"] and final["review_note"] == "A is right" and final["reviewer"] == rev.public_id
    assert (final["annotator"], final["chosen_generation_id"], final["strength"]) == (rev.public_id, gens[0].id, 3)
    assert final["positions"] == [g.id for g in gens] and final["responses"][0]["text"] == "right"
    assert not rich[contested.id, "ai"]["adjudicated"] and rich[contested.id, "ai"]["reviewer"] is None
    assert len(rich) == 4 and all(set(line) == set(final) for line in rich.values())

    stats = ExportResult("trl", None, 0, "", 0, {}, False, False)
    for _ in iter_export(db, fmt="trl", filters=ExportFilters(labels="adjudicated"), stats=stats):
        pass
    assert stats.max_annotation_id == max(a.id for a in (a1, a2, ai, a3, r2))
    # the filters hold: AI labels only give no final label; a bound before the task's annotations gives neither
    assert {line["annotation_id"] for line in _lines(db, "trl", labels="adjudicated", source="ai")} == {ai.id}
    assert [line["annotation_id"] for line in _lines(db, "trl", labels="adjudicated", until_id=a1.id)] == [a1.id]
    # the reviewer settled the contested task: the agreement filter leaves its final label in
    agreed = _lines(db, "trl", labels="adjudicated", min_agreement=1.0, source="human")
    assert {line["annotation_id"] for line in agreed} == {a2.id, r2.id}


def test_labels_must_be_raw_or_adjudicated():
    with pytest.raises(Exception, match="labels must be one of raw, adjudicated"):
        ExportFilters.checked(labels="final")
