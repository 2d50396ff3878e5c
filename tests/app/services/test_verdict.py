"""A round's human verdict: queued as a `generate` job, run through the real `trainer generate` on two policies,
stored as blind pairwise tasks on eval prompts; the human win-rate with its interval."""

import pytest
from sqlalchemy import select

from app.jobs import child, queue
from app.models import Generation, Job, Task
from app.services.errors import Conflict
from app.services.rounds.config import RoundConfig
from app.services.rounds.job import queue_round_verdict
from app.services.verdict import VerdictError, human_verdict, request_verdict
from tests.conftest import BACKENDS
from tests.factories import (
    annotate_pairwise,
    build_arithmetic_model,
    build_arithmetic_tokenizer,
    make_annotator,
    make_generation,
    make_job,
    make_model,
    make_prompt,
    make_task,
)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict-models")
    return build_arithmetic_model(root, build_arithmetic_tokenizer(root), kind="policy", name="policy")


def _round(db, *, policy_id, baseline_id, status="succeeded", config=None):
    result = {"policy_id": policy_id, "baseline_policy_id": baseline_id}
    job = make_job(db, kind="round", status=status, result=result)
    job.config = config if config is not None else {"seed": 5, "eval_temperature": 0.8, "eval_max_new_tokens": 6}
    db.commit()
    return job


def _run_job(db, job_id: int) -> Job:
    claimed = queue.claim_next(db, worker_id="w-test")
    db.commit()
    assert claimed is not None and claimed.id == job_id
    assert child.run(job_id, "w-test") == 0
    db.expire_all()
    return db.get(Job, job_id)


def test_verdict_samples_both_policies_on_the_same_eval_prompts_into_blind_pairwise_tasks(db, tiny_policy):
    # two real `trainer generate` runs (a few seconds each): the job is the point here
    old = make_model(db, "sft", stage="sft", path=str(tiny_policy))
    new = make_model(db, "policy-r1", stage="rlhf", path=str(tiny_policy))
    evals = [make_prompt(db, f"question: what is {i} plus 2? answer:", split="eval") for i in range(8)]
    train = make_prompt(db, "question: what is 1 plus 1? answer:")
    db.commit()
    round_job = _round(db, policy_id=new.id, baseline_id=old.id)

    job = request_verdict(db, round_job.id, count=6)
    db.commit()
    assert job.kind == "generate" and job.config["verdict"] == {"round_id": round_job.id, "baseline_id": old.id}
    assert (job.config["split"], job.config["temperature"], job.config["max_new_tokens"], job.config["seed"]) == (
        "eval",
        0.8,
        6,
        5,
    )
    assert db.get(Job, round_job.id).result["verdict_job_id"] == job.id
    with pytest.raises(Conflict, match="being generated"):
        request_verdict(db, round_job.id)

    done = _run_job(db, job.id)
    assert done.status == "succeeded", done.error
    assert done.result["tasks"] == 6 and done.result["generations"] == 12
    tasks = db.scalars(select(Task).order_by(Task.id)).all()
    assert len(tasks) == 6 and all(t.verdict_round_id == round_job.id and t.kind == "pairwise" for t in tasks)
    assert {t.prompt_id for t in tasks} == {p.id for p in evals[:6]}  # the first eval prompts, no train prompt
    assert train.id not in {t.prompt_id for t in tasks}
    orders = []
    for task in tasks:
        gens = [db.get(Generation, p.generation_id) for p in task.positions]
        assert {g.model_version_id for g in gens} == {new.id, old.id}
        # the same settings and the same per-sample seed for both: one model directory gives the same text
        assert len({(g.seed, g.temperature, g.max_new_tokens, g.text) for g in gens}) == 1
        assert gens[0].id < gens[1].id  # stored in the shown order: the id says nothing the position does not
        orders.append(gens[0].model_version_id == new.id)
        assert task.meta["order_seed"]
    assert any(orders) and not all(orders)  # shuffled: the new policy is not always first
    with pytest.raises(Conflict, match="already has 6 verdict tasks"):
        request_verdict(db, round_job.id)


