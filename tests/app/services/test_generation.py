"""Generation requests -> `generate` job -> real `python -m trainer generate` -> generations and tasks."""

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.jobs import child, queue
from app.models import Generation, Job, Prompt, Task, TaskPosition
from app.services.generation import GenerationError, GenerationRequest, parse_generation_request, request_generation
from app.services.models_registry import register_model
from tests.conftest import BACKENDS
from tests.factories import build_arithmetic_model, build_arithmetic_tokenizer, make_model, make_prompt


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-models")
    return build_arithmetic_model(root, build_arithmetic_tokenizer(root), kind="policy", name="policy")


def _run_job(db, job_id: int) -> Job:
    """Claim and run the job as the worker's child process does (same code path, in this process)."""
    claimed = queue.claim_next(db, worker_id="w-test")
    db.commit()
    assert claimed is not None and claimed.id == job_id
    assert child.run(job_id, "w-test") == 0
    db.expire_all()
    return db.get(Job, job_id)


def _setup(db, tiny_policy):
    model = register_model(db, path=tiny_policy, name="tiny", kind="policy", stage="sft", check=False)
    prompts = [
        make_prompt(db, f"question: what is {i} plus 1? answer:", tags=["math"] if i < 3 else []) for i in range(4)
    ]
    held = make_prompt(db, "question: what is 9 plus 9? answer:", split="eval", tags=["math"])
    db.commit()
    return model, prompts, held


def test_generate_job_stores_sampling_parameters_and_makes_tasks_not_for_eval(db, tiny_policy):
    model, prompts, held = _setup(db, tiny_policy)
    req = GenerationRequest(
        split="all",
        tag="math",
        count=10,
        num_samples=4,
        temperature=0.9,
        top_k=20,
        top_p=0.95,
        max_new_tokens=8,
        seed=123,
        task_kind="pairwise",
        overlap=2,
    )
    job = request_generation(db, request=req)
    db.commit()
    assert job.kind == "generate" and job.config["model_id"] == model.id
    done = _run_job(db, job.id)
    assert done.status == "succeeded", done.error
    assert done.result["prompts"] == 4 and done.result["generations"] == 16 and done.result["tasks"] == 6
    assert done.result["skipped_too_long"] == 0
    gens = db.scalars(select(Generation).order_by(Generation.id)).all()
    assert {g.prompt_id for g in gens} == {prompts[0].id, prompts[1].id, prompts[2].id, held.id}
    g = gens[0]
    assert (g.temperature, g.top_k, g.top_p, g.max_new_tokens, g.model_version_id, g.job_id) == (
        0.9,
        20,
        0.95,
        8,
        model.id,
        job.id,
    )
    assert g.seed is not None and len({x.seed for x in gens}) == 16  # each sample's own derived seed
    assert g.finish_reason in ("eos", "length") and g.num_tokens >= 1
    tasks = db.scalars(select(Task).order_by(Task.id)).all()
    assert all(t.kind == "pairwise" and t.overlap == 2 and t.job_id == job.id for t in tasks)
    assert held.id not in {t.prompt_id for t in tasks}  # eval prompts are evaluated, never annotated
    positions = db.scalars(
        select(TaskPosition).where(TaskPosition.task_id == tasks[0].id).order_by(TaskPosition.position)
    ).all()
    assert len(positions) == 2 and all(p.generation_id in {x.id for x in gens} for p in positions)


def test_same_request_and_seed_give_same_texts(db, tiny_policy):
    _setup(db, tiny_policy)
    texts = []
    for _ in range(2):
        job = request_generation(
            db, request=GenerationRequest(count=2, num_samples=2, max_new_tokens=6, seed=7, task_kind="ranking")
        )
        db.commit()
        assert _run_job(db, job.id).status == "succeeded"
        texts.append(
            [
                (g.prompt_id, g.text, g.seed)
                for g in db.scalars(select(Generation).where(Generation.job_id == job.id).order_by(Generation.id))
            ]
        )
    assert texts[0] == texts[1] and len(texts[0]) == 4
    assert db.scalar(select(func.count()).select_from(Task).where(Task.kind == "ranking")) == 4


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"num_samples": 9}, "2..8"),
        ({"num_samples": 3}, "even"),
        ({"task_kind": "essay"}, "task kind"),
        ({"top_p": 0}, "top-p"),
        ({"temperature": -1}, "temperature"),
        ({"split": "dev"}, "split"),
        ({"model_id": 999}, "no policy model"),
        ({"tag": "nothing-has-this"}, "no prompts match"),
    ],
)
def test_bad_requests_are_refused_and_enqueue_nothing(db, tiny_policy, change, needle):
    _setup(db, tiny_policy)
    with pytest.raises(GenerationError, match=needle):  # refused when built or when enqueued
        request_generation(db, request=parse_generation_request(change))
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_no_current_policy_is_refused(db):
    make_prompt(db, "x")
    with pytest.raises(GenerationError, match="no current policy"):
        request_generation(db, request=GenerationRequest())


