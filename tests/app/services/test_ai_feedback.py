"""label-ai: pending tasks labelled by a reward model or a causal LM prompted to choose, stored as source `ai`
under the judge's own identity, never counting toward overlap. The job function runs in-process here (the worker
would run it in its child process) on the trainer's tiny LM and a tiny reward model trained from it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.jobs.context import JobContext
from app.models import Annotation, Job, ModelVersion, Task, User
from app.services.ai_feedback import (
    LabelAIError,
    PendingTask,
    lm_choice_scorer,
    run_label_ai,
    start_label_ai,
)
from app.services.exports import ExportFilters, iter_export
from app.services.rounds import RoundConfig, preference_pairs
from tests import factories
from tests.factories import label_preferences, make_prompts, register_policy


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, tiny_lm_dir):
    """A reward model trained in-process for a few seconds to prefer the right sum."""
    from trainer.reward_model import RewardConfig, train_reward

    work = tmp_path_factory.mktemp("rm")
    lines = []
    for a in range(12):
        for b in range(0, 12, 3):
            lines.append(
                {
                    "prompt": f"question: what is {a} plus {b}? answer:",
                    "chosen": f" {a + b}",
                    "rejected": f" {a + b + 4}",
                    "margin": 0.0,
                    "annotation_id": len(lines),
                }
            )
    data = work / "trl.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return train_reward(
        RewardConfig(
            model=str(tiny_lm_dir),
            data=str(data),
            out=str(work / "rm"),
            epochs=4,
            batch_size=8,
            lr=2e-3,
            device="cpu",
            seed=0,
        )
    )


def run_in_process(db, job: Job) -> dict:
    """Run the job's function as the worker's child would, holding the job as worker 'test'."""
    job.status, job.worker_id, job.attempts = "running", "test", 1
    db.commit()
    ctx = JobContext(job_id=job.id, worker_id="test", kind=job.kind, config=dict(job.config), output_dir=None)
    return run_label_ai(ctx)


def pending_world(db):
    human = factories.make_annotator(db)
    prompts = make_prompts(db, train=8, eval=2)
    # four open pairwise tasks, one open ranking, one completed task and one eval task (never labelled by AI)
    open_tasks = [
        t
        for t in (
            factories.pairwise_task(
                db, prompt_text=f"question: what is {a} plus 2? answer:", texts=(f" {a + 2}", f" {a + 9}")
            )[0]
            for a in range(4)
        )
    ]
    ranking, _ = factories.pairwise_task(
        db, prompt_text="question: what is 5 plus 5? answer:", texts=(" 10", " 13", " 17")
    )
    done = label_preferences(db, prompts["train"][:1], annotator=human)[0]
    held_out = prompts["eval"][0]
    factories.make_task(db, held_out, [factories.make_generation(db, held_out, t) for t in (" 1", " 2")])
    db.commit()
    return open_tasks + [ranking], db.get(Task, done.task_id)


def test_reward_model_judge_labels_pending_tasks_as_ai(db, settings, tiny_rm_dir):
    tasks, completed = pending_world(db)
    rm = ModelVersion(name="rm", kind="reward", stage="rlhf", path=str(tiny_rm_dir), is_current=True, metrics={})
    db.add(rm)
    db.commit()
    job = start_label_ai(db, config={})
    db.commit()

    result = run_in_process(db, job)

    db.expire_all()
    assert result["labelled"] == 5 and result["judge"] == "reward_model"
    judge_user = db.scalars(select(User).where(User.username == result["annotator"])).one()
    assert judge_user.is_ai and judge_user.password_hash is None
    labels = db.scalars(select(Annotation).where(Annotation.source == "ai")).all()
    assert sorted(a.task_id for a in labels) == sorted(t.id for t in tasks)
    for a in labels:
        assert a.user_id == judge_user.id and a.meta["judge"] == "reward_model"
        scores = {int(g): s for g, s in a.meta["scores"].items()}
        if a.kind == "pairwise":
            assert scores[a.chosen_id] == max(scores.values()) and a.strength in (1, 2, 3)
        else:
            assert [scores[g] for g in a.ranking] == sorted(scores.values(), reverse=True)
        task = db.get(Task, a.task_id)
        assert task.done_count == 0 and not task.completed  # AI labels never count toward overlap
    # the reward model learned "the right sum": it picks it on most open pairwise tasks
    right = sum(
        a.chosen_id == db.get(Task, a.task_id).positions[0].generation_id  # position 0: the right sum
        for a in labels
        if a.kind == "pairwise"
    )
    assert right >= 3

    # exports and rounds see them by source
    ai_rows = [r for batch in iter_export(db, fmt="trl", filters=ExportFilters(source="ai")) for r in batch]
    human_rows = [r for batch in iter_export(db, fmt="trl", filters=ExportFilters(source="human")) for r in batch]
    assert {r["annotation_id"] for r in ai_rows} == {a.id for a in labels}
    assert all(r["annotation_id"] not in {a.id for a in labels} for r in human_rows)
    assert preference_pairs(db, config=RoundConfig(source="human")) == 1
    assert preference_pairs(db, config=RoundConfig(source="ai")) == 4 + 3

    # a second run labels nothing twice
    again = start_label_ai(db, config={})
    db.commit()
    assert run_in_process(db, again)["labelled"] == 0
    assert completed.done_count == 1


def test_lm_judge_is_position_debiased_and_needs_a_model(db, settings, tiny_lm_dir):
    scorer = lm_choice_scorer(str(tiny_lm_dir))
    prompt = "question: what is 3 plus 4? answer:"
    ab = PendingTask(1, "pairwise", prompt, [10, 11], [" 7", " 12"])
    ba = PendingTask(2, "pairwise", prompt, [11, 10], [" 12", " 7"])
    abc = PendingTask(3, "ranking", prompt, [10, 11, 12], [" 7", " 12", " 9"])
    s_ab, s_ba, s_abc = scorer([ab, ba, abc])
    # shown order and reversed order are both asked: swapping the responses swaps the scores exactly
    assert s_ab == pytest.approx(list(reversed(s_ba)), abs=1e-5)
    assert len(s_abc) == 3 and all(s < 0 for s in s_abc)

    with pytest.raises(LabelAIError, match="no current policy model"):
        start_label_ai(db, config={"judge": "lm"})
    with pytest.raises(LabelAIError, match="no current reward model"):
        start_label_ai(db, config={})
    with pytest.raises(LabelAIError, match="judge"):
        start_label_ai(db, config={"judge": "oracle"})
    policy = register_policy(db, tiny_lm_dir)
    tasks, _ = pending_world(db)
    job = start_label_ai(db, config={"judge": "lm", "limit": 2, "annotator": "ai-tiny"})
    db.commit()
    result = run_in_process(db, job)
    calibration = result.pop("calibration")  # the one human-labelled task, scored first and not stored
    assert calibration["tasks"] == 1 and [k["n"] for k in calibration["kinds"]] == [1, 0]
    assert result == {"labelled": 2, "annotator": "ai-tiny", "judge": "lm", "model": f"{policy.name}#{policy.id}"}
    labels = db.scalars(select(Annotation).where(Annotation.source == "ai")).all()
    assert [a.task_id for a in labels] == [t.id for t in tasks[:2]]  # oldest first, up to the limit


def test_label_ai_api_and_form_are_admin_only_and_refuse_clearly(client, api, login, make_user, db):
    _, annotator = api("annotator")
    _, admin = api("admin")
    assert client.post("/api/v1/label-ai", json={}, headers=annotator).status_code == 403
    refused = client.post("/api/v1/label-ai", json={}, headers=admin)
    assert refused.status_code == 422 and "no current reward model" in refused.json()["detail"]
    db.add(ModelVersion(name="rm", kind="reward", stage="rlhf", path="/models/rm", is_current=True, metrics={}))
    db.commit()
    started = client.post("/api/v1/label-ai", json={"limit": 5}, headers=admin)
    assert started.status_code == 201 and started.json()["kind"] == "label-ai"
    assert started.json()["config"]["limit"] == 5
    csrf = login(make_user("admin"))
    form = client.post("/admin/rounds/label-ai", data={"csrf_token": csrf, "judge": "lm"})
    assert form.status_code == 422 and "no current policy model" in form.text
    ok = client.post(
        "/admin/rounds/label-ai",
        data={"csrf_token": csrf, "judge": "reward_model", "limit": "3"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"].startswith("/admin/jobs/")
