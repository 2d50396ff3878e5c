"""The files a round's stages read: the reward model's train and held-out preferences."""

from __future__ import annotations

import json

from app.services.rounds import split_reward_data


def test_reward_data_keeps_rankings_whole_and_adds_pairwise_choices(tmp_path):
    """Rankings reach the reward model whole (from rankings.jsonl, not as trl's expanded pairs), pairwise choices
    from trl.jsonl; the held-out split is by annotation and the counts are in pairs."""
    snap = tmp_path / "snapshot"
    snap.mkdir()
    rankings = [{"prompt": f"q{i}", "completions": ["a", "b", "c"], "annotation_id": i} for i in (1, 2)]
    trl = [
        {
            "prompt": f"q{r['annotation_id']}",
            "chosen": x,
            "rejected": y,
            "margin": 0.0,
            "annotation_id": r["annotation_id"],
        }
        for r in rankings
        for x, y in (("a", "b"), ("a", "c"), ("b", "c"))
    ]
    trl += [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "margin": 1.0, "annotation_id": i} for i in (3, 4)]
    (snap / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rankings))
    (snap / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl))

    train, held, n_train, n_eval = split_reward_data(snap, tmp_path, 0.0)
    assert held is None and (n_train, n_eval) == (3 + 3 + 1 + 1, 0)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert [r["annotation_id"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["completions"] == ["a", "b", "c"] and rows[2]["chosen"] == "a"

    train, held, n_train, n_eval = split_reward_data(snap, tmp_path, 0.5)
    ids = {
        json.loads(line)["annotation_id"]: side
        for side, path in (("train", train), ("eval", held))
        for line in path.read_text().splitlines()
    }
    assert sorted(ids) == [1, 2, 3, 4] and set(ids.values()) == {"train", "eval"}
    assert n_train + n_eval == 8


def test_rewrite_pairs_train_the_reward_model_and_dpo_only_when_the_round_says_so(tmp_path):
    from app.services.rounds.data import dpo_pairs_file, rewrite_pairs

    snap = tmp_path / "snapshot"
    snap.mkdir()
    rankings = [{"prompt": "q1", "completions": ["a", "b"], "annotation_id": 1}]
    trl = [
        {"prompt": "q1", "chosen": "a", "rejected": "b", "margin": 0.0, "annotation_id": 1},
        {"prompt": "q2", "chosen": "a", "rejected": "b", "margin": 1.0, "annotation_id": 2},
    ]
    # the ranking's rewrite: its pair must reach the reward model although rankings.jsonl holds the ranking
    rewrites = [
        {"prompt": "q1", "chosen": "ideal", "rejected": "a", "margin": 0.0, "annotation_id": 1},
        {"prompt": "q2", "chosen": "best", "rejected": "a", "margin": 0.0, "annotation_id": 2},
    ]
    for name, rows in (("rankings.jsonl", rankings), ("trl.jsonl", trl), ("rewrites.jsonl", rewrites)):
        (snap / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    train, _, n_train, _ = split_reward_data(snap, tmp_path, 0.0)
    assert n_train == 2 and "ideal" not in train.read_text()
    train, _, n_train, _ = split_reward_data(snap, tmp_path, 0.0, use_rewrites=True)
    chosen = [json.loads(line).get("chosen") for line in train.read_text().splitlines()]
    assert n_train == 4 and chosen == [None, "a", "ideal", "best"]

    assert rewrite_pairs(snap) == 2
    assert dpo_pairs_file(tmp_path, use_rewrites=False) == snap / "trl.jsonl"
    both = dpo_pairs_file(tmp_path, use_rewrites=True)
    assert [json.loads(line)["chosen"] for line in both.read_text().splitlines()] == ["a", "a", "ideal", "best"]


def test_reward_data_keeps_each_lines_weight(tmp_path):
    """A weighted snapshot's `weight` reaches the reward model's files as written (the trainer reads it)."""
    snap = tmp_path / "snapshot"
    snap.mkdir()
    trl = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "annotation_id": i, "weight": i / 10} for i in range(8)]
    (snap / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl))
    train, held, _, _ = split_reward_data(snap, tmp_path, 0.3)
    written = [json.loads(line) for path in (train, held) if path for line in path.read_text().splitlines()]
    assert sorted((r["annotation_id"], r["weight"]) for r in written) == [(i, i / 10) for i in range(8)]
