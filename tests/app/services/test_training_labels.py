"""The labels a round trains on: with labels=adjudicated a task's current final label stands in for its human
annotations (never for AI labels), by the same filters; the round's pair count reads the same rows."""

from __future__ import annotations

import pytest

from app.models import Adjudication, Annotation
from app.services.review import adjudicate
from app.services.rounds.config import RoundConfig
from app.services.rounds.start import preference_pairs
from app.services.training_labels import final_labels, training_labels
from tests.conftest import BACKENDS
from tests.factories import annotate_pairwise, make_annotator, make_generation, make_prompt, make_task, pairwise_task


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_final_label_stands_in_for_the_human_annotations_of_its_task(db, backend):
    alice, bob = make_annotator(db), make_annotator(db)
    judge, rev = make_annotator(db, is_ai=True), make_annotator(db, role="reviewer")
    contested, gens = pairwise_task(db, overlap=2)
    a1 = annotate_pairwise(db, contested, alice, chosen=gens[0])
    a2 = annotate_pairwise(db, contested, bob, chosen=gens[1])
    ai = annotate_pairwise(db, contested, judge, chosen=gens[1], source="ai")
    plain, plain_gens = pairwise_task(db)
    a3 = annotate_pairwise(db, plain, alice, chosen=plain_gens[0])
    prompt = make_prompt(db)
    ranked = [make_generation(db, prompt, t, seed=i) for i, t in enumerate("xyz")]
    ranking = make_task(db, prompt, ranked, kind="ranking", overlap=2)
    r1 = annotate_pairwise(db, ranking, alice, chosen=None, choice="tie")  # a ranking task's odd label: no pairs
    r1.kind = "ranking"
    db.flush()
    adjudicate(db, task_id=contested.id, reviewer=rev, label={"choice": "tie"}, note="first")
    final = adjudicate(db, task_id=contested.id, reviewer=rev, label={"choice": "both_bad"}, note="second")
    ranked_final = adjudicate(db, task_id=ranking.id, reviewer=rev, label={"ranking": [g.id for g in ranked]}, note="r")
    db.commit()

    def ids(**filters):
        return set(db.scalars(training_labels(Annotation.id, **filters)))

    def finals(**filters):
        return set(db.scalars(final_labels(Adjudication.id, **filters)))

    assert ids() == {a1.id, a2.id, ai.id, a3.id, r1.id} == ids(labels="raw")
    assert ids(labels="adjudicated") == {ai.id, a3.id}
    assert finals() == {final.id, ranked_final.id}  # the newest of the contested task's two
    assert finals(source="ai") == set() and finals(until_id=a1.id) == {final.id}
    # the round's pair count: the contested task's 3 choices (2 human, 1 AI) + the plain one; or the plain one + the
    # AI choice + the final ranking's 3 pairs (the contested task's final label, both bad, gives none)
    assert preference_pairs(db, config=RoundConfig()) == 3 + 1
    assert preference_pairs(db, config=RoundConfig(labels="adjudicated")) == 1 + 1 + 3
    assert preference_pairs(db, config=RoundConfig(labels="adjudicated", source="human")) == 1 + 3
