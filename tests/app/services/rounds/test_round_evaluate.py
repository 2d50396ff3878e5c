"""A round's evaluation: the reward-hacking warnings read from its figures."""

from __future__ import annotations

import json

from app.services.rounds import hacking_warnings
from app.services.rounds.evaluate import labels_longer_share


def test_reward_hacking_warnings_read_the_evaluation_and_the_training_samples():
    summary = {
        "mean_length_before": 10.0,
        "mean_length": 16.0,
        "distinct_2_before": 0.8,
        "distinct_2": 0.3,
        "rm_win_rate": 0.8,
        "gold_win_rate": 0.4,
    }
    warnings = hacking_warnings({"summary": summary}, {"reward_length_corr": 0.9})  # PPO's and best-of-n's name
    assert [w.split(":")[0].split(" ")[0] for w in warnings] == ["length", "repetition", "reward-length", "the"]
    assert "correlation 0.90" in warnings[2] and "(80%)" in warnings[3] and "(40%)" in warnings[3]
    calm = {
        "mean_length_before": 10.0,
        "mean_length": 11.0,
        "distinct_2_before": 0.8,
        "distinct_2": 0.7,
        "rm_win_rate": 0.7,
        "gold_win_rate": 0.65,
    }
    assert hacking_warnings({"summary": calm}, {"reward_length_corr": 0.2}) == []


def test_reward_hacking_checks_are_a_pass_fail_list_with_their_figures():
    from app.services.rounds.evaluate import hacking_checks

    summary = {"mean_length_before": 10.0, "mean_length": 16.0, "distinct_2_before": 0.8, "distinct_2": 0.7}
    checks = hacking_checks({"summary": summary}, {"reward_length_corr": 0.2})
    assert [(c["name"], c["passed"]) for c in checks] == [
        ("length growth", False),
        ("repetition", True),
        ("reward-length correlation", True),
    ]  # no gold judge: no RM-vs-gold check
    assert checks[0]["detail"] == "mean length 10.0 -> 16.0 tokens (x1.60); at most x1.5"
    assert checks[0]["warning"] == hacking_warnings({"summary": summary}, {"reward_length_corr": 0.2})[0]
    assert checks[1]["warning"] is None and "distinct-2 0.80 -> 0.70" in checks[1]["detail"]


def test_length_and_truncation_warnings_say_what_the_labels_did_not_ask_for(tmp_path):
    grows = {"mean_length_before": 10.0, "mean_length": 16.0, "eos_rate_before": 0.95, "eos_rate": 0.6}
    trl = tmp_path / "trl.jsonl"
    rows = [
        {"prompt": "Q:", "chosen": " short", "rejected": " a much longer answer"},
        {"prompt": "Q:", "chosen": " two words", "rejected": " three words here"},
        {"prompt": "Q:", "chosen": " the same", "rejected": " as this"},  # same length: left out
        {"prompt": "Q:", "chosen": " longer one here", "rejected": " short"},
    ]
    trl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shorter = labels_longer_share(trl)
    assert shorter == 1 / 3
    warnings = hacking_warnings({"summary": grows}, {"reward_length_corr": 0.9}, shorter)
    assert [w.split(":")[0].split(" ")[0] for w in warnings] == ["length", "reward-length", "truncation"]
    assert all("only 33% of pairs" in w for w in warnings[:2])
    assert "40% of the new policy's samples" in warnings[2] and "(5% before)" in warnings[2]
    # labels that preferred the longer response asked for length: only the truncation is a warning then
    asked = hacking_warnings({"summary": grows}, {"reward_length_corr": 0.9}, 0.8)
    assert [w.split(":")[0] for w in asked] == ["truncation"]
    assert labels_longer_share(tmp_path / "missing.jsonl") is None
