"""Process plumbing for the worker: child processes in their own process group that die with their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: on Linux the kernel SIGKILLs this process when its parent dies (a kill -9'd worker must not
    leave a child running a job that another worker will take over). A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn_group_leader(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start `argv` as the leader of a new session (hence process group): killing the group reaches everything
    it starts (e.g. the trainer), and a Ctrl-C aimed at the worker's terminal does not reach it."""
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent, **kwargs)


def spawn_child(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start `argv` in the caller's process group (so a group kill reaches it), dying with the caller."""
    return subprocess.Popen(argv, preexec_fn=die_with_parent, **kwargs)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def terminate_group(proc: subprocess.Popen, *, grace_s: float) -> int:
    """SIGTERM the process group led by `proc`, SIGKILL it after `grace_s`; returns the exit status."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)  # also whatever the leader left behind
    return proc.wait()


def reap_group(proc: subprocess.Popen) -> None:
    """After the leader exited: kill anything it left running in its group."""
    _signal_group(proc.pid, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"
