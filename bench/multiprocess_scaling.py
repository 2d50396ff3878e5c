"""Steps per second of the reward and PPO stages on 1 and on 2 CPU processes (torchrun, gloo), and the share of a
step the gradient all-reduce takes.

    .venv/bin/python bench/multiprocess_scaling.py [--steps 12] [--n-layer 4] [--n-embd 128] [--threads 1]

Same global batch on 1 and 2 processes (2 processes each take half of it), so the ideal is 2× on 2 free cores.
Each run is `torchrun --nproc-per-node P` on this file (the 1-process run too, so both pay the same launch); the
timed window runs from the first step's metrics line to the last one (loading, the first step and saving excluded).
The all-reduce share: DDP's gradient buckets are all-reduced synchronously in a timing communication hook, and
their time inside the window over the window; it includes waiting for the slower process (load imbalance, a
loaded machine), which is what a step loses to it. One thread a process (`--threads`), so that 2 processes use
the 2 cores that 1 process with 2 threads would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("reward", "ppo")


# ----------------------------------------------------------------------------- one process of a run (under torchrun)


def _timed_allreduce(intervals: list[tuple[float, float]]):
    """A DDP communication hook: the bucket all-reduced (then averaged) synchronously, its wall time recorded."""
    import torch
    import torch.distributed as dist

    def hook(state, bucket):
        started = time.perf_counter()
        buffer = bucket.buffer()
        dist.all_reduce(buffer)
        buffer.div_(dist.get_world_size())
        intervals.append((started, time.perf_counter()))
        done = torch.futures.Future()
        done.set_result(buffer)
        return done

    return hook


def run_worker(stage: str, config_path: str, result_path: str) -> None:
    import torch

    from trainer import distributed, ppo, reward_model
    from trainer.config import load_config

    intervals: list[tuple[float, float]] = []
    plain_ddp = distributed.ddp

    def timed_ddp(module, device, world):
        wrapped = plain_ddp(module, device, world)
        if world > 1:
            wrapped.register_comm_hook(None, _timed_allreduce(intervals))
        return wrapped

    reward_model.ddp = ppo.ddp = timed_ddp
    stamps: list[float] = []
    entry = {"reward": (reward_model.RewardConfig, reward_model.train_reward), "ppo": (ppo.PPOConfig, ppo.train_ppo)}
    config_cls, train = entry[stage]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train(load_config(config_cls, config_path), on_metrics=lambda line: stamps.append(time.perf_counter()))
    if int(os.environ.get("RANK", "0")) == 0:
        stamps = stamps[:-1] if stage == "reward" else stamps  # the reward stage's last line is its summary
        start, end = stamps[0], stamps[-1]
        comm = sum(min(b, end) - max(a, start) for a, b in intervals if b > start and a < end)
        steps = len(stamps) - 1
        Path(result_path).write_text(
            json.dumps({"steps": steps, "seconds": end - start, "steps_per_s": steps / (end - start), "comm_s": comm})
        )


# ----------------------------------------------------------------------------- the driver


def build_assets(d: Path, n_layer: int, n_embd: int) -> dict[str, str]:
    from tests.factories import NEUTRAL, build_tiny_lm, synthetic_pair, write_jsonl
    from trainer.reward_model import RewardConfig, train_reward

    lm = build_tiny_lm(d / "lm", n_layer=n_layer, n_embd=n_embd, dropout=0.0)
    rng = random.Random(0)
    pairs = write_jsonl(d / "pairs.jsonl", [synthetic_pair(rng) for _ in range(2048)])
    prompts = write_jsonl(
        d / "prompts.jsonl",
        [{"prompt_id": f"p{i}", "prompt": " " + " ".join(rng.choice(NEUTRAL) for _ in range(4))} for i in range(512)],
    )
    rm = train_reward(RewardConfig(model=str(lm), data=str(pairs), out=str(d / "rm"), max_steps=2, device="cpu"))
    return {"lm": str(lm), "pairs": str(pairs), "prompts": str(prompts), "rm": str(rm)}


def stage_config(stage: str, assets: dict[str, str], out: Path, steps: int) -> dict:
    common = {"device": "cpu", "seed": 0, "max_steps": steps, "out": str(out)}
    if stage == "reward":
        return {**common, "model": assets["lm"], "data": assets["pairs"], "batch_size": 32}
    return {
        **common,
        "policy": assets["lm"],
        "reward_model": assets["rm"],
        "prompts": assets["prompts"],
        "batch_size": 16,
        "max_new_tokens": 16,
        "ppo_epochs": 2,
        "num_minibatches": 2,
        "checkpoint_every": 0,
    }


def run(stage: str, processes: int, assets: dict[str, str], d: Path, steps: int, threads: int) -> dict:
    out = d / f"{stage}-{processes}"
    config = d / f"{stage}-{processes}.json"
    config.write_text(json.dumps(stage_config(stage, assets, out, steps)))
    result = d / f"{stage}-{processes}.result.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", str(processes), __file__]
        + ["--worker", stage, str(config), str(result)],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(result.read_text())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        run_worker(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        assets = build_assets(d, args.n_layer, args.n_embd)
        print(f"GPT-2 {args.n_layer} layers, d={args.n_embd}; {args.steps} steps; {args.threads} thread(s) a process")
        print("| stage | processes | steps/s | speed-up | all-reduce share |")
        print("|---|---|---|---|---|")
        for stage in STAGES:
            one = None
            for processes in (1, 2):
                r = run(stage, processes, assets, d, args.steps, args.threads)
                one = one or r["steps_per_s"]
                speed, share = r["steps_per_s"], r["comm_s"] / r["seconds"]
                print(f"| {stage} | {processes} | {speed:.2f} | {speed / one:.2f}× | {share:.0%} |")


if __name__ == "__main__":
    main()
