"""Two CPU processes (torchrun, gloo) train a reward model under DDP and match one process's loss curve."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.factories import build_tiny_lm, synthetic_pair, write_jsonl
from trainer.config import load_config
from trainer.reward_model import RewardConfig, train_reward


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _communicate_or_dump_stacks(proc: subprocess.Popen, timeout: float) -> str:
    """stderr of a finished torchrun; on a hang, fail with every rank's Python stacks (the CLI dumps them on
    SIGUSR1) so the failure says where it waits."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        ranks = _children(proc.pid)  # before torchrun dies: its orphans would keep the pipes open
        for pid in ranks:
            os.kill(pid, signal.SIGUSR1)
        time.sleep(3)
        for pid in [*ranks, proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        raise AssertionError(
            f"torchrun did not finish in {timeout} s; stdout {out!r}; stacks:\n{err[-6000:]}"
        ) from None


def test_two_process_ddp_matches_one_process(tmp_path):
    lm = build_tiny_lm(tmp_path / "lm")
    rng = random.Random(2)
    # 81 pairs in batches of 16: the 6th batch holds one pair, so rank 1's share of it is empty (a filler);
    # microbatches of 4 make each share 2 backward passes (DDP syncs the last)
    data = write_jsonl(tmp_path / "p.jsonl", [synthetic_pair(rng) for _ in range(81)])
    args = [
        "--model",
        str(lm),
        "--data",
        str(data),
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--micro-batch-size",
        "4",
        "--lr",
        "0.003",
        "--max-steps",
        "6",
        "--seed",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.Popen(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "trainer",
            "reward",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the one-process reference runs here meanwhile (saves a second interpreter start-up)
    train_reward(
        load_config(
            RewardConfig,
            overrides={
                "model": str(lm),
                "data": str(data),
                "device": "cpu",
                "batch_size": 16,
                "micro_batch_size": 4,
                "lr": 0.003,
                "max_steps": 6,
                "seed": 3,
                "out": str(tmp_path / "one"),
            },
        )
    )
    err = _communicate_or_dump_stacks(two, timeout=300)
    assert two.returncode == 0, err[-3000:]
    a, b = _lines(tmp_path / "one"), _lines(tmp_path / "two")
    assert len(a) == len(b) == 7  # 6 steps + the final summary line
    for x, y in zip(a[:-1], b[:-1]):
        assert abs(x["loss"] - y["loss"]) <= 1e-4 * max(1.0, abs(x["loss"])), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-3 * max(1.0, x["grad_norm"]), (x, y)
        assert x["accuracy"] == y["accuracy"]
    assert a[0]["loss"] != a[-2]["loss"]  # it trained
    assert not list(tmp_path.glob("two.tmp-*"))  # only rank 0 wrote, and renamed into place
