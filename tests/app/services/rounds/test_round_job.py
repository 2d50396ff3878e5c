"""The `round` job: whole rounds run by a worker on the trainer's tiny LM (snapshot -> reward -> PPO | DPO | RS ->
evaluate -> register -> next tasks), and reruns on a round's snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.jobs.worker import Worker
from app.models import Job, JobMetric, ModelVersion, Task
from app.services.rounds import RoundError, parse_round_config, start_round
from app.services.snapshots import read_manifest, snapshot_dir, verify_snapshot
from tests.factories import (
    annotate_pairwise,
    labelled_world,
    make_annotator,
    make_generation,
    make_prompt,
    make_task,
    register_policy,
    run_metrics,
    tiny_round_config,
)
from tests.trainer.architectures import ARCHITECTURES, build_model


def run_worker_once(settings) -> None:
    Worker(settings=settings, poll_s=0.05, log=lambda message: None).run(once=True)


def test_ppo_round_registers_a_new_current_policy_and_makes_next_tasks(db, settings, tiny_lm_dir):
    sft, prompts = labelled_world(db, tiny_lm_dir, train=24, eval=6)
    job = start_round(
        db,
        config=tiny_round_config(
            gold_judge="tests.factories:gold_score", report_samples=2, eval_samples=2, reward_likelihood=True
        ),
    )
    db.commit()

    run_worker_once(settings)

    db.expire_all()
    job = db.get(Job, job.id)
    assert job.status == "succeeded", job.error
    result = job.result
    policy = db.get(ModelVersion, result["policy_id"])
    reward = db.get(ModelVersion, result["reward_model_id"])
    # two PPO steps barely move the policy: it does not beat the current one beyond the win-rate's standard error,
    # so the new models are registered, not promoted, and the round says why
    promotion = result["promotion"]
    assert not promotion["promoted"] and promotion["reasons"], promotion
    assert not policy.is_current and not reward.is_current and db.get(ModelVersion, sft.id).is_current
    evaluation = result["evaluation"]
    assert (promotion["win_rate"], promotion["standard_error"]) == (
        evaluation["rm_win_rate"],
        evaluation["rm_win_rate_se"],
    )
    # round 1 starts from its reference: its KL from where it started is its KL to the reference
    rm_report = json.loads((settings.data_dir / "rounds" / str(job.id) / "evaluate-rm.json").read_text())
    assert evaluation["kl_to_start"] == pytest.approx(rm_report["policy"]["kl_to_ref_k3"], abs=1e-6)
    assert promotion["kl_to_start"] == evaluation["kl_to_start"]
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
    # asked to, the reward model adds the SFT ancestor's log-likelihood, its weight learned and saved with it
    rm_dir = settings.data_dir / "rounds" / str(job.id) / "reward"
    assert json.loads((rm_dir.parent / "reward.config.json").read_text())["likelihood_model"] == str(tiny_lm_dir)
    feature = json.loads((rm_dir / "likelihood_feature.json").read_text())
    assert (rm_dir / feature["model"]).resolve() == Path(tiny_lm_dir).resolve()
    assert result["reward"]["likelihood_weight"] == pytest.approx(feature["weight"])
    stages = set(db.scalars(select(JobMetric.stage).where(JobMetric.job_id == job.id)))
    assert {"reward", "ppo"} <= stages
    # the data's size is recorded; the round set PPO's length itself, so nothing was sized
    assert result["data_size"] == {"prompts": 24, "pairs": 24} and result["sized_flags"] == {"ppo": {}}

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

    tasks = list(db.scalars(select(Task).where(Task.job_id == job.id, Task.flag_reason.is_(None))))
    assert result["tasks"] == len(tasks) == 3
    for task in tasks:
        assert len(task.positions) == 2
        assert {p.generation.model_version_id for p in task.positions} == {policy.id}
        assert task.prompt_id in {p.id for p in prompts["train"]}
    # the human verdict is queued with the registration: the new policy beside the one it was evaluated against
    assert result["baseline_policy_id"] == sft.id
    verdict = db.get(Job, result["verdict_job_id"])
    assert (verdict.kind, verdict.status, verdict.config["split"]) == ("generate", "queued", "eval")
    assert verdict.config["verdict"] == {"round_id": job.id, "baseline_id": sft.id}
    assert verdict.config["model_id"] == policy.id and verdict.config["count"] == 32
    # a failed check has both policies answer train prompts (none when every check passed); the answers it points
    # at became tasks, the new answer against the old
    saved = json.loads((rdir / "evaluation.json").read_text())
    failed = {c["flag"] for c in saved["checks"] if not c["passed"]}
    assert all(set(f["reasons"]) <= failed for f in saved["flagged"])
    assert (rdir / "flag-samples-gold.jsonl").is_file() == bool(failed)
    flagged = list(db.scalars(select(Task).where(Task.job_id == job.id, Task.flag_reason.is_not(None))))
    assert result["flagged_tasks"] == len(flagged) == min(len(saved["flagged"]), 16)
    for task in flagged:
        assert [p.generation.model_version_id for p in task.positions] == [policy.id, sft.id]
        assert task.prompt_id in {p.id for p in prompts["train"]}


def test_rerun_on_the_same_snapshot_and_seed_gives_the_same_metrics_and_dpo_rounds_work(db, settings, tiny_lm_dir):
    labelled_world(db, tiny_lm_dir, train=16, eval=4)
    config = tiny_round_config(
        algo="dpo", eval_prompts=3, next_tasks={"prompts": 0}, verdict_tasks=0, reward_likelihood=False
    )
    first = start_round(db, config=config)
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    first = db.get(Job, first.id)
    assert first.status == "succeeded", first.error
    assert first.result["algo"] == "dpo" and first.result["tasks"] == 0

    # the rerun starts from the first round's snapshot; policy_init=sft so both rounds start from the same model
    # (verdict_tasks=0: no verdict job queued before it)
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
        lines_one, lines_two = run_metrics(one / stage), run_metrics(two / stage)  # peak memory set apart
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
            verdict_tasks=0,  # the rerun below is the next job the worker runs
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
    assert policy.is_current is result["promotion"]["promoted"]
    assert policy.parent_id == sft.id and result["tasks"] == 3
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
    for name in ("best_of_n/samples.jsonl", "best_of_n/best.jsonl"):
        assert (rdir / name).read_bytes() == (other / name).read_bytes(), name
    for name in ("best_of_n", "policy"):
        assert run_metrics(rdir / name) == run_metrics(other / name), name  # peak memory set apart
    with pytest.raises(RoundError, match="rs: judge"):
        parse_round_config({"algo": "rs", "rs": {"judge": "py:x:y"}})
    with pytest.raises(RoundError, match="sft: unknown option"):
        parse_round_config({"algo": "rs", "sft": {"beta": 0.1}})


def test_inputs_too_long_for_the_model_are_skipped_and_counted_not_fatal(db, settings, tiny_lm_dir):
    """A rejection-sampling round once failed with IndexError on an annotated task whose responses were longer
    than the model's context, and a long prompt failed every later round: now both are skipped and counted."""
    from tests.factories import annotate_pairwise, make_annotator, make_generation, make_prompt, make_task

    sft, _ = labelled_world(db, tiny_lm_dir, train=12, eval=3)
    long_prompt = make_prompt(db, "what is 1 plus 1? " * 40)  # far more than the tiny LM's 64-token context
    short = make_prompt(db, "what is 2 plus 9?")
    long_task = make_task(db, short, [make_generation(db, short, " 11" * 80), make_generation(db, short, " 3")])
    annotate_pairwise(db, long_task, make_annotator(db), chosen=long_task.positions[0].generation)
    db.commit()
    job = start_round(
        db,
        config=tiny_round_config(
            algo="rs",
            eval_prompts=3,
            rs={"num_samples": 2, "max_new_tokens": 16},
            sft={"epochs": 1, "batch_size": 8},
            next_tasks={"prompts": 0},
        ),
    )
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    job = db.get(Job, job.id)
    assert job.status == "succeeded", job.error
    skipped = job.result["skipped_too_long"]
    assert skipped["reward"] == 1 and skipped["best-of-n"] == 1, skipped
    assert set(skipped) == {"reward", "best-of-n", "sft", "evaluate", "generate"}
    peaks = job.result["peak_memory_mb"]  # each training step's, from its metrics.jsonl
    assert set(peaks) == {"reward", "best-of-n", "sft"} and all(mb > 0 for mb in peaks.values())
    assert long_prompt.id not in {
        json.loads(x)["prompt_id"]
        for x in (settings.data_dir / "rounds" / str(job.id) / "best_of_n" / "samples.jsonl").read_text().splitlines()
    }


