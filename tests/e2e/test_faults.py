"""Fault tests with real processes: kill -9 the worker during PPO (the round resumes from its checkpoint on the next
worker; the current policy never changes in between); a failed round makes `rlhf round start --wait` exit 1;
kill -9 the web server under load (no acknowledged annotation is lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import Annotation, Job, ModelVersion
from app.services.users import create_token, create_user
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import label_preferences, make_prompts, register_policy, rlhf_command, tiny_round_config, wait_for

pytestmark = pytest.mark.slow


def stack_session(stack) -> Session:
    return Session(create_engine(stack.env["RLHF_DATABASE_URL"]), expire_on_commit=False)


def read(stack, fn):
    with stack_session(stack) as db:
        return fn(db)


def test_kill_9_worker_during_ppo_resumes_from_the_checkpoint(stack, tiny_lm_dir):
    with stack_session(stack) as db:
        sft = register_policy(db, tiny_lm_dir)
        label_preferences(db, make_prompts(db, train=16, eval=3)["train"], annotator=factories.make_annotator(db))
        db.commit()
        sft_id = sft.id
    config = stack.root / "round.json"
    # 30 steps of ~0.13 s: the kill lands seconds before PPO could finish, even on a loaded CI machine (with
    # 10 steps the whole run after the first checkpoint took ~1.3 s, and CI once saw it complete before the kill)
    config.write_text(
        json.dumps(
            tiny_round_config(
                ppo={"max_steps": 30, "batch_size": 4, "epochs": 8}, eval_prompts=3, next_tasks={"prompts": 0}
            )
        )
    )
    # `--wait` blocks across the kill and the takeover, and ends with the round's outcome
    waiter = subprocess.Popen(
        [*rlhf_command(), "round", "start", "--config", str(config), "--wait"],
        env=stack.env,
        cwd=stack.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = int(waiter.stdout.readline())
    worker = stack.start("worker-1", "worker")
    rdir = stack.root / "data" / "rounds" / str(job_id)
    checkpoint = rdir / "policy.ckpt" / "state.pt"
    wait_for(
        checkpoint.is_file, timeout=300, interval=0.1, what="a PPO checkpoint", on_timeout=lambda: stack.log("worker-1")
    )

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(1.0)
    assert not (rdir / "policy").exists()  # no half-written policy
    job = read(stack, lambda db: db.get(Job, job_id))
    assert job.status == "running"  # its worker is gone; the stale sweep will notice
    current = read(stack, lambda db: db.scalars(select(ModelVersion).where(ModelVersion.is_current)).all())
    assert [m.id for m in current] == [sft_id]

    stack.start("worker-2", "worker", RLHF_STALE_AFTER_S="2")
    out, err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, err
    job = read(stack, lambda db: db.get(Job, job_id))
    assert job.status == "succeeded" and job.attempts == 2, job.error
    assert job.result["policy"]["resumed"] is True
    steps = [json.loads(line)["step"] for line in (rdir / "policy" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # the checkpoint's steps, then the rest: one whole run
    policy = read(stack, lambda db: db.get(ModelVersion, job.result["policy_id"]))
    # registered either way; current only when the promotion gate passed (a tiny round's often does not)
    assert policy.parent_id == sft_id and policy.is_current == job.result["promotion"]["promoted"]
    assert not (rdir / "policy.ckpt").exists()


def test_round_start_wait_exits_1_when_the_round_fails_and_the_registry_stays(stack):
    with stack_session(stack) as db:
        sft_id = register_policy(db, stack.root / "no-such-model").id
        label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=factories.make_annotator(db))
        db.commit()
    stack.start("worker", "worker")
    proc = stack.rlhf("round", "start", "--set", "min_pairs=1", "--wait", check=False)
    assert proc.returncode == 1
    job_id = int(proc.stdout.strip())
    assert f"error: round {job_id} failed: trainer reward failed" in proc.stderr
    current = read(stack, lambda db: db.scalars(select(ModelVersion).where(ModelVersion.is_current)).all())
    assert [m.id for m in current] == [sft_id]
    refused = stack.rlhf("round", "start", "--set", "min_pairs=100", check=False)
    assert refused.returncode == 2 and "too little data for a round" in refused.stderr


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_kill_9_server_under_load_loses_no_acknowledged_annotation(stack):
    with stack_session(stack) as db:
        for _ in range(120):
            factories.pairwise_task(db, texts=("first answer", "second answer"))
        tokens = []
        for i in range(4):
            user = create_user(db, username=f"load-{i}", role="annotator", password="password123")
            tokens.append(create_token(db, user=user)[1])
        db.commit()
    stack.start_server()
    acked: dict[str, int] = {}  # idempotency key -> annotation id the server acknowledged
    sent: dict[str, tuple[str, dict]] = {}  # key -> (token, body) of every submit tried
    lock = threading.Lock()
    stop = threading.Event()

    def annotate(token: str) -> None:
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            while not stop.is_set():
                try:
                    offer = client.get("/api/v1/tasks/next")
                    if offer.status_code != 200:
                        return
                    task = offer.json()
                    key = uuid.uuid4().hex
                    body = {
                        "task_id": task["task_id"],
                        "choice": "chosen",
                        "chosen_id": task["responses"][0]["id"],
                        "strength": 2,
                    }
                    with lock:
                        sent[key] = (token, body)
                    answer = client.post("/api/v1/annotations", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    return  # the server is gone
                if answer.status_code in (200, 201):
                    with lock:
                        acked[key] = answer.json()["annotation_id"]

    threads = [threading.Thread(target=annotate, args=(t,), daemon=True) for t in tokens]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 30, timeout=120, interval=0.05, what="30 acknowledged annotations")
    os.kill(stack.procs["serve"].pid, signal.SIGKILL)  # mid-stream: requests in flight are cut
    stop.set()
    for t in threads:
        t.join(timeout=30)
    stack.procs.pop("serve").wait()

    stored = read(stack, lambda db: {a.id: a for a in db.scalars(select(Annotation))})
    assert acked and all(annotation_id in stored for annotation_id in acked.values())
    assert all(stored[acked[key]].idempotency_key == key for key in acked)

    # after a restart, every submit can be retried safely: acknowledged ones replay, the rest are stored once
    stack.start_server()
    for key, (token, body) in sent.items():
        answer = httpx.post(
            f"{stack.url}/api/v1/annotations",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        )
        if key in acked:
            assert answer.status_code == 200 and answer.json()["annotation_id"] == acked[key]
        else:
            assert answer.status_code in (200, 201, 409), answer.text  # 409: its lease was lost meanwhile
    keys = read(stack, lambda db: [a.idempotency_key for a in db.scalars(select(Annotation))])
    assert len(keys) == len(set(keys))
