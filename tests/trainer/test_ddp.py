"""Every training stage on two CPU processes (torchrun, gloo) matches one process: one torchrun launch runs all of
them (tests.trainer.stage_sequence) while the one-process references run here.

Each stage's data leaves a last batch that gives one process an empty share (its zero-weight filler must not hang
the all-reduce). Tolerances per logged step, relative to max(1, |value|) (TOLERANCES): the runs differ only in
the order of float sums (two half-batches summed by the all-reduce, not one batch; rollouts padded to their own
share's longest prompt), which Adam's steps carry on from step to step. SFT and DPO run twice on two processes: under
DDP and sharded (FSDP2, --fsdp); SFT's saved weights are one process's in both."""

import json
import random
from pathlib import Path

from safetensors.torch import load_file

from tests.factories import build_tiny_lm, synthetic_pair, write_jsonl
from tests.trainer.torchrun import finish_or_dump_stacks, launch
from trainer.best_of_n import BestOfNConfig, run_best_of_n
from trainer.config import load_config
from trainer.dpo import DPOConfig, train_dpo
from trainer.ppo import PPOConfig, train_ppo
from trainer.reward_model import RewardConfig, train_reward
from trainer.sft import SftConfig, train_sft

WEIGHT_TOL = 1e-5  # SFT's saved weights after 3 steps, absolute (measured: below 1e-6)
# stage -> {metric: tolerance}; measured on a 2-core CPU: every difference below 1e-6
TOLERANCES = {
    "reward": {"loss": 1e-5, "grad_norm": 1e-4, "accuracy": 0.0},
    "sft": {"loss": 1e-5, "grad_norm": 1e-4},
    "dpo": {"loss": 1e-5, "grad_norm": 1e-4, "rewards/margins": 1e-5},
    "ppo": {
        "objective/scores": 1e-5,
        "objective/kl": 1e-5,
        "loss/policy_avg": 1e-5,
        "loss/value_avg": 1e-5,
        "grad_norm": 1e-4,
    },
}


def _lines(out: Path) -> list[dict]:
    return _rows(out / "metrics.jsonl")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _close(x: float, y: float, tol: float) -> bool:
    return abs(x - y) <= tol * max(1.0, abs(x))


def _configs(tmp_path: Path, lm: str, reward_model: str, pairs: str, rng: random.Random) -> dict[str, tuple]:
    # 81 pairs in batches of 16: the 6th batch holds one pair, so rank 1's share of it is empty (a filler);
    # microbatches of 4 make each share 2 backward passes (DDP syncs the last)
    # 17 examples in batches of 8: the third batch holds one example
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in (synthetic_pair(rng) for _ in range(17))]
    sft_data = str(write_jsonl(tmp_path / "sft.jsonl", sft_rows))
    # 9 prompts, 4 a step: the third step's one prompt leaves rank 1 a filler rollout; two minibatches of two
    # rows, so some minibatch holds no row of one process
    prompts = [{"prompt_id": f"p{i}", "prompt": synthetic_pair(rng)["prompt"]} for i in range(9)]
    ppo_prompts = str(write_jsonl(tmp_path / "prompts.jsonl", prompts))
    best_of_n_prompts = str(write_jsonl(tmp_path / "best_of_n_prompts.jsonl", prompts[:5]))
    return {
        "sft": (SftConfig, train_sft, {"model": lm, "data": sft_data, "batch_size": 8, "lr": 0.003, "epochs": 1}),
        "dpo": (
            DPOConfig,
            train_dpo,
            {"policy": lm, "data": pairs, "batch_size": 16, "micro_batch_size": 4, "lr": 0.003, "max_steps": 6},
        ),
        # 5 prompts: shares of 3 and 2; the judge pays for brevity (tests.trainer.test_best_of_n)
        "best-of-n": (
            BestOfNConfig,
            run_best_of_n,
            {
                "policy": lm,
                "judge": "py:tests.trainer.test_best_of_n:fewer_words",
                "prompts": best_of_n_prompts,
                "num_samples": 4,
                "max_new_tokens": 16,
                "batch_size": 3,
            },
        ),
        "ppo": (
            PPOConfig,
            train_ppo,
            {
                "policy": lm,
                "reward_model": reward_model,
                "prompts": ppo_prompts,
                "batch_size": 4,
                "num_minibatches": 2,
                "ppo_epochs": 2,
                "max_new_tokens": 6,
                "lr": 0.001,
                "epochs": 1,
            },
        ),
    }


