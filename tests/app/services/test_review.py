"""The review service: the disagreement queue (disagreeing human annotations only, pending / adjudicated), a task's
annotations with their annotators, and final labels checked against the task, the newest superseding."""

from __future__ import annotations

import pytest

from app.services.errors import ServiceError
from app.services.review import adjudicate, form_label, review_queue, review_task
from app.services.stats import task_agreements
from tests.conftest import BACKENDS
from tests.factories import (
    annotate_pairwise,
    annotate_ranking,
    annotate_rating,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
    pairwise_task,
)


def _contested(db, a, b):
    task, gens = pairwise_task(db, overlap=2)
    annotate_pairwise(db, task, a, chosen=gens[0])
    annotate_pairwise(db, task, b, chosen=gens[1])
    return task, gens


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_queue_holds_disagreeing_tasks_and_a_final_label_moves_them_out(db, backend):
    a, b, rev = make_annotator(db, "alice"), make_annotator(db, "bob"), make_annotator(db, "rev", role="reviewer")
    contested, gens = _contested(db, a, b)
    agreed, agreed_gens = pairwise_task(db, overlap=2)
    annotate_pairwise(db, agreed, a, chosen=agreed_gens[0])
    annotate_pairwise(db, agreed, b, chosen=agreed_gens[0])
    alone, alone_gens = pairwise_task(db)
    annotate_pairwise(db, alone, a, chosen=alone_gens[0])
    db.commit()
    queue = review_queue(db)
    assert [(i.task_id, i.agreement, i.annotations, i.adjudicated) for i in queue] == [(contested.id, 0.0, 2, False)]

    first = adjudicate(db, task_id=contested.id, reviewer=rev, label={"choice": "tie"}, note="both fine")
    second = adjudicate(
        db, task_id=contested.id, reviewer=rev, label={"choice": "chosen", "chosen_id": gens[1].id}, note="B right"
    )
    db.commit()
    assert review_queue(db) == []
    done = review_queue(db, state="adjudicated")
    assert [(i.task_id, i.reviewer) for i in done] == [(contested.id, "rev")]
    review = review_task(db, contested.id)
    assert review.current.id == second.id and [h.id for h in review.history] == [second.id, first.id]
    assert review.current.label == {"choice": "chosen", "chosen_id": gens[1].id, "strength": 2}
    assert sorted(x["annotator"] for x in review.detail.annotations) == ["alice", "bob"]
    assert review.agreement == 0.0


def test_a_final_label_must_fit_the_task(db):
    a, b, rev = make_annotator(db), make_annotator(db), make_annotator(db, role="reviewer")
    prompt = make_prompt(db)
    gens = [make_generation(db, prompt, t, seed=i) for i, t in enumerate(("x", "y", "z"))]
    ranking = make_task(db, prompt, gens, kind="ranking", overlap=2)
    annotate_ranking(db, ranking, a, ranking=gens)
    annotate_ranking(db, ranking, b, ranking=gens[::-1])
    rating = make_task(db, prompt, gens[:2], kind="rating", overlap=2)
    annotate_rating(db, rating, a, ratings={gens[0]: "good", gens[1]: "bad"})
    annotate_rating(db, rating, b, ratings={gens[0]: "good", gens[1]: "good"})
    empty, _ = pairwise_task(db)
    ids = [g.id for g in gens]
    db.flush()
    # a task's page scores its agreement alone, as the scan over every task does
    everyone = task_agreements(db, source="human")
    assert [review_task(db, t.id).agreement for t in (ranking, rating)] == [everyone[ranking.id], everyone[rating.id]]
    assert everyone[ranking.id] == 0.0 and everyone[rating.id] == 0.5
    for task, label, note, message in [
        (ranking, {"ranking": ids[:2]}, "n", "must list all 3"),
        (ranking, {"ranking": [ids[0], ids[0], ids[1]]}, "n", "each response once"),
        (ranking, {"ranking": [ids[0], ids[1], 999999]}, "n", "not one of the task's responses"),
        (ranking, {"choice": "tie"}, "n", "a ranking label takes ranking"),
        (ranking, {"ranking": ids}, "  ", "a note is needed"),
        (rating, {"ratings": {str(ids[0]): "good"}}, "n", "rate every response"),
        (rating, {"ratings": {str(ids[0]): "fine", str(ids[1]): "bad"}}, "n", "good or bad"),
        (empty, {"choice": "tie"}, "n", "no human annotation"),
    ]:
        with pytest.raises(ServiceError, match=message):
            adjudicate(db, task_id=task.id, reviewer=rev, label=label, note=note)
    with pytest.raises(ServiceError, match="no task"):
        adjudicate(db, task_id=999999, reviewer=rev, label={}, note="n")
    row = adjudicate(db, task_id=ranking.id, reviewer=rev, label={"ranking": ids[::-1], "rewrite": " z! "}, note="n")
    assert (row.ranking, row.rewrite, row.positions) == (ids[::-1], "z!", ids)


def _form(kind, **fields):
    return form_label(
        kind, **{"choice": "", "strength": "", "gens": [], "ranks": [], "ratings": [], "rewrite": "", **fields}
    )


def test_the_form_gives_the_label_of_each_kind():
    assert _form("pairwise", choice="chosen:7", strength="3") == {
        "rewrite": None,
        "choice": "chosen",
        "chosen_id": "7",
        "strength": 3,
    }
    assert _form("ranking", gens=["5", "6", "7"], ranks=["2", "3", "1"])["ranking"] == ["7", "5", "6"]
    rated = _form("rating", gens=["5", "6"], ratings=["bad", "good"], rewrite="r")
    assert rated == {"rewrite": "r", "ratings": {"5": "bad", "6": "good"}}
    with pytest.raises(ServiceError, match="each rank from 1 to 3 once"):
        _form("ranking", gens=["5", "6", "7"], ranks=["1", "1", "2"])
    with pytest.raises(ServiceError, match="pick the better"):
        _form("pairwise", strength="2")
