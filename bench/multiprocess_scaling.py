"""Steps per second of the reward and PPO stages on 1 and on 2 CPU processes (torchrun, gloo), and the share of a
step the gradient all-reduce takes.

    .venv/bin/python bench/multiprocess_scaling.py [--steps 12] [--n-layer 4] [--n-embd 128] [--threads 1]
        [--ppo-batch 16] [--stages reward,ppo]

Same global batch on 1 and 2 processes (2 processes each take half of it), so the ideal is 2× on 2 free cores.
Each run is `torchrun --nproc-per-node P` on this file (the 1-process run too, so both pay the same launch); the
timed window runs from the first step's metrics line to the last one (loading, the first step and saving excluded).
PPO's step is also split into the rollout (sampling and scoring) and the update (its share of each in the window).
The all-reduce share: DDP's gradient buckets are all-reduced synchronously in a timing communication hook, and
their time inside the window over the window; it includes waiting for the slower process (load imbalance, a
loaded machine), which is what a step loses to it. Rank 0's CPU share: the CPU time it got over the window's wall
time (below 100%: the machine's other work took the rest); the speed-up per own CPU second compares steps per
CPU-second of rank 0 (what 2 processes would give on 2 free cores, their all-reduce waits included as far as they
spent CPU in them), the figure to trust on a shared machine. One thread a process (`--threads`), so that 2 processes use
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
    phases: dict[str, list[tuple[float, float]]] = {"rollout": [], "update": []}

    def timed(fn, name):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name].append((started, time.perf_counter()))

        return run

    ppo.make_rollout, ppo.ppo_update = timed(ppo.make_rollout, "rollout"), timed(ppo.ppo_update, "update")
    stamps: list[float] = []
    entry = {"reward": (reward_model.RewardConfig, reward_model.train_reward), "ppo": (ppo.PPOConfig, ppo.train_ppo)}
    config_cls, train = entry[stage]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cpu: list[float] = []  # this process's CPU time at each metrics line: how much of a core it got

    def stamp(line: dict) -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    train(load_config(config_cls, config_path), on_metrics=stamp)
    if int(os.environ.get("RANK", "0")) == 0:
        if stage == "reward":  # the reward stage's last line is its summary
            stamps, cpu = stamps[:-1], cpu[:-1]
        start, end = stamps[0], stamps[-1]

        def inside(spans):
            return sum(min(b, end) - max(a, start) for a, b in spans if b > start and a < end)

        steps = len(stamps) - 1
        result = {
            "steps": steps,
            "seconds": end - start,
            "steps_per_s": steps / (end - start),
            "comm_s": inside(intervals),
        }
        result.update({f"{name}_s": inside(spans) for name, spans in phases.items()}, cpu_s=cpu[-1] - cpu[0])
        Path(result_path).write_text(json.dumps(result))


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


def stage_config(stage: str, assets: dict[str, str], out: Path, steps: int, ppo_batch: int) -> dict:
    common = {"device": "cpu", "seed": 0, "max_steps": steps, "out": str(out)}
    if stage == "reward":
        return {**common, "model": assets["lm"], "data": assets["pairs"], "batch_size": 32}
    return {
        **common,
        "policy": assets["lm"],
        "reward_model": assets["rm"],
        "prompts": assets["prompts"],
        "batch_size": ppo_batch,
        "max_new_tokens": 16,
        "ppo_epochs": 2,
        "num_minibatches": 2,
        "checkpoint_every": 0,
    }


def run(stage: str, processes: int, assets: dict[str, str], d: Path, args: argparse.Namespace) -> dict:
    out = d / f"{stage}-{processes}"
    config = d / f"{stage}-{processes}.json"
    config.write_text(json.dumps(stage_config(stage, assets, out, args.steps, args.ppo_batch)))
    result = d / f"{stage}-{processes}.result.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", str(processes), __file__]
        + ["--worker", stage, str(config), str(result)],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)},
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
    parser.add_argument("--ppo-batch", type=int, default=16, help="PPO prompts a step")
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        assets = build_assets(d, args.n_layer, args.n_embd)
        print(
            f"GPT-2 {args.n_layer} layers, d={args.n_embd}; {args.steps} steps; {args.threads} thread(s) a process; "
            f"PPO {args.ppo_batch} prompts a step"
        )
        print(
            "| stage | processes | steps/s | speed-up | all-reduce share | PPO: rollout share | PPO: update share "
            "| rank 0's CPU share | speed-up per own CPU second |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for stage in args.stages.split(","):
            one = one_cpu = None
            for processes in (1, 2):
                r = run(stage, processes, assets, d, args)
                one = one or r["steps_per_s"]
                per_cpu = r["steps"] / r["cpu_s"]  # steps per second of the CPU this process got
                one_cpu = one_cpu or per_cpu
                speed, share = r["steps_per_s"], r["comm_s"] / r["seconds"]
                parts = " | ".join(
                    f"{r[f'{p}_s'] / r['seconds']:.0%}" if stage == "ppo" else "" for p in ("rollout", "update")
                )
                got = r["cpu_s"] / r["seconds"]
                print(
                    f"| {stage} | {processes} | {speed:.2f} | {speed / one:.2f}× | {share:.0%} | {parts} | {got:.0%} "
                    f"| {per_cpu / one_cpu:.2f}× |"
                )


if __name__ == "__main__":
    main()
