"""Every training stage on two CPU processes (torchrun, gloo) matches one process: one torchrun launch runs all of
them (tests.trainer.stage_sequence) while the one-process references run here.

Each stage's data leaves a last batch that gives one process an empty share (its zero-weight filler must not hang
the all-reduce). Tolerances (relative, per logged step): loss 1e-4 and gradient norm 1e-3 (float sums in another
order: two half-batches summed by the all-reduce, not one batch)."""

import json
import random
from pathlib import Path

from tests.factories import build_tiny_lm, synthetic_pair, write_jsonl
from tests.trainer.torchrun import finish_or_dump_stacks, launch
from trainer.config import load_config
from trainer.dpo import DPOConfig, train_dpo
from trainer.reward_model import RewardConfig, train_reward
from trainer.sft import SftConfig, train_sft

LOSS_TOL, GRAD_NORM_TOL = 1e-4, 1e-3


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _close(x: float, y: float, tol: float) -> bool:
    return abs(x - y) <= tol * max(1.0, abs(x))


def _configs(tmp_path: Path) -> dict[str, tuple]:
    # dropout off: SFT trains in train mode, and two processes draw other dropout masks than one
    lm = str(build_tiny_lm(tmp_path / "lm", dropout=0.0))
    rng = random.Random(2)
    # 81 pairs in batches of 16: the 6th batch holds one pair, so rank 1's share of it is empty (a filler);
    # microbatches of 4 make each share 2 backward passes (DDP syncs the last)
    pairs = str(write_jsonl(tmp_path / "pairs.jsonl", [synthetic_pair(rng) for _ in range(81)]))
    # 17 examples in batches of 8: the third batch holds one example
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in (synthetic_pair(rng) for _ in range(17))]
    sft_data = str(write_jsonl(tmp_path / "sft.jsonl", sft_rows))
    common = {"device": "cpu", "seed": 3}
    return {
        "reward": (
            RewardConfig,
            train_reward,
            {"model": lm, "data": pairs, "batch_size": 16, "micro_batch_size": 4, "lr": 0.003, "max_steps": 6},
        ),
        "sft": (SftConfig, train_sft, {"model": lm, "data": sft_data, "batch_size": 8, "lr": 0.003, "epochs": 1}),
        "dpo": (
            DPOConfig,
            train_dpo,
            {"policy": lm, "data": pairs, "batch_size": 16, "micro_batch_size": 4, "lr": 0.003, "max_steps": 6},
        ),
    }, common


def test_every_stage_on_two_processes_matches_one_process(tmp_path):
    stages, common = _configs(tmp_path)
    argv = []
    for name, (_, _, flags) in stages.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({**flags, **common, "out": str(tmp_path / "two" / name)}))
        argv += [name, str(config)]
    two = launch(["tests.trainer.stage_sequence", *argv])
    for name, (config_cls, train, flags) in stages.items():  # the one-process references meanwhile
        train(load_config(config_cls, overrides={**flags, **common, "out": str(tmp_path / "one" / name)}))
    finish_or_dump_stacks(two, timeout=300)
    for name in stages:
        a, b = _lines(tmp_path / "one" / name), _lines(tmp_path / "two" / name)
        assert len(a) == len(b), name
        steps = [(x, y) for x, y in zip(a, b) if "grad_norm" in x]
        assert len(steps) >= 3, name
        for x, y in steps:
            assert _close(x["loss"], y["loss"], LOSS_TOL), (name, x, y)
            assert _close(x["grad_norm"], y["grad_norm"], GRAD_NORM_TOL), (name, x, y)
        assert steps[0][0]["loss"] != steps[-1][0]["loss"], name  # it trained
        assert not list((tmp_path / "two").glob(f"{name}.tmp-*")), name  # only rank 0 wrote, renamed into place
