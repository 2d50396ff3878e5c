"""Careless-annotator signals on synthetic annotations, and the flags they raise."""

import pytest

from app.services.annotator_signals import (
    AnnotatorSignals,
    SignalThresholds,
    annotator_signals,
    flags_for,
    label_pattern,
    straight_lining,
)
from tests import factories
from tests.factories import annotate_pairwise, annotate_ranking, make_generation, make_prompt, make_task


def test_label_patterns_and_straight_lining():
    assert label_pattern("pairwise", [5, 3], "chosen", 5, None, None) == "first shown"
    assert label_pattern("pairwise", [5, 3], "chosen", 3, None, None) == "second shown"
    assert label_pattern("pairwise", [5, 3], "both_bad", None, None, None) == "both bad"
    assert label_pattern("ranking", [1, 2, 3], None, None, [1, 2, 3], None) == "order shown"
    assert label_pattern("ranking", [1, 2, 3], None, None, [3, 2, 1], None) == "order shown reversed"
    assert label_pattern("ranking", [1, 2, 3], None, None, [2, 1, 3], None) is None
    assert label_pattern("rating", [1, 2], None, None, None, {"1": "good", "2": "good"}) == "all good"
    assert label_pattern("rating", [1, 2], None, None, None, {"1": "good", "2": "bad"}) is None
    assert straight_lining(["first shown"] * 9 + ["second shown"]) == (0.9, "first shown")
    assert straight_lining([None, None]) == (0.0, None)
    assert straight_lining([]) == (None, None)


def test_flags_name_each_signal_past_its_threshold_and_none_below_min_labels():
    t = SignalThresholds(min_labels=10)
    bad = AnnotatorSignals(
        labels=40,
        alpha=0.05,
        time_ratio=0.1,
        position_bias=0.95,
        length_bias=0.5,
        straight_lining=0.95,
        straight_pattern="first shown",
        gold_accuracy=0.55,
    )
    reasons = flags_for(bad, t)
    assert len(reasons) == 5
    assert reasons[0] == "gold accuracy 55% < 70%"
    assert any(r.startswith("position bias") for r in reasons)
    assert not any(r.startswith("length bias") for r in reasons)
    assert "straight-lining: first shown 95% of the time" in reasons
    assert flags_for(AnnotatorSignals(labels=9, alpha=-1.0), t) == []
    good = AnnotatorSignals(labels=40, alpha=0.7, time_ratio=1.1, position_bias=0.55, straight_lining=0.5)
    assert flags_for(good, t) == []


def test_signals_on_synthetic_annotations_flag_the_straight_liner_only(db):
    """Five annotators label the same 24 pairs: four by the texts (and slowly), one always the left one, fast."""
    careful = [factories.make_annotator(db) for _ in range(4)]
    liner = factories.make_annotator(db)
    for i in range(24):
        prompt = make_prompt(db, f"q{i}")
        good = make_generation(db, prompt, "right", seed=2 * i)  # alike in length: no length bias to find
        bad = make_generation(db, prompt, "wrong", seed=2 * i + 1)
        shown = [good, bad] if i % 2 else [bad, good]
        task = make_task(db, prompt, shown, overlap=5)
        for person in careful:
            annotate_pairwise(db, task, person, chosen=good, shown=shown, time_spent_ms=20_000 + i)
        annotate_pairwise(db, task, liner, chosen=shown[0], shown=shown, time_spent_ms=800)
    prompt = make_prompt(db, "rank")
    gens = [make_generation(db, prompt, t) for t in ("a", "b", "c")]
    annotate_ranking(db, make_task(db, prompt, gens, kind="ranking"), careful[0], ranking=[gens[1], gens[0], gens[2]])
    db.commit()
    signals = annotator_signals(db, SignalThresholds(min_labels=10))
    s = signals[liner.id]
    assert s.labels == 24 and s.position_bias == 1.0
    assert s.straight_lining == 1.0 and s.straight_pattern == "first shown"
    assert s.median_time_ms == 800 and s.time_ratio == pytest.approx(800 / 20_011.5, rel=1e-3)
    assert s.alpha is not None and s.alpha < 0.2
    assert len(s.flags) == 4  # alpha, time, position bias, straight-lining
    for person in careful:
        c = signals[person.id]
        assert c.flags == [] and c.straight_lining == pytest.approx(0.5, abs=0.05) and c.gold_accuracy is None
    assert signals[careful[0].id].labels == 25 and signals[careful[0].id].length_bias is None