def test_cli_enqueues_with_defaults_and_refuses_bad_k(settings, db, tiny_policy):
    from app.cli import app as cli

    _setup(db, tiny_policy)
    out = CliRunner().invoke(cli, ["generate", "--count", "2", "-k", "4", "--seed", "5", "--task-kind", "ranking"])
    assert out.exit_code == 0, out.output
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["config"]["num_samples"] == 4 and line["config"]["temperature"] == 1.0 and line["config"]["seed"] == 5
    bad = CliRunner().invoke(cli, ["generate", "-k", "1"])
    assert bad.exit_code == 2 and "2..8" in bad.stderr


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_storing_a_large_request_is_bulk(db, tmp_path):
    """5000 prompts x K=4 -> 20000 generations and 10000 pairwise tasks in one transaction, quickly."""
    import time

    from app.services.generation import store_generations
    from app.services.prompt_import import import_prompts

    import_prompts(
        db,
        data="".join(
            json.dumps({"prompt": f"p{i}", "split": "eval" if i % 10 == 0 else "train"}) + "\n" for i in range(5000)
        ),
        name="p.jsonl",
    )
    model = make_model(db, "bulk")
    db.commit()
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as fh:
        for pid in db.scalars(select(Prompt.id)):
            for k in range(4):
                fh.write(
                    json.dumps(
                        {
                            "prompt_id": pid,
                            "sample": k,
                            "text": f"r{pid}-{k}",
                            "finish_reason": "eos",
                            "num_tokens": 3,
                            "logprob": -1.5,
                            "temperature": 1.0,
                            "top_k": 0,
                            "top_p": 1.0,
                            "max_new_tokens": 8,
                            "seed": pid * 10 + k,
                        }
                    )
                    + "\n"
                )
    start = time.perf_counter()
    counts = store_generations(
        db,
        samples_path=samples,
        request={"task_kind": "pairwise", "overlap": 1, "seed": 1},
        model_id=model.id,
        job_id=None,
    )
    db.commit()
    assert counts == {"prompts": 5000, "generations": 20000, "tasks": 9000}  # eval prompts: no tasks
    assert time.perf_counter() - start < 30
    task = db.scalar(select(Task).order_by(Task.id).limit(1))
    texts = [db.get(Generation, p.generation_id).text for p in task.positions]
    assert len(texts) == 2 and texts[0].endswith("-0") and texts[1].endswith("-1")


@pytest.fixture(scope="module")
def tiny_reward(tmp_path_factory, tiny_policy):
    root = tmp_path_factory.mktemp("gen-rm")
    return build_arithmetic_model(root, tiny_policy, kind="reward", name="reward")


def test_selection_picks_from_more_candidates_and_stores_the_choice_and_score(db, tiny_policy, tiny_reward):
    """The real job and trainer: 4 candidate prompts x 4 candidates, 2 prompts kept (one drawn at random), and
    the choice and score reach the task and the `rich` export."""
    from app.services.exports import iter_export

    _setup(db, tiny_policy)
    register_model(db, path=tiny_reward, name="rm", kind="reward", stage="rlhf", check=False)
    db.commit()
    req = GenerationRequest(
        count=2, num_samples=2, max_new_tokens=6, temperature=1.5, select="uncertainty", oversample=2, random_share=0.5
    )
    job = request_generation(db, request=req)
    db.commit()
    done = _run_job(db, job.id)
    assert done.status == "succeeded", done.error
    assert done.result["tasks"] == 2 and done.result["generations"] == 4 and done.result["skipped_too_long"] == 0
    tasks = db.scalars(select(Task).order_by(Task.id)).all()
    assert sorted(t.selection for t in tasks) == ["random", "uncertainty"]  # the random share: 50% of 2
    assert all(0.0 <= t.selection_score <= 1.0 for t in tasks)
    picked = next(t for t in tasks if t.selection == "uncertainty")
    seeds = [db.get(Generation, p.generation_id).seed for p in picked.positions]
    assert len(set(seeds)) == 2  # two of the prompt's four candidates, each with its own seed
    from tests.factories import annotate_pairwise, make_annotator

    annotate_pairwise(db, picked, make_annotator(db), chosen=picked.positions[0].generation)
    db.commit()
    (line,) = [x for batch in iter_export(db, fmt="rich") for x in batch]
    assert (line["selection"], line["selection_score"]) == ("uncertainty", picked.selection_score)


def test_selection_flags_reach_the_trainer_and_the_cli(settings, db, tiny_policy):
    from app.cli import app as cli
    from app.services.generation import trainer_args

    _setup(db, tiny_policy)
    with pytest.raises(GenerationError, match="only train-split prompts"):
        parse_generation_request({"select": "uncertainty", "split": "eval"})
    rm = make_model(db, "rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True)
    db.commit()
    out = CliRunner().invoke(
        cli, ["generate", "--count", "3", "--select", "uncertainty", "--oversample", "3", "--random-share", "0.1"]
    )
    assert out.exit_code == 0, out.output
    config = json.loads(out.stdout.strip().splitlines()[-1])["config"]
    assert (config["select"], config["oversample"], config["random_share"]) == ("uncertainty", 3, 0.1)
    assert config["reward_model_ids"] == [rm.id]
    args = trainer_args(model_path="/p", prompts="in", out="out", request=config, reward_models=["/models/rm"])
    flags = " ".join(args[args.index("--select") :])
    assert flags == (
        "--select uncertainty --reward-model /models/rm --oversample 3 --group-size 2 --keep-prompts 3 "
        "--random-share 0.1"
    )
    assert "--select" not in trainer_args(
        model_path="/p", prompts="in", out="out", request=GenerationRequest().model_dump()
    )
    bad = CliRunner().invoke(cli, ["generate", "--select", "disagreement"])
    assert bad.exit_code == 2 and "at least 2 needed" in bad.stderr