def test_a_round_on_a_llama_chat_model_keeps_its_architecture_and_shows_no_special_tokens(db, settings, tmp_path):
    """A non-GPT-2 model (tiny Llama 3: BOS from tokenizer and template, EOS <|eot_id|>, no PAD) and chat prompts
    through a whole round: its models keep the architecture and the vocabulary, and the next tasks' texts hold no
    special token."""
    from transformers import AutoConfig, AutoTokenizer

    llama = build_model(ARCHITECTURES["llama"], tmp_path / "llama")
    sft = register_policy(db, llama)
    human = make_annotator(db)
    for i in range(12):
        a, b = i % 5, i // 5 + 1
        prompt = make_prompt(db, messages=[{"role": "user", "content": f"what is {a} plus {b}?"}])
        right = make_generation(db, prompt, f"it is {a + b}.", seed=2 * i)
        wrong = make_generation(db, prompt, f"it is {a + b + 2}.", seed=2 * i + 1)
        task = make_task(db, prompt, [right, wrong] if i % 2 else [wrong, right], kind="pairwise")
        annotate_pairwise(db, task, human, chosen=right)
    for i in range(3):
        make_prompt(db, messages=[{"role": "user", "content": f"what is {i} times {i}?"}], split="eval")
    db.commit()
    job = start_round(db, config=tiny_round_config(eval_prompts=3))
    db.commit()
    run_worker_once(settings)
    db.expire_all()
    job = db.get(Job, job.id)
    assert job.status == "succeeded", job.error
    policy, reward = (db.get(ModelVersion, job.result[key]) for key in ("policy_id", "reward_model_id"))
    assert policy.parent_id == reward.parent_id == sft.id
    assert AutoConfig.from_pretrained(policy.path).architectures == ["LlamaForCausalLM"]
    assert AutoConfig.from_pretrained(reward.path).architectures == ["LlamaForSequenceClassification"]
    tok = AutoTokenizer.from_pretrained(llama)
    assert len(AutoTokenizer.from_pretrained(policy.path)) == len(tok)
    tasks = db.scalars(select(Task).where(Task.id > task.id)).all()
    texts = [p.generation.text for t in tasks for p in t.positions]
    assert texts and not [x for x in texts if any(s in x for s in tok.all_special_tokens)]