def _reward(tmp_path: Path, lm: str, pairs: str, processes: int) -> Path:
    """The reward stage: on one process here, or on two under torchrun."""
    flags = {"model": lm, "data": pairs, "batch_size": 16, "micro_batch_size": 4, "lr": 0.003, "max_steps": 6}
    out = tmp_path / ("one" if processes == 1 else "two") / "reward"
    if processes == 1:
        return train_reward(load_config(RewardConfig, overrides={**flags, **COMMON, "out": str(out)}))
    config = tmp_path / "reward.json"
    config.write_text(json.dumps({**flags, **COMMON, "out": str(out)}))
    return config


COMMON = {"device": "cpu", "seed": 3}


def test_every_stage_on_two_processes_matches_one_process(tmp_path):
    # dropout off: SFT trains in train mode, and two processes draw other dropout masks than one
    lm = str(build_tiny_lm(tmp_path / "lm", dropout=0.0))
    rng = random.Random(2)
    # 81 pairs in batches of 16: the 6th batch holds one pair, so rank 1's share of it is empty (a filler);
    # microbatches of 4 make each share 2 backward passes (DDP syncs the last)
    pairs = str(write_jsonl(tmp_path / "pairs.jsonl", [synthetic_pair(rng) for _ in range(81)]))
    reward_model = str(_reward(tmp_path, lm, pairs, 1))  # first: PPO (both runs) scores with it
    stages = _configs(tmp_path, lm, reward_model, pairs, rng)
    argv = ["reward", str(_reward(tmp_path, lm, pairs, 2))]
    for name, (_, _, flags) in stages.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({**flags, **COMMON, "out": str(tmp_path / "two" / name)}))
        argv += [name, str(config)]
    # SFT and DPO once more, sharded (FSDP2) instead of replicated: the same numbers, and the whole model saved
    for name in ("sft", "dpo"):
        config = tmp_path / f"{name}-fsdp.json"
        flags = {**stages[name][2], **COMMON, "fsdp": True, "out": str(tmp_path / "two" / f"{name}-fsdp")}
        config.write_text(json.dumps(flags))
        argv += [name, str(config)]
    two = launch(["tests.trainer.stage_sequence", *argv])
    for name, (config_cls, train, flags) in stages.items():  # the one-process references meanwhile
        train(load_config(config_cls, overrides={**flags, **COMMON, "out": str(tmp_path / "one" / name)}))
    finish_or_dump_stacks(two, timeout=300)
    # best-of-n: the same samples (each one's seed is its own), the same picks, the same figures
    one, two = tmp_path / "one" / "best-of-n", tmp_path / "two" / "best-of-n"
    for name in ("samples.jsonl", "best.jsonl"):
        a, b = _rows(one / name), _rows(two / name)
        assert [r["text"] if "text" in r else r["completion"] for r in a] == [
            r["text"] if "text" in r else r["completion"] for r in b
        ]
        assert all(_close(x["reward"], y["reward"], 1e-6) for x, y in zip(a, b))
    assert len(_rows(one / "samples.jsonl")) == 20 and _rows(one / "best.jsonl")
    final_one, final_two = _lines(one)[-1], _lines(two)[-1]
    assert final_one.keys() == final_two.keys()
    for key in [k for k in final_one if k.startswith("rs/")]:
        assert _close(final_one[key], final_two[key], 1e-6), key
    sharded = [("sft-fsdp", TOLERANCES["sft"]), ("dpo-fsdp", TOLERANCES["dpo"])]
    for name, tolerances in [*TOLERANCES.items(), *sharded]:
        a, b = _lines(tmp_path / "one" / name.removesuffix("-fsdp")), _lines(tmp_path / "two" / name)
        assert len(a) == len(b), name
        steps = [(x, y) for x, y in zip(a, b) if "grad_norm" in x]
        assert len(steps) >= 3, name
        for x, y in steps:
            for key, tol in tolerances.items():
                assert _close(x[key], y[key], tol), (name, key, x, y)
        first = next(iter(tolerances))
        assert steps[0][0][first] != steps[-1][0][first], name  # it trained
        assert not list((tmp_path / "two").glob(f"{name}.tmp-*")), name  # only rank 0 wrote, renamed into place
    # the saved weights: DDP's (rank 0's copy) and FSDP's (gathered from the shards) are one process's
    w1 = load_file(tmp_path / "one" / "sft" / "model.safetensors")
    for other in ("sft", "sft-fsdp"):
        w2 = load_file(tmp_path / "two" / other / "model.safetensors")
        assert w1.keys() == w2.keys(), other  # tied embeddings saved once, as save_pretrained saves them
        assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= WEIGHT_TOL, other
