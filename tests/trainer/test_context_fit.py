"""The one rule for inputs longer than the model takes (trainer.context_fit), stage by stage: a too-long prompt or
comparison is skipped and counted as skipped_too_long, never a failure (the tiny model takes 128 tokens)."""

from __future__ import annotations

import json

import pytest

from tests.factories import build_tiny_lm, write_jsonl
from trainer.config import load_config
from trainer.context_fit import prompt_limit, sequence_limit

LONG = " na" * 200  # 200 word tokens: more than the 128-token context
PAIRS = [
    {"prompt": " na nb", "chosen": " good", "rejected": " bad"},
    {"prompt": LONG, "chosen": " good", "rejected": " bad"},
    {"prompt": " nc", "chosen": " good good", "rejected": " bad"},
]
PROMPTS = [
    {"prompt_id": "a", "prompt": " na nb"},
    {"prompt_id": "b", "prompt": LONG},
    {"prompt_id": "c", "prompt": " nc"},
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    return {
        "lm": str(build_tiny_lm(d / "lm")),
        "pairs": str(write_jsonl(d / "pairs.jsonl", PAIRS)),
        "prompts": str(write_jsonl(d / "prompts.jsonl", PROMPTS)),
        "sft": str(write_jsonl(d / "sft.jsonl", [{"prompt": p["prompt"], "completion": " good"} for p in PROMPTS])),
    }


def _metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_rule():
    assert prompt_limit(128, 64) == 64 and prompt_limit(64, 64) == 0
    assert sequence_limit(128, 1024) == 128 and sequence_limit(128, 0) == 128 and sequence_limit(128, 100) == 100


def test_reward_and_dpo_skip_a_comparison_longer_than_the_context(tmp_path, assets, capsys):
    from trainer.dpo import DPOConfig, train_dpo
    from trainer.reward_model import RewardConfig, train_reward

    common = {"data": assets["pairs"], "device": "cpu", "max_steps": 1, "batch_size": 2}
    out = train_reward(
        load_config(RewardConfig, overrides={**common, "model": assets["lm"], "out": str(tmp_path / "r")})
    )
    assert _metrics(out)[-1]["skipped_too_long"] == 1
    assert "1 comparison group(s) skipped" in capsys.readouterr().err
    out = train_dpo(load_config(DPOConfig, overrides={**common, "policy": assets["lm"], "out": str(tmp_path / "d")}))
    assert _metrics(out)[-1]["skipped_too_long"] == 1


def test_sft_skips_an_example_longer_than_the_context(tmp_path, assets):
    from trainer.sft import SftConfig, train_sft

    cfg = {"model": assets["lm"], "data": assets["sft"], "out": str(tmp_path / "s"), "device": "cpu", "max_steps": 1}
    out = train_sft(load_config(SftConfig, overrides=cfg))
    assert _metrics(out)[-1]["skipped_too_long"] == 1


def test_sampling_stages_skip_a_prompt_with_no_room_to_answer(tmp_path, assets, tiny_lm_dir, capsys):
    from trainer.best_of_n import BestOfNConfig, run_best_of_n
    from trainer.evaluate import EvaluateConfig, run_evaluate
    from trainer.generate import GenerateConfig, run_generate
    from trainer.ppo import PPOConfig, train_ppo

    sampling = {"prompts": assets["prompts"], "device": "cpu", "max_new_tokens": 6, "seed": 1}
    run_generate(load_config(GenerateConfig, overrides={**sampling, "model": assets["lm"], "out": str(tmp_path / "g")}))
    assert {json.loads(x)["prompt_id"] for x in (tmp_path / "g").read_text().splitlines()} == {"a", "c"}
    assert "1 prompt(s) skipped" in capsys.readouterr().err
    judge = "py:tests.trainer.test_best_of_n:fewer_words"
    # the pretrained tiny LM (64-token context) ends its samples with EOS, as best-of-n needs
    rs = {**sampling, "policy": str(tiny_lm_dir), "judge": judge, "num_samples": 4, "max_new_tokens": 20}
    best = run_best_of_n(load_config(BestOfNConfig, overrides={**rs, "out": str(tmp_path / "b")}))
    assert _metrics(best)[-1]["skipped_too_long"] == 1
    ppo = {**sampling, "policy": assets["lm"], "reward_model": assets["lm"], "max_steps": 1, "batch_size": 2}
    out = train_ppo(load_config(PPOConfig, overrides={**ppo, "num_minibatches": 1, "out": str(tmp_path / "p")}))
    assert _metrics(out)[-1]["skipped_too_long"] == 1
    ev = {**sampling, "policy": assets["lm"], "reward_model": assets["lm"], "data": assets["pairs"]}
    result = run_evaluate(load_config(EvaluateConfig, overrides=ev))
    assert result["skipped_too_long"] == {"pairs": 1, "prompts": 1} and result["policy"]["samples"] == 2
