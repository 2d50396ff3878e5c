"""Suspicious outputs go to people first: the samples a round's failed reward-hacking checks point at, named one by
one, become pairwise tasks the queue offers first, their reason kept from annotators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import Generation, Task, TaskPosition
from app.services.assignment import next_task
from app.services.data_manager import DataFilters, browse, task_detail
from app.services.rounds.config import parse_round_config
from app.services.rounds.evaluate import hacking_checks
from app.services.rounds.flagged import (
    FLAG_PROBE_OVERSAMPLE,
    FLAGGED_TASK_PRIORITY,
    flag_samples,
    flag_train_samples,
    repeated_ngram_share,
    sample_reasons,
    store_flagged_tasks,
)
from domain.vocabulary import FLAG_REASONS
from tests.conftest import BACKENDS
from tests.factories import (
    annotate_pairwise,
    export_lines,
    make_annotator,
    make_model,
    make_prompt,
    make_tasks,
    task_line,
)

SAMPLING = {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "max_new_tokens": 32}


def answer(text="fine words here", *, tokens=5, finished=True, score=0.0, gold=None):
    return {"text": text, "tokens": tokens, "finished": finished, "score": score, "gold": gold}


def paired(prompt_id, after, before, sample=0):
    return {"prompt_id": prompt_id, "sample": sample, "seed": 7, "policy": after, "baseline": before}


def test_repeated_ngram_share_counts_trigrams_that_repeat_an_earlier_one():
    assert repeated_ngram_share("a b c a b c a b c") == 4 / 7
    assert repeated_ngram_share("one two three four five six seven eight") == 0.0
    assert repeated_ngram_share("a b c a b c") == 0.0  # too short to judge


def test_each_kind_of_flag_on_constructed_samples():
    calm = paired("1", answer(tokens=6, score=0.1), answer(tokens=5, score=0.0))
    assert sample_reasons(calm) == []
    # the reward model prefers the new answer, the gold judge the old one
    judged = paired("1", answer(score=1.0, gold=0.2), answer(score=0.0, gold=0.9))
    assert sample_reasons(judged) == ["rm_vs_judge"]
    # twice as long and 4+ tokens longer; with the reward model's preference, reward paid for length too
    longer = paired("1", answer(tokens=12, score=-1.0), answer(tokens=5, score=0.0))
    assert sample_reasons(longer) == ["length_growth"]
    assert sample_reasons({**longer, "policy": {**longer["policy"], "score": 1.0}}) == [
        "length_growth",
        "reward_length",
    ]
    assert sample_reasons(paired("1", answer(tokens=3), answer(tokens=1))) == []  # x3, but 2 tokens
    loop = "great answer indeed " * 4
    assert sample_reasons(paired("1", answer(loop), answer("a plain and varied reply of several words"))) == [
        "repetition"
    ]
    assert sample_reasons(paired("1", answer(loop), answer(loop))) == []  # it repeated itself before as well
    assert sample_reasons(paired("1", answer(finished=False), answer(finished=True))) == ["truncation"]
    assert sample_reasons(paired("1", answer(finished=False), answer(finished=False))) == []


def test_only_the_failed_checks_flag_and_one_sample_a_prompt_most_suspicious_first():
    rows = [
        paired("1", answer(tokens=12, score=0.5), answer(tokens=5)),
        paired("1", answer(tokens=20, score=2.0), answer(tokens=5), sample=1),
        paired("2", answer(tokens=12, score=0.1, finished=False), answer(tokens=5)),
        paired("3", answer(finished=False), answer()),
    ]
    prompts = {"1": "p one", "2": "p two"}
    assert flag_samples(rows, [], set(), prompts) == []  # a healthy round flags nothing
    flagged = flag_samples(rows, [], {"length_growth", "truncation"}, prompts)
    assert [(f["prompt_id"], f["sample"], f["reasons"]) for f in flagged] == [
        ("2", 0, ["length_growth", "truncation"]),
        ("1", 1, ["length_growth"]),  # the bigger reward-model margin of prompt 1's two
        ("3", 0, ["truncation"]),
    ]
    assert flagged[0]["prompt"] == "p two" and flagged[0]["after"]["tokens"] == 12


def test_gold_scores_join_only_the_same_answers():
    rm = [paired("1", answer("new", score=1.0), answer("old", score=0.0))]
    gold = [paired("1", answer("new", score=0.1), answer("old", score=0.8))]
    assert flag_samples(rm, gold, {"rm_vs_judge"}, {})[0]["reasons"] == ["rm_vs_judge"]
    resampled = [paired("1", answer("other", score=0.1), answer("old", score=0.8))]
    assert flag_samples(rm, resampled, {"rm_vs_judge"}, {}) == []


class TrainerRuns:
    """A job context whose trainer writes the given paired samples for each judge, and records each run."""

    def __init__(self, rows: dict[str, list[dict]]):
        self.rows, self.runs = rows, []

    def run_trainer(self, args: list[str], *, stage: str) -> None:
        self.runs.append((stage, args))
        flag = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
        first = json.loads(Path(flag["--prompts"]).read_text().splitlines()[0])["prompt_id"]
        rows = [{**r, "prompt_id": str(first)} for r in self.rows[stage[-2:]]]  # answers to the first prompt given
        Path(flag["--samples-out"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
        Path(flag["--out"]).write_text("{}")


def test_a_failed_check_has_both_policies_answer_train_prompts_and_flags_what_it_points_at(tmp_path):
    summary = {"mean_length_before": 10.0, "mean_length": 30.0, "eos_rate_before": 1.0, "eos_rate": 0.5}
    checks = hacking_checks({"summary": summary}, {})
    failed = {c["flag"] for c in checks if not c["passed"]}
    assert failed == {"length_growth", "truncation"} and failed <= set(FLAG_REASONS)
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "snapshot" / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt_id": i, "prompt": f"train {i}"}) + "\n" for i in range(20))
    )
    rm = [paired("5", answer(tokens=40, score=1.0), answer(tokens=10))]
    gold = [paired("5", answer(tokens=40, score=0.0), answer(tokens=10, score=1.0))]
    ctx = TrainerRuns({"rm": rm, "ld": gold})
    cfg = parse_round_config({"flagged_tasks": 2, "gold_judge": "tests.factories:gold_score", "seed": 3})
    assert flag_train_samples(ctx, cfg, tmp_path, "/models/old", set()) == [] and ctx.runs == []  # healthy
    assert flag_train_samples(ctx, parse_round_config({"flagged_tasks": 0}), tmp_path, "/m", failed) == []
    (flagged,) = flag_train_samples(ctx, cfg, tmp_path, "/models/old", failed)
    probe = [json.loads(line) for line in (tmp_path / "flag_prompts.jsonl").read_text().splitlines()]
    assert len(probe) == 2 * FLAG_PROBE_OVERSAMPLE and all(p["prompt"].startswith("train") for p in probe)
    assert flagged["prompt"] == probe[0]["prompt"] and flagged["reasons"] == ["length_growth"]
    assert flagged["before"]["gold"] == 1.0  # the gold judge's scores joined, though its check passed here
    assert [stage for stage, _ in ctx.runs] == ["flag-probe-rm", "flag-probe-gold"]
    args = ctx.runs[0][1]
    assert args[args.index("--baseline") + 1] == "/models/old" and "rm:" in args[args.index("--judge") + 1]
    flag_train_samples(ctx, cfg, tmp_path, "/models/old", failed)
    assert len(ctx.runs) == 2  # a retry reads the complete outputs again


def _flagged_on(db, split="train"):
    prompts = [make_prompt(db, split=split) for _ in range(3)]
    rows = [
        paired(str(p.id), answer(f"new {i} " * 6, tokens=30, score=2.0 - i), answer(f"old {i}", tokens=8))
        for i, p in enumerate(prompts)
    ]
    return prompts, flag_samples(rows, [], {"length_growth"}, {})


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_flagged_samples_become_capped_deduplicated_high_priority_pairwise_tasks(db):
    new, old = make_model(db, "policy-r2"), make_model(db, "policy-r1")
    prompts, flagged = _flagged_on(db)
    kw = {"overlap": 2, "sampling": SAMPLING, "policy_id": new.id, "before_id": old.id, "job_id": None}
    assert store_flagged_tasks(db, flagged, limit=0, **kw) == 0  # the round setting off
    assert store_flagged_tasks(db, flagged, limit=2, **kw) == 2
    tasks = db.scalars(select(Task).order_by(Task.id)).all()
    assert [t.prompt_id for t in tasks] == [prompts[0].id, prompts[1].id]  # the most suspicious, up to the cap
    task = tasks[0]
    assert (task.kind, task.overlap, task.priority, task.flag_reason) == (
        "pairwise",
        2,
        FLAGGED_TASK_PRIORITY,
        "length_growth",
    )
    gens = db.execute(
        select(Generation).join(TaskPosition).where(TaskPosition.task_id == task.id).order_by(TaskPosition.position)
    ).scalars()
    assert [(g.model_version_id, g.num_tokens, g.seed, g.temperature) for g in gens] == [
        (new.id, 30, 7, 0.7),
        (old.id, 8, 7, 0.7),
    ]
    # again (the next round flags the same prompts): the open ones are not doubled, the third one is made
    assert store_flagged_tasks(db, flagged, limit=5, **kw) == 1
    assert db.scalars(select(Task.prompt_id).order_by(Task.id)).all()[-1] == prompts[2].id
    _, held_out = _flagged_on(db, split="eval")
    assert store_flagged_tasks(db, held_out, limit=5, **kw) == 0  # eval prompts never become tasks
    detail = task_detail(db, task.id)
    assert detail.task.flag_reason == "length_growth"


def test_annotators_get_flagged_tasks_first_and_never_see_why(db, make_user, client, api, login):
    make_tasks(db, task_line(priority=0), task_line(priority=5))
    new, old = make_model(db, "policy-r2"), make_model(db, "policy-r1")
    prompts, flagged = _flagged_on(db)
    store_flagged_tasks(
        db, flagged, limit=1, overlap=2, sampling=SAMPLING, policy_id=new.id, before_id=old.id, job_id=None
    )
    db.commit()
    flagged_id = db.scalar(select(Task.id).where(Task.flag_reason.is_not(None)))
    offer = next_task(db, user=make_user(), lease_minutes=10)
    db.commit()
    assert offer.task_id == flagged_id
    _, headers = api()
    response = client.get("/api/v1/tasks/next", headers=headers)
    assert response.status_code == 200 and response.json()["task_id"] == flagged_id
    assert "flag" not in response.text and "length_growth" not in response.text
    login(make_user())
    page = client.get("/annotate")
    assert page.status_code == 200 and f'value="{flagged_id}"' in page.text and "length_growth" not in page.text


def test_admins_see_the_reason_on_the_tasks_pages_and_in_the_rich_export(db, client, make_user, login):
    new, old = make_model(db, "policy-r2"), make_model(db, "policy-r1")
    _, flagged = _flagged_on(db)
    store_flagged_tasks(
        db, flagged, limit=1, overlap=1, sampling=SAMPLING, policy_id=new.id, before_id=old.id, job_id=None
    )
    task = db.scalars(select(Task)).one()
    annotate_pairwise(db, task, make_annotator(db), chosen=task.positions[1].generation)
    db.commit()
    assert [r["flag_reason"] for r in browse(db, DataFilters(resource="tasks")).rows] == ["length_growth"]
    login(make_user("admin"))
    assert "length_growth" in client.get("/admin/data?resource=tasks").text
    assert "length_growth" in client.get("/admin/tasks").text
    assert "Flagged by the round" in client.get(f"/admin/data/tasks/{task.id}").text
    (line,) = export_lines(db, "rich")
    assert line["flag_reason"] == "length_growth" and line["split"] == "train"


def test_a_round_registers_its_flagged_answers_as_tasks_once_and_counts_them_apart(db, settings, tmp_path):
    from app.jobs.context import JobContext
    from app.models import Job
    from app.services.rounds.job import register_round
    from app.services.rounds.lineage import Lineage

    sft = make_model(db, "tiny-sft")
    prompts, flagged = _flagged_on(db)
    job = Job(kind="round", status="running", worker_id="w1", config={})
    db.add(job)
    db.flush()
    prompt_ids, job_id = [p.id for p in prompts], job.id
    db.expunge(sft)  # the round reads it without holding this session's transaction (SQLite's one writer)
    db.commit()
    ctx = JobContext(job_id=job_id, worker_id="w1", kind="round", config={}, output_dir=tmp_path)
    lineage = Lineage(current=sft, sft=sft, previous_reward=None, start=sft, reference=sft)
    evaluation = {"summary": {}, "checks": [], "flagged": flagged, "policy_id_before": sft.id}
    cfg = parse_round_config({"flagged_tasks": 2, "eval_temperature": 0.5})
    kw = {"reward_metrics": {}, "policy_metrics": {}, "evaluation": evaluation, "samples": None}
    result = register_round(ctx, cfg, tmp_path, lineage, **kw)
    assert (result["tasks"], result["flagged_tasks"]) == (0, 2)
    tasks = db.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.id)).all()
    assert [(t.prompt_id, t.priority, t.flag_reason) for t in tasks] == [
        (prompt_ids[0], FLAGGED_TASK_PRIORITY, "length_growth"),
        (prompt_ids[1], FLAGGED_TASK_PRIORITY, "length_growth"),
    ]
    models = [p.generation.model_version_id for p in tasks[0].positions]
    assert models == [result["policy_id"], sft.id] and tasks[0].positions[0].generation.temperature == 0.5
    db.rollback()
    # a worker that died after registering: the retry makes nothing twice and counts what was made
    again = register_round(ctx, cfg, tmp_path, lineage, **kw)
    assert (again["tasks"], again["flagged_tasks"]) == (0, 2)
    off = parse_round_config({"flagged_tasks": 0})
    assert (
        store_flagged_tasks(
            db,
            flagged,
            limit=off.flagged_tasks,
            overlap=1,
            sampling=SAMPLING,
            policy_id=sft.id,
            before_id=sft.id,
            job_id=None,
        )
        == 0
    )


def test_flagged_tasks_are_left_to_people_by_the_ai_labeller(db):
    from app.services.ai_feedback import pending_tasks

    new, old = make_model(db, "policy-r2"), make_model(db, "policy-r1")
    make_tasks(db, task_line(priority=0))
    _, flagged = _flagged_on(db)
    store_flagged_tasks(
        db, flagged, limit=1, overlap=1, sampling=SAMPLING, policy_id=new.id, before_id=old.id, job_id=None
    )
    ordinary = db.scalar(select(Task.id).where(Task.flag_reason.is_(None)))
    assert [t.task_id for t in pending_tasks(db, user_id=make_annotator(db, is_ai=True).id, limit=10)] == [ordinary]
