"""Building the world's models through the real trainer stages (child processes), with caching."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from trainer.world import build


def test_cached_stage_reruns_only_when_inputs_or_flags_change(tmp_path, monkeypatch):
    runs = []

    def fake_run_stage(stage, args, out, *, on_progress=None, threads=None):
        runs.append((stage, list(args)))
        out.mkdir()
        (out / "weights").write_text(str(len(runs)))

    monkeypatch.setattr(build, "run_stage", fake_run_stage)
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n')
    out = tmp_path / "model"
    build.cached_stage("pretrain", ["--data", str(data), "--lr", "1"], out, [data])
    build.cached_stage("pretrain", ["--data", str(data), "--lr", "1"], out, [data])
    assert len(runs) == 1
    build.cached_stage("pretrain", ["--data", str(data), "--lr", "2"], out, [data])
    assert len(runs) == 2
    data.write_text('{"text": "b"}\n')
    (tmp_path / "model.tmp-left-by-a-kill").mkdir()
    build.cached_stage("pretrain", ["--data", str(data), "--lr", "2"], out, [data])
    assert len(runs) == 3 and (out / "weights").read_text() == "3"
    assert not list(tmp_path.glob("model.tmp-*"))
    # a downstream stage keys on the upstream stamp, so it reruns when the upstream did
    child = tmp_path / "child"
    build.cached_stage("sft", ["--model", str(out)], child, [out])
    build.cached_stage("sft", ["--model", str(out)], child, [out])
    assert len(runs) == 4
    build.cached_stage("pretrain", ["--data", str(data), "--lr", "3"], out, [data])
    build.cached_stage("sft", ["--model", str(out)], child, [out])
    assert len(runs) == 6


def test_prepare_models_refuses_without_data(tmp_path):
    with pytest.raises(build.WorldBuildError, match="run build_world first"):
        build.prepare_models("tiny", tmp_path)


@pytest.mark.slow  # starts a real `python -m trainer` child (imports torch)
def test_failed_stage_raises_with_the_log_tail(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(build.WorldBuildError, match="exited 2"):
        build.run_stage(
            "pretrain",
            ["--tokenizer", str(tmp_path / "missing"), "--data", str(tmp_path / "none.jsonl"), "--out", str(out)],
            out,
        )
    assert not out.exists()


def test_build_reports_each_stage_with_live_steps(tmp_path):
    """The stages run in order and report their steps as they go (a shrunken tiny preset keeps this quick)."""
    mini = dataclasses.replace(build.SIZES["tiny"], pretrain_docs=300, sft_examples=60, pretrain_epochs=1)
    events = []
    build.build_all(mini, tmp_path / "w", on_progress=lambda *e: events.append(e))
    stages = [e[0] for e in events]
    assert stages.index("data") < stages.index("tokenizer") < stages.index("pretrain") < stages.index("sft")
    assert ("pretrain", 1, 1) in events and any(e[0] == "pretrain" and e[2] > 1 for e in events)  # live steps


@pytest.mark.slow
def test_tiny_world_builds_end_to_end_and_is_cached(tiny_world, tmp_path):
    """The session's tiny world (built once by the `tiny_world` fixture): complete, and a rebuild is a no-op."""
    from transformers import AutoModelForCausalLM

    files = build._files(tiny_world)
    models = build.WorldModels(
        tokenizer=tiny_world / "tokenizer", pretrained=tiny_world / "pretrained", sft=tiny_world / "sft"
    )
    sft = AutoModelForCausalLM.from_pretrained(models.sft)
    n_params = sum(p.numel() for p in sft.parameters())
    assert 50_000 < n_params < 300_000
    assert json.loads((models.sft / "trainer_config.json").read_text())
    assert (models.pretrained / "metrics.jsonl").read_text().count("\n") > 5

    before = {p: p.stat().st_mtime_ns for p in (models.tokenizer, models.pretrained, models.sft)}
    assert build.world_is_built("tiny", tiny_world) and not build.world_is_built("tiny", tiny_world, seed=1)
    assert not build.world_is_built("small", tiny_world)
    started = time.perf_counter()
    build.build_all("tiny", tiny_world, runner=lambda *a, **k: pytest.fail("a cached stage ran"))
    assert time.perf_counter() - started < 5
    assert {p: p.stat().st_mtime_ns for p in before} == before

    report = build.measure_format(models.sft, files.prompts_eval, tmp_path / "samples.jsonl", max_new_tokens=32)
    assert report.n == build.SIZES["tiny"].eval_prompts
    assert 0.0 <= report.in_format <= 1.0 and 0.0 <= report.mean_score <= 1.0

    # the judge plugs into the trainer's evaluate stage as a Python judge
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "evaluate",
            "--policy",
            str(models.sft),
            "--baseline",
            str(models.pretrained),
            "--prompts",
            str(files.prompts_eval),
            "--judge",
            "py:trainer.world.judge:score",
            "--max-new-tokens",
            "24",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert any("win" in key for key in json.dumps(result).split('"')), result
