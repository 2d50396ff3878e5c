"""Running trainer stages under `torchrun` from a test: the launch, and on a hang every rank's Python stacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def launch(args: list[str], *, processes: int = 2) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node N -m *args` on the CPU (gloo), one thread a process."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc-per-node", str(processes), "-m", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def finish_or_dump_stacks(proc: subprocess.Popen, timeout: float) -> str:
    """stderr of a finished torchrun (asserting it succeeded); on a hang, fail with every rank's Python stacks (the
    CLI dumps them on SIGUSR1) so the failure says where it waits."""
    try:
        err = proc.communicate(timeout=timeout)[1]
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
    assert proc.returncode == 0, err[-3000:]
    return err
