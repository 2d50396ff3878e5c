"""Build the embedded world: its data files, then its pretrained and SFT models, cached.

`build_world(size, out_dir)` writes the data (pure Python, a second or two); `prepare_models(size,
out_dir)` runs `python -m trainer tokenizer`, `pretrain` and `sft` as child processes with the size
preset; `measure_format(...)` samples the SFT model on the eval prompts with `python -m trainer
generate` and reports the share of answers in the intended format and the gold judge's mean score.

Everything is cached in out_dir: data files are rewritten only when their bytes would change, and a
stage is rerun only when its inputs (files' sha256, flags, upstream stage) changed since the
`<stage>.stamp.json` written beside its output, so a second call returns at once; `world_is_built`
says so without running anything. A caller may pass its own `runner` for the stages (the service's
world-build job runs them as every job runs the trainer).

Layout of out_dir:
    world.json               manifest: size, seed, row counts, sha256 of each data file
    pretrain.jsonl           {"text"}
    sft.jsonl                {"prompt", "completion"}
    prompts.jsonl            {"prompt_id", "prompt", "split", "tags"} (both splits)
    prompts_train.jsonl, prompts_eval.jsonl   the same rows, one split each
    tokenizer/, pretrained/, sft/            trainer outputs (save_pretrained directories)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer.world import corpus, judge, prompts

FORMAT_VERSION = 2  # bump when the generators change, so cached worlds are rebuilt
Progress = Callable[[str, int, int], None]  # (stage, step, total)


@dataclass(frozen=True)
class WorldSize:
    name: str
    pretrain_docs: int
    sft_examples: int
    train_prompts: int
    eval_prompts: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    context: int
    pretrain_epochs: int
    pretrain_batch_size: int
    pretrain_lr: float
    sft_epochs: int
    sft_batch_size: int
    sft_lr: float
    max_new_tokens: int
    threads: int | None  # torch threads for the stages (None: torch's default, one per core)


SIZES: dict[str, WorldSize] = {
    # ~100k parameters; the whole build well under a minute on 2 cores (tests use it)
    # (enough pretraining steps that its answers open like the world's styles, so a judge can tell them apart)
    "tiny": WorldSize(
        "tiny",
        pretrain_docs=8000,
        sft_examples=2000,
        train_prompts=120,
        eval_prompts=40,
        vocab_size=384,
        n_layer=2,
        n_head=2,
        n_embd=64,
        context=128,
        pretrain_epochs=1,
        pretrain_batch_size=16,
        pretrain_lr=3e-3,
        sft_epochs=2,
        sft_batch_size=16,
        sft_lr=1e-3,
        max_new_tokens=32,
        threads=1,
    ),
    # ~0.5M parameters; pretrain + SFT in about 6 minutes on 2 cores (the default demo)
    # (a narrow model on more tokens: at this compute a ~0.5M model beats a 1M one, Chinchilla-style; 3 pretraining
    # epochs instead of 1 raise SFT correctness from 0.36 to 0.76, and the RLHF rounds' gold win-rate with it:
    # README, "Does it work?")
    "small": WorldSize(
        "small",
        pretrain_docs=70000,
        sft_examples=10000,
        train_prompts=1000,
        eval_prompts=200,
        vocab_size=1024,
        n_layer=4,
        n_head=4,
        n_embd=96,
        context=128,
        pretrain_epochs=3,
        pretrain_batch_size=32,
        pretrain_lr=2.5e-3,
        sft_epochs=1,
        sft_batch_size=32,
        sft_lr=8e-4,
        max_new_tokens=48,
        threads=None,
    ),
}


@dataclass(frozen=True)
class WorldFiles:
    out_dir: Path
    pretrain: Path
    sft: Path
    prompts: Path
    prompts_train: Path
    prompts_eval: Path
    manifest: Path


@dataclass(frozen=True)
class WorldModels:
    tokenizer: Path
    pretrained: Path
    sft: Path


class WorldBuildError(RuntimeError):
    """A trainer stage failed while building the world."""


def _size(size: str | WorldSize) -> WorldSize:
    if isinstance(size, WorldSize):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _jsonl_bytes(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _files(out: Path) -> WorldFiles:
    return WorldFiles(
        out_dir=out,
        pretrain=out / "pretrain.jsonl",
        sft=out / "sft.jsonl",
        prompts=out / "prompts.jsonl",
        prompts_train=out / "prompts_train.jsonl",
        prompts_eval=out / "prompts_eval.jsonl",
        manifest=out / "world.json",
    )


def _manifest_is_current(files: WorldFiles, size: WorldSize, seed: int) -> bool:
    try:
        manifest = json.loads(files.manifest.read_text())
    except (OSError, ValueError):
        return False
    if (
        manifest.get("format_version") != FORMAT_VERSION
        or manifest.get("seed") != seed
        or manifest.get("size") != asdict(size)
    ):
        return False
    return all(
        (files.out_dir / name).is_file() and _sha256(files.out_dir / name) == digest
        for name, digest in manifest.get("sha256", {}).items()
    )


def build_world(
    size: str | WorldSize, out_dir: str | Path, seed: int = 0, on_progress: Progress | None = None
) -> WorldFiles:
    """Write the world's data files into out_dir (same size and seed -> same bytes)."""
    preset = _size(size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _files(out)
    report = on_progress or (lambda stage, step, total: None)
    report("data", 0, 1)
    if _manifest_is_current(files, preset, seed):
        report("data", 1, 1)
        return files

    rows = prompts.prompt_sets(seed, preset.train_prompts, preset.eval_prompts)
    eval_questions = {prompts.question_of(r["prompt"]) for r in rows if r["split"] == "eval"}
    contents = {
        files.prompts: _jsonl_bytes(rows),
        files.prompts_train: _jsonl_bytes(r for r in rows if r["split"] == "train"),
        files.prompts_eval: _jsonl_bytes(r for r in rows if r["split"] == "eval"),
        files.pretrain: _jsonl_bytes(corpus.pretrain_documents(seed, preset.pretrain_docs, eval_questions)),
        files.sft: _jsonl_bytes(corpus.sft_examples(seed, preset.sft_examples, eval_questions)),
    }
    for path, data in contents.items():
        _write_if_changed(path, data)
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "size": asdict(preset),
        "rows": {path.name: data.count(b"\n") for path, data in contents.items()},
        "sha256": {path.name: hashlib.sha256(data).hexdigest() for path, data in contents.items()},
    }
    _write_if_changed(files.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    report("data", 1, 1)
    return files


# ---- trainer stages as child processes -------------------------------------------------------------


def _child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _follow_metrics(out: Path, offset: int) -> tuple[int, tuple[int, int] | None]:
    """New (step, total_steps) from the metrics.jsonl of a running stage's `OUT.tmp-*` directory."""
    candidates = sorted(out.parent.glob(f"{out.name}.tmp-*/metrics.jsonl"))
    if not candidates:
        return offset, None
    with open(candidates[-1], "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    lines = chunk.split(b"\n")
    complete, rest = lines[:-1], lines[-1]
    latest = None
    for line in complete:
        try:
            row = json.loads(line)
            latest = (int(row["step"]), int(row["total_steps"]))
        except (ValueError, KeyError, TypeError):
            continue
    return offset + len(chunk) - len(rest), latest


def run_stage(
    stage: str, args: list[str], out: Path, *, on_progress: Progress | None = None, threads: int | None = None
) -> None:
    """`python -m trainer STAGE ARGS` in a child process, reporting its metrics.jsonl progress."""
    report = on_progress or (lambda stage, step, total: None)
    cmd = [sys.executable, "-m", "trainer", stage, *args]
    log_path = out.parent / f"{out.name}.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(threads))
        offset, last = 0, None
        while child.poll() is None:
            time.sleep(0.25)
            offset, latest = _follow_metrics(out, offset)
            if latest and latest != last:
                report(stage, *latest)
                last = latest
    if child.returncode != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise WorldBuildError(f"`python -m trainer {stage}` exited {child.returncode}:\n{tail}")


def _stamp_path(out: Path) -> Path:
    return out.parent / f"{out.name}.stamp.json"


def _stamp(stage: str, args: list[str], inputs: list[Path]) -> dict:
    digests = {}
    for path in inputs:
        stamp = _stamp_path(path)
        # an upstream model directory is identified by its own stamp, a file by its bytes
        digests[str(path.name)] = hashlib.sha256(stamp.read_bytes()).hexdigest() if path.is_dir() else _sha256(path)
    return {"stage": stage, "args": args, "inputs": digests, "format_version": FORMAT_VERSION}


StageRunner = Callable[..., None]  # (stage, args, out, *, on_progress, threads): runs `python -m trainer STAGE`


def _relative_args(args: list[str], out: Path) -> list[str]:
    return [a.replace(str(out.parent) + os.sep, "") for a in args]


def stage_is_current(stage: str, args: list[str], out: Path, inputs: list[Path]) -> bool:
    """`out` holds the result of this stage with these flags and inputs (so cached_stage would not rerun it)."""
    stamp_path = _stamp_path(out)
    if not (out.is_dir() and stamp_path.is_file() and all(p.exists() for p in inputs)):
        return False
    if any(p.is_dir() and not _stamp_path(p).is_file() for p in inputs):
        return False
    return json.loads(stamp_path.read_text()) == _stamp(stage, _relative_args(args, out), inputs)


def cached_stage(
    stage: str,
    args: list[str],
    out: Path,
    inputs: list[Path],
    *,
    on_progress: Progress | None = None,
    threads: int | None = None,
    runner: StageRunner | None = None,
) -> Path:
    """Run a stage unless `out` already holds the result of the same stage, flags and inputs. `runner` runs it
    (default `run_stage`; the service's world-build job passes its own, which runs it the way every job does)."""
    stamp = _stamp(stage, _relative_args(args, out), inputs)
    stamp_path = _stamp_path(out)
    if out.is_dir() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        if on_progress:
            on_progress(stage, 1, 1)
        return out
    stamp_path.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    for stale in out.parent.glob(f"{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if on_progress:
        on_progress(stage, 0, 1)
    (runner or run_stage)(stage, args, out, on_progress=on_progress, threads=threads)
    stamp_path.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    if on_progress:
        on_progress(stage, 1, 1)
    return out


@dataclass(frozen=True)
class ModelStage:
    """One trainer stage of the world's models: `python -m trainer STAGE ARGS` into `out`, from `inputs`."""

    stage: str
    args: list[str]
    out: Path
    inputs: list[Path]


def model_stages(size: str | WorldSize, out_dir: str | Path, seed: int = 0) -> list[ModelStage]:
    """The tokenizer, pretraining and SFT stages of the world in out_dir, in order."""
    p = _size(size)
    out = Path(out_dir)
    files = _files(out)
    tok, pre, sft = out / "tokenizer", out / "pretrained", out / "sft"
    tokenizer_args = ["--input", str(files.pretrain), "--vocab-size", str(p.vocab_size), "--out", str(tok)]
    pretrain_args = [
        "--tokenizer",
        str(tok),
        "--data",
        str(files.pretrain),
        "--out",
        str(pre),
        "--n-layer",
        str(p.n_layer),
        "--n-head",
        str(p.n_head),
        "--n-embd",
        str(p.n_embd),
        "--context",
        str(p.context),
        "--epochs",
        str(p.pretrain_epochs),
        "--batch-size",
        str(p.pretrain_batch_size),
        "--lr",
        str(p.pretrain_lr),
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    sft_args = [
        "--model",
        str(pre),
        "--data",
        str(files.sft),
        "--out",
        str(sft),
        "--epochs",
        str(p.sft_epochs),
        "--batch-size",
        str(p.sft_batch_size),
        "--lr",
        str(p.sft_lr),
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    return [
        ModelStage("tokenizer", tokenizer_args, tok, [files.pretrain]),
        ModelStage("pretrain", pretrain_args, pre, [tok, files.pretrain]),
        ModelStage("sft", sft_args, sft, [pre, files.sft]),
    ]


def prepare_models(
    size: str | WorldSize,
    out_dir: str | Path,
    seed: int = 0,
    on_progress: Progress | None = None,
    threads: int | None = None,
    runner: StageRunner | None = None,
) -> WorldModels:
    """Tokenizer, pretrained model and SFT model of the world in out_dir (built once, then cached).
    Call build_world first (build_all does both)."""
    p = _size(size)
    threads = threads or p.threads
    out = Path(out_dir)
    if not _manifest_is_current(_files(out), p, seed):
        raise WorldBuildError(
            f"{out}: no current world data for size {p.name!r} and seed {seed}; run build_world first"
        )
    for s in model_stages(p, out, seed):
        cached_stage(s.stage, s.args, s.out, s.inputs, on_progress=on_progress, threads=threads, runner=runner)
    return WorldModels(tokenizer=out / "tokenizer", pretrained=out / "pretrained", sft=out / "sft")


def world_is_built(size: str | WorldSize, out_dir: str | Path, seed: int = 0) -> bool:
    """Data and models of this size and seed are all in out_dir: build_all would run nothing."""
    p = _size(size)
    out = Path(out_dir)
    if not _manifest_is_current(_files(out), p, seed):
        return False
    return all(stage_is_current(s.stage, s.args, s.out, s.inputs) for s in model_stages(p, out, seed))


def build_all(
    size: str | WorldSize,
    out_dir: str | Path,
    seed: int = 0,
    on_progress: Progress | None = None,
    threads: int | None = None,
    runner: StageRunner | None = None,
) -> tuple[WorldFiles, WorldModels]:
    """Data and models: what `rlhf demo` needs before it registers them."""
    files = build_world(size, out_dir, seed=seed, on_progress=on_progress)
    models = prepare_models(size, out_dir, seed=seed, on_progress=on_progress, threads=threads, runner=runner)
    return files, models


@dataclass(frozen=True)
class FormatReport:
    n: int
    in_format: float  # share of samples in the intended format that also ended with EOS
    mean_score: float  # the gold judge's mean score
    eos: float  # share of samples that ended with EOS
    samples: Path


def measure_format(
    model_dir: str | Path,
    prompts_file: str | Path,
    out_file: str | Path,
    *,
    temperature: float = 0.7,
    max_new_tokens: int = 48,
    seed: int = 0,
    threads: int | None = None,
    on_progress: Progress | None = None,
) -> FormatReport:
    """Sample one answer per prompt with `python -m trainer generate` and grade it: the share in the
    intended format (`judge.in_format` and finished with EOS) and the mean gold score."""
    out_file = Path(out_file)
    if out_file.exists():
        out_file.unlink()
    report = on_progress or (lambda stage, step, total: None)
    report("generate", 0, 1)
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "generate",
        "--model",
        str(model_dir),
        "--prompts",
        str(prompts_file),
        "--out",
        str(out_file),
        "--num-samples",
        "1",
        "--temperature",
        str(temperature),
        "--top-k",
        "0",
        "--top-p",
        "1.0",
        "--max-new-tokens",
        str(max_new_tokens),
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(threads))
    if done.returncode != 0:
        raise WorldBuildError(f"`python -m trainer generate` exited {done.returncode}:\n{done.stderr[-2000:]}")
    report("generate", 1, 1)
    prompt_by_id = {}
    with open(prompts_file, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            prompt_by_id[row["prompt_id"]] = row["prompt"]
    n = fmt = eos = 0
    total_score = 0.0
    with open(out_file, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            prompt = prompt_by_id[row["prompt_id"]]
            ended = row["finish_reason"] == "eos"
            n += 1
            eos += ended
            fmt += ended and judge.in_format(prompt, row["text"])
            total_score += judge.score(prompt, row["text"])
    if n == 0:
        raise WorldBuildError(f"{out_file}: no samples generated")
    return FormatReport(n=n, in_format=fmt / n, mean_score=total_score / n, eos=eos / n, samples=out_file)