def test_a_verdict_is_refused_without_a_finished_round_a_previous_policy_or_eval_prompts(db):
    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    same = _round(db, policy_id=new.id, baseline_id=new.id)
    with pytest.raises(VerdictError, match="no previous policy"):
        request_verdict(db, same.id)
    no_prompts = _round(db, policy_id=new.id, baseline_id=old.id)
    with pytest.raises(VerdictError, match="no eval-split prompts"):
        request_verdict(db, no_prompts.id)
    running = _round(db, policy_id=None, baseline_id=None, status="running")
    with pytest.raises(Conflict, match="is running"):
        request_verdict(db, running.id)
    assert db.scalar(select(Job.id).where(Job.kind == "generate")) is None


def test_a_round_queues_its_verdict_unless_told_not_to_and_says_why_when_it_cannot(db):
    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    make_prompt(db, split="eval")
    round_job = _round(db, policy_id=new.id, baseline_id=old.id)
    assert queue_round_verdict(db, round_job.id, RoundConfig(verdict_tasks=0), new.id, old.id) == {
        "verdict_job_id": None
    }
    none = queue_round_verdict(db, round_job.id, RoundConfig(), new.id, None)
    assert none["verdict_job_id"] is None and "no previous policy" in none["verdict_note"]
    queued = queue_round_verdict(db, round_job.id, RoundConfig(verdict_tasks=12), new.id, old.id)
    job = db.get(Job, queued["verdict_job_id"])
    assert job.kind == "generate" and job.config["count"] == 12 and job.config["verdict"]["baseline_id"] == old.id


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_human_win_rate_counts_ties_half_with_a_wilson_interval(db):
    old, new = make_model(db, "sft"), make_model(db, "policy-r1", stage="rlhf")
    round_job = _round(db, policy_id=new.id, baseline_id=old.id)
    people = [make_annotator(db) for _ in range(6)]
    outcomes = ["win", "win", "win", "tie", "loss", "both_bad"]
    for user, outcome in zip(people, outcomes):
        prompt = make_prompt(db, split="eval")
        a, b = make_generation(db, prompt, "x", model=old), make_generation(db, prompt, "y", model=new)
        task = make_task(db, prompt, [a, b])
        task.verdict_round_id = round_job.id
        if outcome in ("win", "loss"):
            annotate_pairwise(db, task, user, chosen=b if outcome == "win" else a)
        else:
            annotate_pairwise(db, task, user, chosen=None, choice=outcome)
    # left out: an undone judgement, an excluded annotator's, an AI label, and a task of another round
    prompt = make_prompt(db, split="eval")
    a, b = make_generation(db, prompt, "x", model=old), make_generation(db, prompt, "y", model=new)
    task = make_task(db, prompt, [a, b], overlap=3)
    task.verdict_round_id = round_job.id
    annotate_pairwise(db, task, make_annotator(db), chosen=a).deleted_at = task.created_at
    careless = make_annotator(db)
    careless.labels_excluded = True
    annotate_pairwise(db, task, careless, chosen=a)
    annotate_pairwise(db, task, make_annotator(db, is_ai=True), chosen=a, source="ai")
    other_round = _round(db, policy_id=new.id, baseline_id=old.id)
    other = make_task(db, prompt, [a, b])
    other.verdict_round_id = other_round.id
    annotate_pairwise(db, other, make_annotator(db), chosen=a)
    db.commit()

    verdict = human_verdict(db, round_job)
    assert (verdict["tasks"], verdict["comparisons"], verdict["wins"], verdict["ties"], verdict["losses"]) == (
        7,
        6,
        3,
        2,
        1,
    )
    assert verdict["win_rate"] == pytest.approx(4 / 6)
    assert 0.25 < verdict["low"] < 4 / 6 < verdict["high"] < 0.95
    assert (verdict["policy_id"], verdict["baseline_id"]) == (new.id, old.id)
    empty = human_verdict(db, _round(db, policy_id=new.id, baseline_id=old.id))
    assert empty["comparisons"] == 0 and empty["win_rate"] is None and empty["low"] is None
