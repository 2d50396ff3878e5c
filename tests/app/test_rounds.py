"""Training rounds: start checks, the one-active-round rule in the database, and whole rounds run by a worker on
the trainer's tiny LM (snapshot -> reward -> PPO/DPO -> evaluate -> register -> next tasks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.jobs.worker import Worker
from app.models import Job, JobMetric, ModelVersion, Task
from app.services.jobs import enqueue_job
from app.services.rounds import RoundError, parse_round_config, start_round
from app.services.snapshots import read_manifest, snapshot_dir, verify_snapshot
from tests.app import factories
from tests.app.rounds_support import label_preferences, make_prompts, register_policy, tiny_round_config
from tests.conftest import BACKENDS
from tests.trainer.conftest import tiny_corpus_file, tiny_lm_dir, tiny_tokenizer_dir  # noqa: F401 (fixtures)


def run_worker_once(settings) -> None:
    Worker(settings=settings, poll_s=0.05, log=lambda message: None).run(once=True)


def labelled_world(db, policy_path, *, train: int = 24, eval: int = 6, noise_every: int = 0):
    human = factories.make_annotator(db)
    policy = register_policy(db, policy_path)
    prompts = make_prompts(db, train=train, eval=eval)
    label_preferences(db, prompts["train"], annotator=human, flip_every=noise_every)
    db.commit()
    return policy, prompts


# ---- starting a round -------------------------------------------------------------------------------------------


def test_config_errors_name_the_field():
    with pytest.raises(RoundError, match="algo"):
        parse_round_config({"algo": "sgd"})
    with pytest.raises(RoundError, match="unknown option --no-such-flag"):
        parse_round_config({"ppo": {"no_such_flag": 1}})
    with pytest.raises(RoundError, match="set by the round itself"):
        parse_round_config({"reward": {"model": "/elsewhere"}})
    with pytest.raises(RoundError, match="gold_judge"):
        parse_round_config({"gold_judge": "no-colon"})
    assert parse_round_config({"ppo": {"kl_coef": 0.2}}).stage_flags("ppo")["kl_coef"] == 0.2


def test_round_needs_a_current_policy_and_enough_data(db):
    with pytest.raises(RoundError, match="no current policy"):
        start_round(db, config={})
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=5, eval=1)["train"], annotator=human)
    db.commit()
    with pytest.raises(RoundError, match=r"too little data for a round: 5 preference pair\(s\).*at least 16"):
        start_round(db, config={})
    with pytest.raises(RoundError, match="0 preference pair"):
        start_round(db, config={"source": "ai", "min_pairs": 1})
    assert start_round(db, config={"min_pairs": 5}).status == "queued"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_the_database_allows_one_active_round(db):
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    first = start_round(db, config={"min_pairs": 1})
    db.commit()
    with pytest.raises(RoundError, match=f"round {first.id} is already queued"):
        start_round(db, config={"min_pairs": 1})
    # Whatever a caller checks, the partial unique index refuses a second queued/running round.
    with pytest.raises(IntegrityError):
        enqueue_job(db, kind="round", config={})
        db.flush()
    db.rollback()
    first = db.get(Job, first.id)
    first.status = "failed"
    db.commit()
    assert start_round(db, config={"min_pairs": 1}).id != first.id


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_race_past_the_check_is_refused_by_the_index_with_a_clear_message(db, monkeypatch):
    """Two starts that both pass the "no active round" check (a race): the database refuses the second."""
    human = factories.make_annotator(db)
    register_policy(db, "/models/sft")
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    monkeypatch.setattr("app.services.rounds.active_round", lambda session: None)
    first = start_round(db, config={"min_pairs": 1})
    db.commit()
    with pytest.raises(RoundError, match="another round was started at the same moment"):
        start_round(db, config={"min_pairs": 1})
    db.rollback()
    first = db.get(Job, first.id)
    first.status = "failed"
    db.commit()
    assert start_round(db, config={"min_pairs": 1}).id != first.id


# ---- whole rounds on a worker -------------------------------------------------------------------------------


def test_ppo_round_registers_a_new_current_policy_and_makes_next_tasks(db, settings, tiny_lm_dir):
    sft, prompts = labelled_world(db, tiny_lm_dir)
    job = start_round(
        db, config=tiny_round_config(gold_judge="tests.app.rounds_support:gold_score", report_samples=2, eval_samples=2)
    )
    db.commit()

    run_worker_once(settings)

    db.expire_all()
    job = db.get(Job, job.id)
    assert job.status == "succeeded", job.error
    result = job.result
    policy = db.get(ModelVersion, result["policy_id"])
    reward = db.get(ModelVersion, result["reward_model_id"])
    assert policy.is_current and reward.is_current and not db.get(ModelVersion, sft.id).is_current
    assert (policy.stage, policy.parent_id, policy.round_job_id) == ("rlhf", sft.id, job.id)
    assert reward.parent_id == sft.id  # initialised from the SFT model
    assert (settings.data_dir / "rounds" / str(job.id) / "policy" / "config.json").is_file()

    snap = snapshot_dir(settings.data_dir, job.id)
    assert verify_snapshot(snap) == []
    manifest = read_manifest(snap)
    assert manifest["rows"]["trl.jsonl"] == 24 and manifest["rows"]["eval_prompts.jsonl"] == 6
    assert result["snapshot"]["max_annotation_id"] == manifest["max_annotation_id"]

    # the reward model learned the preference and its held-out accuracy was measured
    assert result["reward"]["train_pairs"] + result["reward"]["eval_pairs"] == 24
    # PPO ran with the SFT model as reference and logged TRL's metric names
    assert "objective/kl" in result["policy"] and "objective/scores" in result["policy"]
    ppo_config = json.loads((settings.data_dir / "rounds" / str(job.id) / "ppo.config.json").read_text())
    assert ppo_config["ref"] == str(tiny_lm_dir) and ppo_config["policy"] == str(tiny_lm_dir)
    assert ppo_config["reward_model"].endswith("/reward")
    # by default the reward model adds the SFT ancestor's log-likelihood, its weight learned and saved with it
    rm_dir = settings.data_dir / "rounds" / str(job.id) / "reward"
    assert json.loads((rm_dir.parent / "reward.config.json").read_text())["likelihood_model"] == str(tiny_lm_dir)
    feature = json.loads((rm_dir / "likelihood_feature.json").read_text())
    assert feature["model"] == str(Path(tiny_lm_dir).resolve())
    assert result["reward"]["likelihood_weight"] == pytest.approx(feature["weight"])
    stages = set(db.scalars(select(JobMetric.stage).where(JobMetric.job_id == job.id)))
    assert {"reward", "ppo"} <= stages

    evaluation = result["evaluation"]
    assert 0.0 <= evaluation["rm_win_rate"] <= 1.0 and 0.0 <= evaluation["gold_win_rate"] <= 1.0
    assert "kl_to_ref" in evaluation and evaluation["mean_length"] > 0
    assert policy.metrics["evaluation"] == evaluation
    rdir = settings.data_dir / "rounds" / str(job.id)
    assert len((rdir / "samples_before.jsonl").read_text().splitlines()) == 2
    # eval_samples: both judges compared 2 samples of each of the 6 eval prompts
    for judge in ("rm", "gold"):
        report = json.loads((rdir / f"evaluate-{judge}.json").read_text())
        assert report["win_rate"]["n"] == 12 and report["policy"]["samples"] == 12
        assert report["win_rate"]["prompts"] == 6
        assert evaluation[f"{judge}_win_rate_se"] == report["win_rate"]["standard_error"] >= 0.0
    assert len((rdir / "samples_after.jsonl").read_text().splitlines()) == 2

    tasks = list(db.scalars(select(Task).where(Task.job_id == job.id)))
    assert result["tasks"] == len(tasks) == 3
    for task in tasks:
        assert len(task.positions) == 2
        assert {p.generation.model_version_id for p in task.positions} == {policy.id}
        assert task.prompt_id in {p.id for p in prompts["train"]}


def test_rerun_on_the_same_snapshot_and_seed_gives_the_same_metrics_and_dpo_rounds_work(db, settings, tiny_lm_dir):
    labelled_world(db, tiny_lm_dir, train=16, eval=4)
    config = tiny_round_config(algo="dpo", eval_prompts=3, next_tasks={"prompts": 0}, reward_likelihood=False)
    first = start_round(db, config=config)
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    first = db.get(Job, first.id)
    assert first.status == "succeeded", first.error
    assert first.result["algo"] == "dpo" and first.result["tasks"] == 0

    # the rerun starts from the first round's snapshot; policy_init=sft so both rounds start from the same model
    second = start_round(db, config={**config, "snapshot_from": first.id, "policy_init": "sft"})
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    second = db.get(Job, second.id)
    assert second.status == "succeeded", second.error
    one, two = (settings.data_dir / "rounds" / str(j.id) for j in (first, second))
    assert "likelihood_model" not in json.loads((one / "reward.config.json").read_text())  # switched off
    assert not (one / "reward" / "likelihood_feature.json").exists()
    assert (one / "snapshot" / "manifest.json").read_bytes() == (two / "snapshot" / "manifest.json").read_bytes()
    for stage in ("reward", "policy"):
        lines_one = (one / stage / "metrics.jsonl").read_text().splitlines()
        lines_two = (two / stage / "metrics.jsonl").read_text().splitlines()
        assert lines_one == lines_two and lines_one
    # the same policy and reward model: every figure that does not depend on the baseline is the same
    # (the baseline is the current policy, which the first round changed)
    same = ("kl_to_ref", "mean_length", "distinct_2", "rm_score")
    assert {k: first.result["evaluation"][k] for k in same} == {k: second.result["evaluation"][k] for k in same}


def test_rejection_sampling_round_fine_tunes_the_current_policy_on_the_new_rms_best_samples(db, settings, tiny_lm_dir):
    sft, prompts = labelled_world(db, tiny_lm_dir, train=16, eval=4)
    job = start_round(
        db,
        config=tiny_round_config(
            algo="rs",
            eval_prompts=3,
            rs={"num_samples": 4, "max_new_tokens": 16},
            sft={"epochs": 1, "batch_size": 8, "lr": 1e-3},
        ),
    )
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    job = db.get(Job, job.id)
    assert job.status == "succeeded", job.error
    rdir = settings.data_dir / "rounds" / str(job.id)
    picked = json.loads((rdir / "best_of_n" / "trainer_config.json").read_text())
    assert (picked["policy"], picked["judge"], picked["num_samples"]) == (sft.path, f"rm:{rdir / 'reward'}", 4)
    assert picked["prompts"] == str(rdir / "snapshot" / "prompts.jsonl")  # train prompts only
    best = [json.loads(x) for x in (rdir / "best_of_n" / "best.jsonl").read_text().splitlines()]
    train_ids = {str(p.id) for p in prompts["train"]}
    assert best and {str(row["prompt_id"]) for row in best} <= train_ids
    tuned = json.loads((rdir / "policy" / "trainer_config.json").read_text())
    assert (tuned["stage"], tuned["model"], tuned["data"]) == ("sft", sft.path, str(rdir / "best_of_n" / "best.jsonl"))
    result = job.result
    assert result["algo"] == "rs" and result["policy"]["algo"] == "rs"
    assert result["policy"]["rs/prompts_kept"] == len(best) and result["policy"]["rs/reward_gain"] > 0
    assert -1.0 <= result["policy"]["reward_length_corr"] <= 1.0  # what the report's length warning reads
    policy = db.get(ModelVersion, result["policy_id"])
    assert policy.is_current and policy.parent_id == sft.id and result["tasks"] == 3
    stages = set(db.scalars(select(JobMetric.stage).where(JobMetric.job_id == job.id)))
    assert {"reward", "rs", "sft"} <= stages  # both steps' figures reach the job's plots

    # reproducible: the same snapshot, seed and starting policy give the same samples, picks and SFT metrics
    again = start_round(
        db, config={**job.config, "snapshot_from": job.id, "policy_init": "sft", "next_tasks": {"prompts": 0}}
    )
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    assert db.get(Job, again.id).status == "succeeded", db.get(Job, again.id).error
    other = settings.data_dir / "rounds" / str(again.id)
    for name in ("best_of_n/samples.jsonl", "best_of_n/best.jsonl", "best_of_n/metrics.jsonl", "policy/metrics.jsonl"):
        assert (rdir / name).read_bytes() == (other / name).read_bytes(), name
    with pytest.raises(RoundError, match="rs: judge"):
        parse_round_config({"algo": "rs", "rs": {"judge": "py:x:y"}})
    with pytest.raises(RoundError, match="sft: unknown option"):
        parse_round_config({"algo": "rs", "sft": {"beta": 0.1}})


def test_reward_hacking_warnings_read_the_evaluation_and_the_training_samples():
    from app.services.rounds import hacking_warnings

    summary = {
        "mean_length_before": 10.0,
        "mean_length": 16.0,
        "distinct_2_before": 0.8,
        "distinct_2": 0.3,
        "rm_win_rate": 0.8,
        "gold_win_rate": 0.4,
    }
    warnings = hacking_warnings({"summary": summary}, {"reward_length_corr": 0.9})  # PPO's and best-of-n's name
    assert [w.split(":")[0].split(" ")[0] for w in warnings] == ["length", "repetition", "reward-length", "the"]
    assert "correlation 0.90" in warnings[2] and "(80%)" in warnings[3] and "(40%)" in warnings[3]
    calm = {
        "mean_length_before": 10.0,
        "mean_length": 11.0,
        "distinct_2_before": 0.8,
        "distinct_2": 0.7,
        "rm_win_rate": 0.7,
        "gold_win_rate": 0.65,
    }
    assert hacking_warnings({"summary": calm}, {"reward_length_corr": 0.2}) == []


def test_reward_data_keeps_rankings_whole_and_adds_pairwise_choices(tmp_path):
    """Rankings reach the reward model whole (from rankings.jsonl, not as trl's expanded pairs), pairwise choices
    from trl.jsonl; the held-out split is by annotation and the counts are in pairs."""
    from app.services.rounds import split_reward_data

    snap = tmp_path / "snapshot"
    snap.mkdir()
    rankings = [{"prompt": f"q{i}", "completions": ["a", "b", "c"], "annotation_id": i} for i in (1, 2)]
    trl = [
        {
            "prompt": f"q{r['annotation_id']}",
            "chosen": x,
            "rejected": y,
            "margin": 0.0,
            "annotation_id": r["annotation_id"],
        }
        for r in rankings
        for x, y in (("a", "b"), ("a", "c"), ("b", "c"))
    ]
    trl += [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "margin": 1.0, "annotation_id": i} for i in (3, 4)]
    (snap / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rankings))
    (snap / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl))

    train, held, n_train, n_eval = split_reward_data(snap, tmp_path, 0.0)
    assert held is None and (n_train, n_eval) == (3 + 3 + 1 + 1, 0)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert [r["annotation_id"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["completions"] == ["a", "b", "c"] and rows[2]["chosen"] == "a"

    train, held, n_train, n_eval = split_reward_data(snap, tmp_path, 0.5)
    ids = {
        json.loads(line)["annotation_id"]: side
        for side, path in (("train", train), ("eval", held))
        for line in path.read_text().splitlines()
    }
    assert sorted(ids) == [1, 2, 3, 4] and set(ids.values()) == {"train", "eval"}
    assert n_train + n_eval == 8
