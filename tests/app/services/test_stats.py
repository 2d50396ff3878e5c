"""Stats: Krippendorff's alpha (nominal, ordinal; overall and per annotator), counts, throughput, biases, queue."""

import pytest

from app.services.agreement import krippendorff_alpha, task_agreement
from app.services.stats import agreement, all_stats, annotator_figures, counts, task_agreements, throughput
from tests.conftest import BACKENDS
from tests.factories import (
    T0,
    annotate_pairwise,
    annotate_ranking,
    build_dataset,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", reliability data with missing values.
RELIABILITY = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _units():
    return [{c: v[i] for c, v in RELIABILITY.items() if v[i] is not None} for i in range(12)]


def test_krippendorff_reference_values():
    nominal, per = krippendorff_alpha(_units(), level="nominal", per_annotator=True)
    ordinal, _ = krippendorff_alpha(_units(), level="ordinal")
    assert nominal == pytest.approx(0.743, abs=5e-4)
    assert ordinal == pytest.approx(0.815, abs=5e-4)
    # C disagrees most with the rest in this data.
    assert min(per, key=per.get) == "C" and all(-1 <= a <= 1 for a in per.values())


def test_alpha_edge_cases():
    assert krippendorff_alpha([{"a": 1}], level="nominal") == (None, {})
    assert krippendorff_alpha([{"a": "x", "b": "x"}, {"a": "x", "b": "x"}])[0] == 1.0
    assert krippendorff_alpha([{"a": "x", "b": "y"}, {"a": "y", "b": "x"}])[0] < 0


def test_task_agreement():
    assert task_agreement("pairwise", ["lower", "lower", "higher"]) == pytest.approx(1 / 3)
    assert task_agreement("ranking", [[1, 2, 3], [1, 3, 2]]) == pytest.approx(2 / 3)
    assert task_agreement("rating", [{1: "good", 2: "bad"}, {1: "good", 2: "good"}]) == 0.5
    assert task_agreement("pairwise", ["lower"]) is None


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_stats_on_a_dataset(db):
    d = build_dataset(db)
    c = counts(db)
    assert c["tasks"]["pairwise"] == {
        "completed": 3,
        "open": 1,
    }  # the AI-only task still needs a human and c["tasks"]["ranking"] == {"completed": 1}
    assert c["annotations"]["pairwise"] == {"human": 5, "ai": 1}  # the undone one never counts
    assert c["prompts"] == {"train": 5, "eval": 1}
    rows = throughput(db, days=100000)
    assert {"annotator": "alice", "day": "2026-01-01", "count": 3} in rows
    assert sum(r["count"] for r in rows) == 8
    figures = annotator_figures(db)
    alice, bob = figures["alice"], figures["bob"]
    assert alice["pairwise"] == 2 and alice["tie_rate"] == 0.5 and alice["both_bad_rate"] == 0.0
    assert alice["position_bias"] == 0.0  # alice saw [5, 4] and chose "4", shown on the right
    assert bob["position_bias"] == 0.5 and bob["both_bad_rate"] == pytest.approx(1 / 3)
    assert alice["length_bias"] == 0.0 or alice["length_bias"] is None  # "4" vs "5": same length -> left out
    assert figures["judge"]["length_bias"] == 0.0  # chose "Blue." over the long story
    agree = task_agreements(db)
    assert agree == {d.t1.id: 1.0, d.t2.id: 0.0}
    a = agreement(db)
    assert a["pairwise"]["units"] == 2 and a["disagreements"] == [
        {"task_id": d.t2.id, "kind": "pairwise", "agreement": 0.0, "annotations": 2}
    ]
    assert set(a["pairwise"]["per_annotator"]) == {"alice", "bob"}
    full = all_stats(db)
    assert full["rates"]["tie_rate"] == pytest.approx(1 / 6)


def test_ordinal_alpha_for_rankings_per_annotator(db):
    users = [make_annotator(db, f"r{i}") for i in range(3)]
    for t in range(4):
        prompt = make_prompt(db, f"rank {t}")
        gens = [make_generation(db, prompt, f"resp {t}-{k}") for k in range(3)]
        task = make_task(db, prompt, gens, kind="ranking", overlap=3)
        annotate_ranking(db, task, users[0], ranking=gens, created_at=T0)
        annotate_ranking(db, task, users[1], ranking=gens, created_at=T0)
        annotate_ranking(db, task, users[2], ranking=list(reversed(gens)), created_at=T0)
    db.commit()
    a = agreement(db)["ranking"]
    assert a["level"] == "ordinal" and a["units"] == 12 and a["alpha"] < 0.2
    per = a["per_annotator"]
    assert per["r2"] < per["r0"] and per["r0"] == pytest.approx(per["r1"])


def test_overlap_queue_lists_most_contested_first(db):
    users = [make_annotator(db, f"u{i}") for i in range(3)]
    tasks = []
    for t, picks in enumerate([(0, 0, 0), (0, 1, 1), (0, 1, 0)]):
        prompt = make_prompt(db, f"q{t}")
        gens = [make_generation(db, prompt, "a"), make_generation(db, prompt, "bb")]
        task = make_task(db, prompt, gens, overlap=3)
        for u, pick in zip(users, picks):
            annotate_pairwise(db, task, u, chosen=gens[pick])
        tasks.append(task)
    db.commit()
    queue = agreement(db)["disagreements"]
    assert [q["task_id"] for q in queue] == [tasks[1].id, tasks[2].id]
    assert queue[0]["agreement"] == pytest.approx(1 / 3)
