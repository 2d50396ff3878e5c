"""A small annotation database that covers every export format: two humans and an AI judge, every task kind, a
tie, a both-bad, a chat prompt, an eval-split prompt and an undone annotation."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from app.services.exports import ExportFilters, iter_export
from tests.app.factories import (
    annotate_pairwise,
    annotate_ranking,
    annotate_rating,
    make_annotator,
    make_generation,
    make_model,
    make_prompt,
    make_task,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build_dataset(db) -> SimpleNamespace:
    """Two humans and an AI judge over every kind of task; one undone annotation."""
    alice, bob = make_annotator(db, "alice"), make_annotator(db, "bob")
    judge = make_annotator(db, "judge", is_ai=True)
    model = make_model(db, "policy-v1")
    p1 = make_prompt(db, "What is 2+2?")
    g1a, g1b = make_generation(db, p1, "4", model=model, seed=11), make_generation(db, p1, "5", model=model, seed=12)
    t1 = make_task(db, p1, [g1a, g1b], overlap=2)
    a1 = annotate_pairwise(db, t1, alice, chosen=g1a, strength=3, shown=[g1b, g1a], created_at=T0, time_spent_ms=1200)
    a2 = annotate_pairwise(db, t1, bob, chosen=g1a, strength=1, created_at=T0 + timedelta(hours=1))
    p2 = make_prompt(db, "Name a colour.")
    g2a, g2b = make_generation(db, p2, "red", model=model), make_generation(db, p2, "blue", model=model)
    t2 = make_task(db, p2, [g2a, g2b], overlap=2)
    a3 = annotate_pairwise(db, t2, alice, chosen=None, choice="tie", created_at=T0 + timedelta(hours=2))
    a4 = annotate_pairwise(db, t2, bob, chosen=None, choice="both_bad", created_at=T0 + timedelta(hours=3))
    p3 = make_prompt(db, "Count to three.")
    g3 = [make_generation(db, p3, t, model=model) for t in ("1 2 3", "1 2", "one")]
    t3 = make_task(db, p3, g3, kind="ranking")
    a5 = annotate_ranking(db, t3, alice, ranking=[g3[0], g3[2], g3[1]], created_at=T0 + timedelta(hours=4))
    p4 = make_prompt(db, "Greet me.")
    g4a, g4b = (
        make_generation(db, p4, "Hello!", model=model),
        make_generation(db, p4, "=cmd|' /C calc'!A0", model=model),
    )
    t4 = make_task(db, p4, [g4a, g4b], kind="rating")
    a6 = annotate_rating(
        db,
        t4,
        bob,
        ratings={g4a: "good", g4b: "bad"},
        rewrite="Hello, nice to meet you!",
        critiques={str(g4b.id): "not a greeting"},
        created_at=T0 + timedelta(hours=5),
    )
    p5 = make_prompt(db, messages=[{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}])
    g5a, g5b = make_generation(db, p5, "Blue."), make_generation(db, p5, "It is a long story about light.")
    t5 = make_task(db, p5, [g5a, g5b])
    a7 = annotate_pairwise(db, t5, judge, chosen=g5a, strength=2, source="ai", created_at=T0 + timedelta(hours=6))
    p6 = make_prompt(db, "Held out?", split="eval")
    g6a, g6b = make_generation(db, p6, "yes", model=model), make_generation(db, p6, "no", model=model)
    t6 = make_task(db, p6, [g6a, g6b])
    a8 = annotate_pairwise(db, t6, bob, chosen=g6b, strength=None, created_at=T0 + timedelta(hours=7))
    undone = annotate_pairwise(db, t6, alice, chosen=g6a, created_at=T0 + timedelta(hours=8))
    undone.deleted_at = T0 + timedelta(hours=8, minutes=1)
    db.commit()
    return SimpleNamespace(**locals())


def export_lines(db, fmt, **kw):
    include_ties = kw.pop("include_ties", False)
    return [
        line
        for batch in iter_export(db, fmt=fmt, filters=ExportFilters(**kw), include_ties=include_ties)
        for line in batch
    ]
