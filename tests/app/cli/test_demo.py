"""Issue 14 end to end: `rlhf demo --size tiny --prepare-only`, then `rlhf serve`, `rlhf worker` and `rlhf simulate`
produce annotations that export and train a reward model better than chance on held-out pairs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import ROOT

CLI = [sys.executable, "-m", "app.cli"]
TRAINER = [sys.executable, "-m", "trainer"]
# One sampling for the labelled tasks and the held-out pairs the reward model is scored on.
SAMPLING = ["--num-samples", "4", "--temperature", "1.0", "--max-new-tokens", "24"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, env, *, command=CLI, **kw):
    result = subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{command[2]} {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def _wait_jobs_done(env, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = json.loads(_run(["jobs", "list", "--json"], env).stdout)
        if jobs and all(j["status"] not in ("queued", "running") for j in jobs):
            failed = [j for j in jobs if j["status"] != "succeeded"]
            assert not failed, failed
            return jobs
        time.sleep(1)
    raise AssertionError("jobs did not finish in time")


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory, tiny_world):
    data = tmp_path_factory.mktemp("demo-data")
    # The session's tiny world stands in for the demo's first build (the same cached stages `rlhf demo` makes).
    shutil.copytree(tiny_world, data / "world" / "tiny")
    env = _demo_env(data)
    started = time.perf_counter()
    prepared = _run(["demo", "--size", "tiny", "--prepare-only"], env)
    prepare_s = time.perf_counter() - started
    again = time.perf_counter()
    _run(["demo", "--size", "tiny", "--prepare-only"], env)
    return {
        "env": env,
        "data": data,
        "prepare_s": prepare_s,
        "second_s": time.perf_counter() - again,
        "stderr": prepared.stderr,
    }


def _processes_of(data: Path) -> dict[int, str]:
    """Every live process started for this data dir (they all inherit RLHF_DATA_DIR), pid -> command line."""
    marker = f"RLHF_DATA_DIR={data}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if " Z " in (entry / "stat").read_text():  # a zombie has exited
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _demo_env(data: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "RLHF_DATA_DIR": str(data),
        "RLHF_SECRET_KEY": "k",
        "RLHF_OFFLINE_ASSETS": "1",
        "RLHF_DEMO_ADMIN_PASSWORD": "admin-password",
        "HF_HUB_OFFLINE": "1",
        "RLHF_WORKER_POLL_S": "0.3",
    }
    env.pop("RLHF_DATABASE_URL", None)
    return env


def test_demo_serves_before_the_world_is_built_shows_progress_and_ctrl_c_leaves_no_process(tmp_path):
    data = tmp_path / "data"
    port = _free_port()
    log_path = tmp_path / "demo.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:  # not a TTY: progress comes as plain lines
        demo = subprocess.Popen(
            [*CLI, "demo", "--size", "tiny", "--port", str(port)],
            cwd=ROOT,
            env=_demo_env(data),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as a terminal's foreground job: Ctrl-C goes to the group
        )
    try:
        first_page = None
        while first_page is None and time.monotonic() - started < 180 and demo.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    first_page = time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(0.2)
        assert first_page is not None, log_path.read_text()[-3000:]
        # the world was not built when the first page came: its SFT model (the build's last stage) is not there yet
        assert not (data / "world" / "tiny" / "sft").exists(), f"first page after {first_page:.1f} s, world built"

        def training() -> bool:  # a progress line with its step count and estimate
            return re.search(r"world build \(job 1\) \d/5 \w+: step \d+/\d+, about .+ left", log_path.read_text())

        deadline = time.monotonic() + 300
        while not training() and time.monotonic() < deadline and demo.poll() is None:
            time.sleep(0.5)
        assert training(), log_path.read_text()[-3000:]
        running = _processes_of(data)
        assert any("-m trainer" in cmd for cmd in running.values()), running
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        demo.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _processes_of(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_of(data) == {}, (running, log_path.read_text()[-2000:])
        assert "job 1: queued" in log_path.read_text()  # back in the queue: the next start goes on with it
    finally:
        for pid in _processes_of(data):
            os.kill(pid, signal.SIGKILL)


def test_demo_prepares_models_prompts_first_tasks_and_accounts(demo_env):
    env = demo_env["env"]
    assert "registered model" in demo_env["stderr"] and "queued generation job" in demo_env["stderr"]
    assert "admin: username 'admin', password 'admin-password'" in demo_env["stderr"]
    models = json.loads(_run(["models", "list", "--json"], env).stdout)
    stages = {m["stage"]: m for m in models}
    assert {"pretrained", "sft"} <= set(stages) and stages["sft"]["current"]
    assert demo_env["prepare_s"] < 60 and demo_env["second_s"] < 30  # world artifacts cached in the data dir


def test_serve_worker_simulate_export_and_reward_model_beats_chance(demo_env, tmp_path):
    env, data = demo_env["env"], demo_env["data"]
    # More tasks than the demo's first batch, so the reward model has something to learn from.
    _run(
        [
            "generate",
            "--count",
            "120",
            *SAMPLING,
            "--seed",
            "1",
        ],
        env,
    )
    port = _free_port()
    worker = subprocess.Popen([*CLI, "worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        _wait_jobs_done(env)
        token = _run(["tokens", "create", "--username", "admin"], env).stdout.strip()
        simulated = _run(
            [
                "simulate",
                "--url",
                url,
                "--admin-token",
                token,
                "--annotators",
                "3",
                "--labels",
                "400",
                "--noise",
                "0.05",
                "--seed",
                "3",
                "--json",
            ],
            env,
        )
        report = json.loads(simulated.stdout)
        assert report["labels"] >= 200, report
        assert report["agreement_with_gold"] > 0.7, report
    finally:
        for proc in (server, worker):
            proc.terminate()
        for proc in (server, worker):
            proc.wait(timeout=30)

    pairs = tmp_path / "trl.jsonl"
    exported = _run(["export", "--format", "trl", "--out", str(pairs)], env)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(rows) >= 80 and set(rows[0]) >= {"prompt", "chosen", "rejected", "margin", "annotation_id"}
    assert f"{len(rows)}" in exported.stderr

    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft_dir = next(
        Path(m["path"]) for m in json.loads(_run(["models", "list", "--json"], env).stdout) if m["stage"] == "sft"
    )
    held_out = _gold_pairs_on_eval_prompts(data, sft_dir, tmp_path, env)
    assert len(held_out) >= 60
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out))
    rm_dir = tmp_path / "rm"
    _run(
        [
            "reward",
            "--model",
            str(sft_dir),
            "--data",
            str(tmp_path / "train.jsonl"),
            "--eval-data",
            str(tmp_path / "eval.jsonl"),
            "--out",
            str(rm_dir),
            "--epochs",
            "2",
            "--seed",
            "0",
        ],
        env,
        command=TRAINER,
    )
    metrics = [json.loads(line) for line in (rm_dir / "metrics.jsonl").read_text().splitlines()]
    accuracies = [m[k] for m in metrics for k in m if k.startswith("eval") and "accuracy" in k]
    assert accuracies, metrics[-1]
    # Better than chance: a one-sided binomial test at p < 0.01 against 50% on the held-out pairs.
    n = len(held_out)
    assert accuracies[-1] > 0.5 + 2.33 * (0.25 / n) ** 0.5, (accuracies, n)


def _gold_pairs_on_eval_prompts(data: Path, sft_dir: Path, tmp_path: Path, env) -> list[dict]:
    """Held-out pairs nobody labelled: the SFT model's answers to eval prompts, ordered by the gold judge."""
    from trainer.world import judge

    prompts_file = data / "world" / "tiny" / "prompts_eval.jsonl"
    samples = tmp_path / "eval_samples.jsonl"
    _run(
        [
            "generate",
            "--model",
            str(sft_dir),
            "--prompts",
            str(prompts_file),
            "--out",
            str(samples),
            *SAMPLING,
            "--seed",
            "7",
        ],
        env,
        command=TRAINER,
    )
    prompts = {row["prompt_id"]: row["prompt"] for row in map(json.loads, prompts_file.read_text().splitlines())}
    by_prompt: dict[str, list[str]] = {}
    for row in map(json.loads, samples.read_text().splitlines()):
        by_prompt.setdefault(row["prompt_id"], []).append(row["text"])
    pairs = []
    for prompt_id, texts in by_prompt.items():
        prompt = prompts[prompt_id]
        scored = sorted({t: judge.score(prompt, t) for t in texts}.items(), key=lambda kv: -kv[1])
        for i, (better, s_better) in enumerate(scored):
            for worse, s_worse in scored[i + 1 :]:
                if s_better - s_worse >= 0.1:  # a clear gold preference
                    pairs.append({"prompt": prompt, "chosen": better, "rejected": worse})
    return pairs


def test_a_second_start_finds_the_world_built_queues_no_build_and_serves(demo_env, tmp_path):
    env, port = demo_env["env"], _free_port()
    started = time.monotonic()
    with open(tmp_path / "demo.log", "wb") as log:
        demo = subprocess.Popen(
            [*CLI, "demo", "--size", "tiny", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while time.monotonic() - started < 60 and demo.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        first_page = time.monotonic() - started
        jobs = json.loads(_run(["jobs", "list", "--json"], env).stdout)
        assert not [j for j in jobs if j["kind"] == "world"], jobs  # nothing to build: registered in place
        assert first_page < demo_env["prepare_s"] + 30, (tmp_path / "demo.log").read_text()[-2000:]
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=60)
    assert _processes_of(demo_env["data"]) == {}
