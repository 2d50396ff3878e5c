"""Output directories that appear complete or not at all, trainer_config.json, metrics.jsonl (and the peak memory
its final record carries), progress bars."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainer.config import UsageError, config_to_dict

if TYPE_CHECKING:  # the job processes read these names without loading torch (about 2 s a process)
    import torch

__all__ = [
    "UsageError",
    "atomic_output_dir",
    "atomic_output_file",
    "save_trainer_config",
    "MetricsLog",
    "progress",
    "PEAK_MEMORY_METRIC",
    "peak_memory",
]

# A stage's final metrics record carries its peak memory. It measures the machine, not the run: two runs with the
# same seed write the same numbers except this one.
PEAK_MEMORY_METRIC = "memory/peak_mb"


def peak_memory(device: torch.device) -> dict[str, float]:
    """{PEAK_MEMORY_METRIC: MiB}: on CUDA the most memory torch's allocator held at once on the device
    (max_memory_allocated); on CPU the process's peak resident set size (ru_maxrss, a high-water mark of the whole
    process: everything it loaded, not only the stage's tensors)."""
    if device.type == "cuda":
        import torch

        mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
    return {PEAK_MEMORY_METRIC: round(mib, 1)}


def _check_free(out: Path) -> None:
    if out.exists():
        raise UsageError(f"{out}: output already exists; choose a new --out")


@contextmanager
def atomic_output_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh sibling dir `OUT.tmp-*`; rename it to OUT on success, delete it on error.

    A run killed mid-way leaves only `OUT.tmp-*`, never a half-written OUT (the worker relies on this).
    """
    out = Path(out)
    _check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _check_free(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_output_file(out: str | Path) -> Iterator[Path]:
    """Like atomic_output_dir for a single file: yields `OUT.tmp-*` path, renamed to OUT on success."""
    out = Path(out)
    _check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _check_free(out)
        os.rename(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_trainer_config(dir: Path, stage: str, config: Any) -> None:
    """Write trainer_config.json = {"stage": stage, **fields}; reusable as `--config`."""
    data = {"stage": stage, **config_to_dict(config)}
    (Path(dir) / "trainer_config.json").write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):  # torch / numpy scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class MetricsLog:
    """Appends one JSON object a line to metrics.jsonl; the worker tails it for live progress."""

    def __init__(self, path: Path, on_metrics: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.on_metrics = on_metrics
        self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, total_steps: int, **metrics: Any) -> dict:
        line = {"step": int(step), "total_steps": int(total_steps), **{k: _plain(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()
        if self.on_metrics is not None:
            self.on_metrics(line)
        return line

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None) -> tqdm:
    """tqdm bar on a terminal; a silent no-op (same API: update, set_postfix, close) otherwise."""
    return tqdm(iterable, total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)
