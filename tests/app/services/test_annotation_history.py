"""An annotator's history in the labels they saw (A, B, ...), and one past answer opened read-only."""

from __future__ import annotations

import pytest

from app.services.annotation_history import AnswerNotFound, my_answer, my_history
from tests.factories import (
    annotate_pairwise,
    annotate_ranking,
    annotate_rating,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
)


def test_history_names_the_choice_by_the_labels_shown_with_the_prompt(db):
    alice = make_annotator(db, "alice")
    prompt = make_prompt(db, "Which colour is the sky on a clear day?")
    first, second = make_generation(db, prompt, "blue"), make_generation(db, prompt, "green")
    pair = make_task(db, prompt, [first, second])
    # shown in the other order: the chosen `first` was on the right, so it is B
    annotate_pairwise(db, pair, alice, chosen=first, strength=1, shown=[second, first])
    texts = [make_generation(db, prompt, t) for t in ("x", "y", "z")]
    ranked = make_task(db, prompt, texts, kind="ranking")
    annotate_ranking(db, ranked, alice, ranking=[texts[2], texts[0], texts[1]])
    rated = make_task(db, prompt, texts[:2], kind="rating")
    annotate_rating(db, rated, alice, ratings={texts[0]: "good", texts[1]: "bad"})
    db.commit()
    rating, ranking, pairwise = my_history(db, user_id=alice.id)
    assert pairwise.summary == "B better (slightly)" and pairwise.prompt_excerpt.startswith("Which colour is the sky")
    assert ranking.summary == "C > A > B"
    assert rating.summary == "A good, B bad"


def test_a_past_answer_opens_with_its_responses_in_the_order_shown_and_only_for_its_author(db):
    alice, bob = make_annotator(db, "alice"), make_annotator(db, "bob")
    prompt = make_prompt(db, "Say hello.")
    first, second = make_generation(db, prompt, "hello"), make_generation(db, prompt, "bye")
    task = make_task(db, prompt, [first, second])
    annotation = annotate_pairwise(db, task, alice, chosen=first, strength=3, shown=[second, first])
    db.commit()
    answer = my_answer(db, user_id=alice.id, annotation_id=annotation.id)
    assert [(r.label, r.text, r.chosen) for r in answer.responses] == [("A", "bye", False), ("B", "hello", True)]
    assert answer.summary == "B better (much)" and answer.prompt_text == "Say hello." and answer.strength == "much"
    with pytest.raises(AnswerNotFound):
        my_answer(db, user_id=bob.id, annotation_id=annotation.id)
