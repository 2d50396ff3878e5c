"""Gold tasks and qualification: answers and grading, the Wilson interval, mixing gold into queues at the rate,
the qualification set before real tasks, and gold annotations kept out of every kind of preference data."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Annotation, GoldAnswer, QualificationResult, RoundSchedule, Task, TaskPosition
from app.services.annotator_weights import preference_judgements
from app.services.assignment import next_task, skip_task
from app.services.gold import (
    GoldInvalid,
    QualificationFailed,
    allow_annotator,
    gold_accuracy_by_annotator,
    is_correct,
    list_gold,
    mark_gold,
    normalize_answer,
    qualification_report,
    reset_qualification,
    unmark_gold,
    wilson_interval,
)
from app.services.rounds import RoundConfig, preference_pairs
from app.services.schedule import new_human_annotations
from app.services.snapshots import SnapshotFilters, max_annotation_id
from app.services.stats import agreement
from app.services.tasks import TaskImportError
from tests.conftest import BACKENDS
from tests.factories import answer_offer, export_lines, gold_line, make_annotators, make_tasks, task_line


def _ids(db, task_id):
    return list(
        db.scalars(
            select(TaskPosition.generation_id).where(TaskPosition.task_id == task_id).order_by(TaskPosition.position)
        )
    )


def _next(db, user, **kw):
    offer = next_task(db, user=user, lease_minutes=10, **kw)
    db.commit()
    return offer


# ---- answers, grading, interval -------------------------------------------------------------------------------


def test_answers_are_checked_against_the_task_and_graded():
    assert normalize_answer("pairwise", [3, 4], {"choice": "chosen", "chosen_id": 4}) == {
        "choice": "chosen",
        "chosen_id": 4,
    }
    assert normalize_answer("pairwise", [3, 4], {"choice": "tie"}) == {"choice": "tie", "chosen_id": None}
    assert normalize_answer("ranking", [3, 4, 5], {"ranking": ["5", 3, 4]}) == {"ranking": [5, 3, 4]}
    assert normalize_answer("rating", [3, 4], {"ratings": {3: "good", "4": "bad"}}) == {
        "ratings": {"3": "good", "4": "bad"}
    }
    for kind, raw in [
        ("pairwise", {"choice": "chosen", "chosen_id": 9}),
        ("pairwise", {"choice": "tie", "chosen_id": 3}),
        ("pairwise", {"choice": "maybe"}),
        ("pairwise", {"ranking": [3, 4]}),
        ("ranking", {"ranking": [3, 3, 4]}),
        ("ranking", {"ranking": [3, 4]}),
        ("rating", {"ratings": {"3": "good"}}),
        ("rating", {"ratings": {"3": "great", "4": "bad"}}),
        ("rating", []),
        ("pairwise", {"choice": "chosen", "chosen_id": True}),
    ]:
        with pytest.raises(GoldInvalid):
            normalize_answer(kind, [3, 4] if kind != "ranking" else [3, 4, 5], raw)
    pair = {"choice": "chosen", "chosen_id": 4}
    assert is_correct("pairwise", pair, choice="chosen", chosen_id=4)
    assert not is_correct("pairwise", pair, choice="chosen", chosen_id=3)
    assert not is_correct("pairwise", pair, choice="tie")
    assert is_correct("pairwise", {"choice": "both_bad", "chosen_id": None}, choice="both_bad")
    assert is_correct("ranking", {"ranking": [5, 3, 4]}, ranking=[5, 3, 4])
    assert not is_correct("ranking", {"ranking": [5, 3, 4]}, ranking=[5, 4, 3])
    assert is_correct("rating", {"ratings": {"3": "good", "4": "bad"}}, ratings={"3": "good", "4": "bad"})
    assert not is_correct("rating", {"ratings": {"3": "good", "4": "bad"}}, ratings={"3": "good", "4": "good"})


def test_wilson_interval_matches_the_formula():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 4)
    assert low == 0.0 and high == pytest.approx(0.4899, abs=1e-4)


# ---- creating gold tasks ---------------------------------------------------------------------------------------


def test_import_stores_the_answer_in_generation_ids(db):
    pair, ranking, rating, regular = make_tasks(
        db,
        gold_line("pairwise", answer={"choice": "chosen", "chosen": 1}, explanation="B is right."),
        gold_line("ranking", answer={"ranking": [2, 0, 1]}, qualification=True),
        gold_line("rating", answer={"ratings": ["bad", "good"]}),
        task_line(),
    )
    ids = {t: _ids(db, t) for t in (pair, ranking, rating)}
    assert db.get(GoldAnswer, pair).answer == {"choice": "chosen", "chosen_id": ids[pair][1]}
    assert db.get(GoldAnswer, pair).explanation == "B is right."
    assert db.get(GoldAnswer, ranking).answer == {"ranking": [ids[ranking][i] for i in (2, 0, 1)]}
    assert db.get(GoldAnswer, ranking).qualification is True
    assert db.get(GoldAnswer, rating).answer == {"ratings": {str(ids[rating][0]): "bad", str(ids[rating][1]): "good"}}
    assert [db.get(Task, t).gold for t in (pair, ranking, rating, regular)] == [True, True, True, False]
    assert db.get(GoldAnswer, regular) is None


def test_a_bad_gold_field_names_its_line_and_stores_nothing(db):
    with pytest.raises(TaskImportError) as caught:
        make_tasks(
            db,
            task_line(),
            gold_line("pairwise", answer={"choice": "chosen", "chosen": 2}),
            gold_line("ranking", answer={"ranking": [0, 0, 1]}),
            task_line(gold={"answer": {"choice": "tie"}, "secret": 1}),
        )
    db.rollback()
    lines = dict(caught.value.errors)
    assert sorted(lines) == [2, 3, 4]
    assert lines[2] == "gold: chosen 2 is not one of the response indices [0, 1]"
    assert db.scalar(select(Task.id)) is None


def test_mark_replace_and_unmark_an_existing_task(db):
    (task_id,) = make_tasks(db, task_line("ranking"))
    ids = _ids(db, task_id)
    row = mark_gold(db, task_id=task_id, answer={"ranking": ids[::-1]}, explanation="  Reverse.  ")
    assert (row.answer, row.explanation, row.qualification) == ({"ranking": ids[::-1]}, "Reverse.", False)
    mark_gold(db, task_id=task_id, answer={"ranking": ids}, qualification=True)
    assert db.get(GoldAnswer, task_id).answer == {"ranking": ids} and db.get(Task, task_id).gold
    with pytest.raises(GoldInvalid):
        mark_gold(db, task_id=task_id, answer={"choice": "tie"})
    unmark_gold(db, task_id=task_id)
    assert db.get(GoldAnswer, task_id) is None and not db.get(Task, task_id).gold
    with pytest.raises(Exception, match="not a gold task"):
        unmark_gold(db, task_id=task_id)
    with pytest.raises(Exception, match="does not exist"):
        mark_gold(db, task_id=10**9, answer={})


# ---- mixing gold into queues ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_gold_comes_at_the_rate_once_per_annotator_never_from_the_regular_queue(db, backend):
    gold_ids = set(make_tasks(db, gold_line(), gold_line("ranking")))
    regular_ids = set(make_tasks(db, task_line(overlap=2), task_line(overlap=2), task_line(overlap=2)))
    alice, bob = make_annotators(db, 2)
    # Rate 0: the regular queue alone, and it never offers a gold task.
    seen = []
    while (offer := _next(db, alice, gold_rate=0.0)) is not None:
        seen.append(offer.task_id)
        answer_offer(db, alice, offer, right=True)
    assert set(seen) == regular_ids
    # Rate 1: every new lease is a gold task not seen yet, then the regular queue once gold runs out.
    seen = []
    while (offer := _next(db, bob, gold_rate=1.0)) is not None:
        seen.append(offer.task_id)
        answer_offer(db, bob, offer, right=True)
    assert set(seen[:2]) == gold_ids and set(seen[2:]) == regular_ids and len(seen) == 5
    # Gold has no slot limit: both may do each; and a gold task alone never keeps an annotator busy.
    assert _next(db, alice, gold_rate=1.0).task_id in gold_ids
    assert db.get(Task, min(gold_ids)).overlap == 1


def test_remaining_drops_by_one_after_a_gold_task_as_after_any_other(db):
    from app.services.annotations import my_progress

    make_tasks(db, gold_line(), gold_line(), task_line(overlap=2), task_line(overlap=2))
    (user,) = make_annotators(db, 1)
    counts = [my_progress(db, user_id=user.id).remaining]
    for rate in (1.0, 0.0, 1.0, 0.0):
        offer = _next(db, user, gold_rate=rate)
        counts.append(my_progress(db, user_id=user.id).remaining)  # holding it
        answer_offer(db, user, offer, right=True)
        counts.append(my_progress(db, user_id=user.id).remaining)
    assert counts == [4, 4, 3, 3, 2, 2, 1, 1, 0]


def test_a_late_submit_on_a_gold_task_is_accepted_like_a_free_slot(db):
    from datetime import timedelta

    from app.models import utcnow

    (gold_id,) = make_tasks(db, gold_line())
    alice, bob = make_annotators(db, 2)
    first = _next(db, alice, gold_rate=1.0)
    answer_offer(db, alice, first, right=True)
    past = utcnow() - timedelta(minutes=30)
    offer = next_task(db, user=bob, lease_minutes=10, gold_rate=1.0, now=past)
    db.commit()
    assert offer.task_id == gold_id
    assert answer_offer(db, bob, offer, right=False).replayed is False  # lease long expired, overlap 1 already taken


def test_gold_accuracy_counts_mixed_in_gold_only(db):
    make_tasks(db, gold_line(), gold_line(), gold_line("ranking"), gold_line(qualification=True))
    alice, bob, carol = make_annotators(db, 3)
    for user, rights in ((alice, [True, True, False]), (bob, [False, False, False])):
        for right in rights:
            answer_offer(db, user, _next(db, user, gold_rate=1.0), right=right)
    accuracy = gold_accuracy_by_annotator(db)
    assert set(accuracy) == {alice.id, bob.id}
    assert (accuracy[alice.id].count, accuracy[alice.id].correct) == (3, 2)
    assert accuracy[alice.id].accuracy == pytest.approx(2 / 3)
    assert accuracy[alice.id].interval == wilson_interval(2, 3)
    assert (accuracy[bob.id].count, accuracy[bob.id].correct, accuracy[bob.id].low) == (3, 0, 0.0)
    assert carol.id not in accuracy


# ---- gold annotations are never preference data ------------------------------------------------------------------


def test_gold_annotations_leave_exports_snapshots_agreement_and_the_schedule(db):
    gold_pair, gold_rank = make_tasks(db, gold_line(overlap=2), gold_line("ranking", overlap=2))
    (regular,) = make_tasks(db, task_line(overlap=2))
    users = make_annotators(db, 2)
    for user in users:
        while (offer := _next(db, user, gold_rate=1.0)) is not None:
            answer_offer(db, user, offer, right=user is users[0])
    annotations = list(db.scalars(select(Annotation)))
    assert len(annotations) == 6
    for fmt in ("trl", "trl-conversational", "rankings", "kto", "sft", "rich"):
        for line in export_lines(db, fmt, include_ties=True):
            assert line.get("annotation_id") is None or db.get(Annotation, line["annotation_id"]).task_id == regular
    rich = export_lines(db, "rich")
    assert {db.get(Annotation, line["annotation_id"]).task_id for line in rich} == {regular}
    regular_ids = [a.id for a in annotations if a.task_id == regular]
    assert max_annotation_id(db, SnapshotFilters()) == max(regular_ids)
    contested = agreement(db)
    assert contested["pairwise"]["units"] == 1 and contested["ranking"]["units"] == 0
    assert {d["task_id"] for d in contested["disagreements"]} <= {regular}
    assert new_human_annotations(db, RoundSchedule(enabled=True)) == 2
    # the regular task was answered "tie": a round would find no pair to learn from and no judgement to weigh
    assert preference_pairs(db, config=RoundConfig()) == 0
    assert preference_judgements(db) == []


def test_skipping_a_gold_task_is_like_any_skip(db):
    (gold_id,) = make_tasks(db, gold_line())
    (user,) = make_annotators(db, 1)
    offer = _next(db, user, gold_rate=1.0)
    skip_task(db, user=user, task_id=offer.task_id, reason="unclear")
    db.commit()
    assert _next(db, user, gold_rate=1.0) is None
    assert gold_accuracy_by_annotator(db) == {}


# ---- qualification ---------------------------------------------------------------------------------------------


def _qualify(db, user, rights: list[bool], threshold=0.6):
    for right in rights:
        offer = _next(db, user, qualification_threshold=threshold)
        assert db.get(GoldAnswer, offer.task_id).qualification
        answer_offer(db, user, offer, right=right)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_qualification_set_comes_first_and_passing_opens_real_tasks(db, backend):
    make_tasks(db, *[gold_line(qualification=True, explanation=f"why {i}") for i in range(3)], gold_line(), task_line())
    (user,) = make_annotators(db, 1)
    _qualify(db, user, [True, False, True])
    offer = _next(db, user, qualification_threshold=0.6)
    assert not db.get(Task, offer.task_id).gold  # the regular queue: passed 2 of 3 at 0.6
    result = db.get(QualificationResult, user.id)
    assert (result.status, result.correct, result.total) == ("passed", 2, 3)
    report = qualification_report(db, user_id=user.id, threshold=0.6)
    assert report.status == "passed" and [item.right for item in report.items] == [True, False, True]
    assert [item.explanation for item in report.items] == ["why 0", "why 1", "why 2"]
    assert report.items[1].yours != report.items[1].gold


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_failing_blocks_real_tasks_until_reset_or_allowed(db, backend):
    make_tasks(db, gold_line(qualification=True), gold_line(qualification=True), task_line(overlap=2))
    alice, admin = make_annotators(db, 2)
    _qualify(db, alice, [True, False], threshold=0.8)
    with pytest.raises(QualificationFailed, match="1 of 2 right") as caught:
        next_task(db, user=alice, lease_minutes=10, qualification_threshold=0.8)
    db.rollback()
    assert caught.value.status == 403
    assert db.get(QualificationResult, alice.id).status == "failed"  # the grade was kept
    with pytest.raises(QualificationFailed):
        next_task(db, user=alice, lease_minutes=10, qualification_threshold=0.8)
    db.rollback()
    assert qualification_report(db, user_id=alice.id, threshold=0.8).status == "failed"
    # Reset: the set again, from the start (the old answers kept, undone).
    reset_qualification(db, user_id=alice.id)
    db.commit()
    assert qualification_report(db, user_id=alice.id, threshold=0.8).remaining == 2
    _qualify(db, alice, [True, True], threshold=0.8)
    assert _next(db, alice, qualification_threshold=0.8) is not None
    assert db.get(QualificationResult, alice.id).status == "passed"
    assert db.scalar(select(Annotation.id).where(Annotation.deleted_at.is_not(None))) is not None
    # Allow: real tasks without passing.
    (bob,) = make_annotators(db, 1)
    allow_annotator(db, user_id=bob.id, admin_id=admin.id, threshold=0.8)
    db.commit()
    offer = _next(db, bob, qualification_threshold=0.8)
    assert offer is not None and not db.get(Task, offer.task_id).gold


def test_no_set_or_not_required_means_no_gate(db):
    (regular,) = make_tasks(db, task_line(overlap=2))
    (user,) = make_annotators(db, 1)
    assert _next(db, user, qualification_threshold=0.9).task_id == regular  # no qualification tasks exist
    assert db.get(QualificationResult, user.id) is None
    make_tasks(db, gold_line(qualification=True))
    (other,) = make_annotators(db, 1)
    assert _next(db, other).task_id == regular  # not required
    assert qualification_report(db, user_id=other.id, threshold=None).status == "not_required"


def test_list_gold_counts_right_answers(db):
    gold_id, _ = make_tasks(db, gold_line(), gold_line(qualification=True))
    users = make_annotators(db, 2)
    for user, right in zip(users, (True, False)):
        offer = _next(db, user, gold_rate=1.0)
        assert offer.task_id == gold_id
        answer_offer(db, user, offer, right=right)
    rows = {row.task_id: row for row in list_gold(db)}
    assert (rows[gold_id].annotations, rows[gold_id].correct, rows[gold_id].qualification) == (2, 1, False)
