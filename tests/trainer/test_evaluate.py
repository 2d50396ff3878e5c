import json
import random
import subprocess
import sys

import pytest

from tests.factories import NEUTRAL, build_tiny_lm, synthetic_pair, write_jsonl
from trainer.config import UsageError, load_config
from trainer.evaluate import EvaluateConfig, distinct_n, run_evaluate, win_rate
from trainer.reward_model import RewardConfig, train_reward


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    lm = build_tiny_lm(d / "lm")
    other = build_tiny_lm(d / "other", seed=1)
    rng = random.Random(5)
    train = write_jsonl(d / "train.jsonl", [synthetic_pair(rng) for _ in range(256)])
    held = write_jsonl(d / "held.jsonl", [synthetic_pair(rng) for _ in range(64)])
    rm = train_reward(RewardConfig(model=str(lm), data=str(train), out=str(d / "rm"), lr=3e-3, device="cpu"))
    prompts = write_jsonl(
        d / "prompts.jsonl", [{"prompt_id": f"q{i}", "prompt": " " + rng.choice(NEUTRAL)} for i in range(6)]
    )
    return {"lm": lm, "other": other, "rm": rm, "held": held, "prompts": prompts, "dir": d}


def _eval(**kw):
    return run_evaluate(load_config(EvaluateConfig, overrides={"device": "cpu", "max_new_tokens": 8, **kw}))


def test_distinct_n_and_win_rate():
    assert distinct_n(["a b a b", "a b"], 1) == 2 / 6
    assert distinct_n(["a b a b", "a b"], 2) == 2 / 4  # (a b), (b a)
    assert distinct_n([""], 2) == 0.0
    w = win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0])
    assert (w["wins"], w["ties"], w["losses"], w["win_rate"]) == (2, 1, 1, 2.5 / 4)
    # per prompt (2 samples each): outcomes (1, 0.5) and (0, 1) -> prompt means 0.75, 0.5: std 0.1768 / sqrt(2)
    clustered = win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0], per_prompt=2)
    assert clustered["prompts"] == 2 and abs(clustered["standard_error"] - 0.125) < 1e-12
    assert w["prompts"] == 4 and w["standard_error"] > clustered["standard_error"]  # each sample its own prompt
    assert win_rate([1.0], [0.0])["standard_error"] is None  # one prompt: no spread to measure


def test_reward_model_accuracy_on_held_out_pairs(assets):
    res = _eval(reward_model=str(assets["rm"]), data=str(assets["held"]))
    rm = res["reward_model"]
    assert rm["pairs"] == 64 and rm["accuracy"] >= 0.9 and rm["margin"] > 0
    assert set(rm) >= {"loss", "accuracy", "margin", "calibration_ece"}


def test_same_policy_ties_and_has_zero_kl(assets):
    judge = "py:tests.factories:good_word_reward"
    res = _eval(
        policy=str(assets["lm"]),
        baseline=str(assets["lm"]),
        prompts=str(assets["prompts"]),
        judge=judge,
        ref=str(assets["lm"]),
        num_samples=2,
    )
    assert res["win_rate"] == {
        "win_rate": 0.5,
        "wins": 0,
        "ties": 12,
        "losses": 0,
        "n": 12,
        "prompts": 6,
        "standard_error": 0.0,
    }
    assert abs(res["policy"]["kl_to_ref"]) < 1e-4 and abs(res["policy"]["kl_to_ref_k3"]) < 1e-4
    for k in ("mean_length", "distinct_1", "distinct_2", "eos_rate", "judge_mean"):
        assert k in res["policy"] and k in res["baseline"]


def test_win_rate_against_another_policy_under_an_rm_judge(assets, tmp_path):
    paired = tmp_path / "paired.jsonl"
    res = _eval(
        policy=str(assets["lm"]),
        baseline=str(assets["other"]),
        prompts=str(assets["prompts"]),
        judge=f"rm:{assets['rm']}",
        ref=str(assets["other"]),
        num_samples=2,
        samples_out=str(paired),
    )
    w = res["win_rate"]
    assert w["n"] == 12 and w["wins"] + w["losses"] > 0
    assert res["policy"]["kl_to_ref"] > 0.01  # two different random models
    # --samples-out: each prompt's and sample's answers side by side, the win-rate's outcomes read from their scores
    rows = [json.loads(line) for line in paired.read_text().splitlines()]
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(f"q{i}", k) for i in range(6) for k in range(2)]
    wins = sum(r["policy"]["score"] > r["baseline"]["score"] + 1e-9 for r in rows)
    assert wins == w["wins"] and len({r["seed"] for r in rows}) == 12
    for r in rows:
        for side in ("policy", "baseline"):
            assert set(r[side]) == {"text", "tokens", "finished", "score"} and r[side]["tokens"] >= 1


def test_kl_to_the_policy_it_was_tuned_from(assets):
    """--tuned-from: how far a round moved the policy, beside its KL to the reference."""
    common = {"policy": str(assets["lm"]), "prompts": str(assets["prompts"])}
    res = _eval(**common, ref=str(assets["other"]), tuned_from=str(assets["lm"]))
    assert abs(res["policy"]["kl_to_tuned_from"]) < 1e-4 and abs(res["policy"]["kl_to_ref"]) > 0.01
    moved = _eval(**common, tuned_from=str(assets["other"]))["policy"]
    assert moved["kl_to_tuned_from"] == pytest.approx(res["policy"]["kl_to_ref"])
    assert (
        moved["kl_to_tuned_from_k3"] == pytest.approx(res["policy"]["kl_to_ref_k3"])
        and moved["kl_to_tuned_from_k3"] > 0
    )


def test_bad_flags_are_usage_errors(assets):
    with pytest.raises(UsageError, match="nothing to evaluate"):
        _eval()
    with pytest.raises(UsageError, match="needs a --judge"):
        _eval(policy=str(assets["lm"]), prompts=str(assets["prompts"]), baseline=str(assets["lm"]))
    with pytest.raises(UsageError, match="--samples-out needs --baseline"):
        _eval(policy=str(assets["lm"]), prompts=str(assets["prompts"]), samples_out="x.jsonl")
    with pytest.raises(UsageError, match="py:module:function"):
        _eval(policy=str(assets["lm"]), prompts=str(assets["prompts"]), judge="py:nomodule")


def test_cli_prints_json(assets, tmp_path):
    out = tmp_path / "eval.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "evaluate",
            "--reward-model",
            str(assets["rm"]),
            "--data",
            str(assets["held"]),
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["reward_model"]["accuracy"] >= 0.9
