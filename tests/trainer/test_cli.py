import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories import ROOT
from trainer.cli import app, expand_list_flags, load_stages

COMMON = ["--seed", "--device", "--precision", "--epochs", "--max-steps", "--batch-size", "--lr", "--config"]
FLAGS = {
    "tokenizer": ["--input", "--vocab-size", "--out"],
    "pretrain": ["--tokenizer", "--data", "--out", "--n-layer", "--n-head", "--n-embd", "--context"] + COMMON,
    "sft": ["--model", "--data", "--out"] + COMMON,
    "generate": [
        "--model",
        "--prompts",
        "--out",
        "--num-samples",
        "--temperature",
        "--top-k",
        "--top-p",
        "--max-new-tokens",
        "--seed",
        "--device",
        "--precision",
        "--batch-size",
        "--config",
    ],
}


def invoke(*args: str):
    load_stages()
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, expand_list_flags(list(args)))


def run_trainer(*args: str) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` as a user runs it, output captured (stderr is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def tiny_pretrain_args(tokenizer: Path, data: list[Path], out: Path, max_steps: int) -> list[str]:
    return [
        "pretrain",
        "--tokenizer",
        str(tokenizer),
        "--data",
        *map(str, data),
        "--out",
        str(out),
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--context",
        "32",
        "--max-steps",
        str(max_steps),
        "--device",
        "cpu",
    ]


@pytest.mark.parametrize("stage", sorted(FLAGS))
def test_stage_help_lists_its_flags(stage):
    result = invoke(stage, "--help")
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    missing = [f for f in FLAGS[stage] if not re.search(re.escape(f) + r"(?![\w-])", text)]
    assert missing == []


def test_python_dash_m_trainer_help_lists_stages():
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert p.returncode == 0, p.stderr
    for stage in FLAGS:
        assert stage in p.stdout


def test_list_flags_take_several_values():
    load_stages()
    assert expand_list_flags(["tokenizer", "--input", "a.txt", "b.txt", "--vocab-size", "300"]) == [
        "tokenizer",
        "--input",
        "a.txt",
        "--input",
        "b.txt",
        "--vocab-size",
        "300",
    ]
    # a non-list flag is left alone
    assert expand_list_flags(["sft", "--data", "x.jsonl", "--lr", "1"]) == ["sft", "--data", "x.jsonl", "--lr", "1"]


def test_config_file_with_flag_override_through_the_cli(tmp_path, tiny_corpus_file):
    cfg = tmp_path / "tok.json"
    cfg.write_text(json.dumps({"input": [str(tiny_corpus_file)], "vocab_size": 500, "out": str(tmp_path / "t")}))
    result = invoke("tokenizer", "--config", str(cfg), "--vocab-size", "300")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "t" / "trainer_config.json").read_text())
    assert saved["vocab_size"] == 300 and saved["input"] == [str(tiny_corpus_file)]
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(tmp_path / "t")) == 300


def test_bad_data_exits_2_naming_file_and_line_and_writes_nothing(tmp_path, tiny_lm_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a"}\n')
    out = tmp_path / "out"
    p = run_trainer("sft", "--model", str(tiny_lm_dir), "--data", str(data), "--out", str(out), "--device", "cpu")
    assert p.returncode == 2
    assert f"{data}:3:" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists() and list(tmp_path.iterdir()) == [data]


def test_missing_required_flag_exits_2():
    result = invoke("sft", "--model", "m", "--data", "d.jsonl")
    assert result.exit_code == 2
    assert "--out" in result.stderr


def test_existing_output_exits_2(tmp_path, tiny_corpus_file):
    (tmp_path / "t").mkdir()
    result = invoke("tokenizer", "--input", str(tiny_corpus_file), "--vocab-size", "300", "--out", str(tmp_path / "t"))
    assert result.exit_code == 2
    assert "already exists" in result.stderr


def test_cli_run_is_silent_off_a_terminal_and_prints_the_output_dir(tmp_path, tiny_tokenizer_dir, tiny_corpus_file):
    out = tmp_path / "lm"
    p = run_trainer(*tiny_pretrain_args(tiny_tokenizer_dir, [tiny_corpus_file] * 2, out, max_steps=3))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no progress bar, no warnings: stderr is not a terminal
    assert p.stdout.strip() == str(out)
    cfg = json.loads((out / "trainer_config.json").read_text())
    assert cfg["data"] == [str(tiny_corpus_file)] * 2 and cfg["max_steps"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_killed_run_leaves_no_output_dir(tmp_path, tiny_tokenizer_dir, tiny_corpus_file):
    import signal
    import time

    out = tmp_path / "lm"
    p = subprocess.Popen(
        [sys.executable, "-m", "trainer", *tiny_pretrain_args(tiny_tokenizer_dir, [tiny_corpus_file], out, 100000)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(m.stat().st_size for m in tmp_path.glob("lm.tmp-*/metrics.jsonl")):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not out.exists()  # the worker sees no half-written model, only the temp dir it ignores
    assert [d.name.startswith("lm.tmp-") for d in tmp_path.iterdir()] == [True]
