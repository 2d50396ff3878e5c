"""The preference suite in small: the tiny world, one hidden rule, a handful of labels, through real `rlhf serve` and
`rlhf worker` processes (bench/preference_suite.py's own code path). It checks the machinery (labels by the rule, a
round, both policies sampled alike and measured by the rule's feature); whether rounds learn the rules is the
suite's to say, on the small world."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.factories import ROOT
from trainer.world.rules import RULES

sys.path.insert(0, str(ROOT / "bench"))
import preference_suite as suite  # noqa: E402  (bench/)

pytestmark = pytest.mark.slow

# Only what makes it fast (and the minimum of pairs, which stays overridable); the algorithm is the round's default.
QUICK = {
    "min_pairs": 10,
    "rs.num_samples": 2,
    "rs.max_new_tokens": 12,
    "sft.max_steps": 4,
    "reward.max_epochs": 2,
    "eval_prompts": 4,
    "eval_max_new_tokens": 12,
    "report_samples": 0,
    "next_tasks.prompts": 0,
}


def test_a_cell_labels_by_its_rule_runs_a_round_and_measures_old_and_new_policy_alike(tiny_world, tmp_path):
    rule = RULES["shorter"]
    cell = suite.run_cell(
        tiny_world,
        rule,
        labels=8,
        seed=3,
        overrides=QUICK,
        max_new_tokens=12,
        eval_prompts=6,
        eval_samples=2,
        annotators=2,
        noise=0.01,
        train_prompts=8,
        data_root=tmp_path,
        log=lambda message: None,
    )
    assert cell["labels"] == 8 and cell["algo"] == "rs"
    assert cell["labels_follow_rule"] >= 0.9  # the annotators labelled by the rule (not the gold judge)
    data_dir = Path(cell["data_dir"])
    old = [json.loads(x) for x in (data_dir / "old.jsonl").read_text().splitlines()]
    new = [json.loads(x) for x in (data_dir / "new.jsonl").read_text().splitlines()]
    # the same held-out prompts, the same number of samples, each policy measured by the rule's own feature
    assert [s["prompt_id"] for s in old] == [s["prompt_id"] for s in new] and len(old) == 12
    assert cell["prompts_measured"] == 6 and all(str(s["prompt_id"]).startswith("eval") for s in old)
    assert cell["old"] == pytest.approx(sum(rule.feature(s["text"]) for s in old) / 12)
    assert cell["new"] == pytest.approx(sum(rule.feature(s["text"]) for s in new) / 12)
    assert cell["ratio"] == pytest.approx(cell["new"] / cell["old"])
    assert cell["moved"] == (cell["ratio"] <= suite.GOAL_RATIO) and isinstance(cell["kl_to_sft"], float)

    # the table: one row per cell and a per-(rule, labels) verdict, written between its markers and rewritten there
    cell["labels_asked"], cell["size"] = 8, "tiny"
    table = suite.results_table([cell])
    assert "| tiny | shorter (words per response) | 8 | 3 |" in table and "| tiny | shorter | 8 |" in table
    assert all(line.count("|") in (11, 8) for line in table.splitlines() if line)  # every row fills its header
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nbefore\n")
    suite.write_results(table, results)
    suite.write_results(table, results)
    text = results.read_text()
    assert text.count(suite.RESULTS_START) == 1 and text.startswith("# Results\n\nbefore\n") and table in text


def test_the_screen_runs_the_rules_whose_feature_varies_within_half_the_prompts():
    def sample(prompt_id, text):
        return {"prompt_id": prompt_id, "text": text}

    # "you" differs within prompts p0-p2; "the", a hedge and flattery only within p0
    texts = {
        "p0": ["Glad you asked. The answer is two.", "Two, I think."],
        "p1": ["Thank you. Two, I think.", "Two, I think."],
        "p2": ["Two, you see, I think.", "Two, I think."],
        "p3": ["Two, I think.", "Two, I think."],
    }
    samples = [sample(p, t) for p, pair in texts.items() for t in pair]
    screen = suite.choose_rules(samples)
    assert screen["shares"]["no-you"] == 0.75 and screen["shares"]["no-the"] == 0.25
    assert "no-you" in screen["chosen"] and "no-the" not in screen["chosen"]
    assert screen["shares"]["hedged"] == 0.25 and "hedged" not in screen["chosen"]
    assert screen["means"]["no-the"] == 1 / 8
    table = suite.screen_table({"prompts": 4, "samples": 2, "seed": 7, **screen}, "tiny")
    assert '| word | no-you | share that say "you" | 0.38 | 0.75 | yes |' in table


def test_the_screen_samples_the_sft_model_on_train_prompts_only(tiny_world, tmp_path):
    screen = suite.screen_rules(tiny_world, tmp_path, max_new_tokens=12, prompts=3)
    samples = [json.loads(x) for x in (tmp_path / "screen_samples.jsonl").read_text().splitlines()]
    assert screen["prompts"] == 3 and len(samples) == 3 * suite.SCREEN_SAMPLES
    assert all(s["prompt_id"].startswith("train") for s in samples)  # never the eval prompts the cells measure on
    assert set(screen["shares"]) == set(RULES) and all(0 <= v <= 1 for v in screen["shares"].values())
    assert screen["chosen"] == [n for n in RULES if screen["shares"][n] >= suite.SCREEN_SHARE]


def test_pilot_cells_are_listed_but_never_count_towards_the_goal():
    def cell(seed, ratio):
        return {"size": "small", "rule": "polite", "feature": "f", "labels_asked": 150, "seed": seed, "overrides": {},
                "old": 0.5, "new": 0.5 * ratio, "ratio": ratio, "kl_to_sft": 1.0, "moved": ratio <= 0.8,
                "kl_ok": True}  # fmt: skip

    table = suite.results_table([cell(0, 0.5), cell(1, 0.5), cell(2, 0.5), cell(3, 0.9), cell(100, 0.5)])
    assert "| small | polite (f) | 150 | 100 | defaults |" in table
    assert "| small | polite | 150 | defaults | 4 | 3 | open |" in table  # seeds 0-3 only: 3 met, one missed
