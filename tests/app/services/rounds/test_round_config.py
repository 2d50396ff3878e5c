"""A round's config: validation, and the per-stage flags a round runs with (the round's own defaults on top of the
trainer's) and shows on its start form."""

from __future__ import annotations

import dataclasses
import importlib
from typing import get_args

import pytest

from app.services.rounds import STAGE_CONFIG_CLASSES, NextTasks, RoundConfig, RoundError, parse_round_config
from app.services.rounds.config import (
    ALGO_STAGES,
    DEFAULT_ALGO,
    MIN_POLICY_STEPS,
    MIN_PREFERENCE_PAIRS,
    RESERVED_FLAGS,
    data_sized_flags,
    stage_defaults,
)
from app.services.rounds.form import config_from_form, form_fields
from domain.vocabulary import ROUND_ALGOS, ROUND_TASK_KINDS, SOURCE_FILTERS

# What every stage runs with before its length is sized from the data (data_sized_flags), and what the start form
# shows: a change to either side shows up here.
EFFECTIVE_STAGE_FLAGS = {
    "reward": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 0.0001,
        "gradient_checkpointing": False,
        "lora_r": 0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target_modules": [],
        "eval_data": "", "ties": "exclude", "center_coef": 0.0, "max_length": 1024, "micro_batch_size": 0,
        "max_grad_norm": 1.0, "weight_decay": 0.0, "center_on_chosen": True, "log_every": 1, "likelihood_model": "",
        "likelihood_lr": 0.1, "early_stopping_patience": 2, "max_epochs": 10,
    },
    "ppo": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 3e-05,
        "gradient_checkpointing": False,
        "lora_r": 0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target_modules": [],
        "ref": "", "value_model": "", "resume": "", "num_minibatches": 1, "micro_batch_size": 0, "ppo_epochs": 4,
        "max_new_tokens": 32, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "kl_coef": 0.05, "kl_estimator": "k1",
        "adaptive_kl": False, "target_kl": 6.0, "kl_horizon": 10000, "missing_eos_penalty": 1.0, "gamma": 1.0,
        "lam": 0.95, "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "whiten_rewards": False,
        "max_grad_norm": 1.0, "adam_eps": 1e-05, "lr_decay": True, "approxkl_stop": 1.0, "checkpoint_every": 1,
        "keep_checkpoint": False,
    },
    "dpo": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 2e-05,
        "gradient_checkpointing": False,
        "lora_r": 0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target_modules": [],
        "ref": "", "beta": 0.1, "ties": "exclude", "max_length": 1024, "micro_batch_size": 0, "max_grad_norm": 1.0,
        "log_every": 1, "fsdp": False, "precompute_ref_logprobs": False,
    },
    "rs": {
        "num_samples": 8, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "max_new_tokens": 32, "seed": 0,
        "device": "auto", "precision": "auto", "batch_size": 32,
    },
    "sft": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 2e-05,
        "gradient_checkpointing": False,
        "lora_r": 0, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_target_modules": [],
        "max_length": 0, "weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 1.0, "fsdp": False,
    },
}  # fmt: skip


def test_config_errors_name_the_field():
    with pytest.raises(RoundError, match="algo"):
        parse_round_config({"algo": "sgd"})
    with pytest.raises(RoundError, match="unknown option --no-such-flag"):
        parse_round_config({"algo": "ppo", "ppo": {"no_such_flag": 1}})
    with pytest.raises(RoundError, match="set by the round itself"):
        parse_round_config({"reward": {"model": "/elsewhere"}})
    with pytest.raises(RoundError, match="gold_judge"):
        parse_round_config({"gold_judge": "no-colon"})
    assert parse_round_config({"ppo": {"kl_coef": 0.2}}).stage_flags("ppo")["kl_coef"] == 0.2


def test_the_config_takes_its_choices_from_the_domain_vocabulary():
    assert get_args(RoundConfig.model_fields["algo"].annotation) == ROUND_ALGOS
    assert get_args(RoundConfig.model_fields["source"].annotation) == SOURCE_FILTERS
    assert get_args(NextTasks.model_fields["kind"].annotation) == ROUND_TASK_KINDS
    assert RoundConfig().algo == DEFAULT_ALGO == "rs" and RoundConfig().source == "all"


def _trainer_defaults(stage: str) -> dict:
    module, name = STAGE_CONFIG_CLASSES[stage]
    cls = getattr(importlib.import_module(module), name)
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


def test_policy_stage_lengths_follow_the_number_of_prompts_and_pairs():
    def sized(stage, **size):
        return {k: v.value for k, v in data_sized_flags(stage, batch_size=16, **size).items()}

    # PPO: two passes over the prompts, never fewer than the minimum of steps (8 steps of 16 learnt nothing)
    assert sized("ppo", prompts=128, pairs=700) == {"max_steps": MIN_POLICY_STEPS}
    assert sized("ppo", prompts=1000, pairs=700) == {"max_steps": 125}
    # rejection sampling's SFT: one example per prompt, passes enough for the minimum of steps, 2 to 8
    assert sized("sft", prompts=128, pairs=0) == {"epochs": 8}
    assert sized("sft", prompts=1000, pairs=0) == {"epochs": 2}
    assert sized("sft", prompts=400, pairs=0) == {"epochs": 3}
    # DPO: passes over the pairs, 1 to 8
    assert sized("dpo", prompts=1000, pairs=300) == {"epochs": 4}
    assert sized("dpo", prompts=1000, pairs=20_000) == {"epochs": 1}
    assert sized("reward", prompts=1000, pairs=300) == {} and sized("rs", prompts=10, pairs=10) == {}
    assert "2 passes over 128 prompts" in data_sized_flags("ppo", prompts=128, pairs=0, batch_size=16)["max_steps"].why
    # a round gives the sized length to its stage, its own batch size counts, and a length it sets wins
    assert RoundConfig().stage_flags("ppo", prompts=1000, pairs=700)["max_steps"] == 125
    assert RoundConfig(ppo={"batch_size": 64}).stage_flags("ppo", prompts=1000, pairs=0)["max_steps"] == 64
    assert RoundConfig(ppo={"batch_size": 8}).stage_flags("ppo", prompts=1000, pairs=0)["max_steps"] == 250
    assert "max_steps" not in RoundConfig(ppo={"epochs": 3}).stage_flags("ppo", prompts=1000, pairs=700)
    assert RoundConfig(sft={"max_steps": 5}).stage_flags("sft", prompts=100, pairs=0) == {"max_steps": 5}
    assert "max_steps" not in RoundConfig().stage_flags("ppo")  # no data size: the defaults alone


def test_each_stage_runs_with_the_same_flags_as_before():
    for stage, expected in EFFECTIVE_STAGE_FLAGS.items():
        # what a default round passes the trainer, on top of the trainer's own defaults
        assert {**_trainer_defaults(stage), **RoundConfig().stage_flags(stage)} == expected, stage
        assert stage_defaults(stage) == expected, stage


def test_the_start_form_shows_only_the_chosen_algorithms_settings_with_the_values_the_round_runs_with():
    for algo in ROUND_ALGOS:
        fields = {f["name"]: f for f in form_fields(algo)}
        stages = {name.split(".")[0] for name in fields if "." in name} - {"next_tasks"}
        assert stages == {"reward", *ALGO_STAGES[algo]}, algo  # only this algorithm's stages
        cfg = RoundConfig(algo=algo)
        for stage in stages:
            runs_with = {**_trainer_defaults(stage), **cfg.stage_flags(stage)}  # what the trainer is run with
            shown = {name.split(".", 1)[1]: f["default"] for name, f in fields.items() if name.startswith(f"{stage}.")}
            assert shown == {k: v for k, v in runs_with.items() if k not in RESERVED_FLAGS[stage]}, stage
        for name in ("source", "min_pairs", "promote_margin_se", "kl_floor", "seed", "eval_prompts"):
            assert fields[name]["default"] == getattr(cfg, name), name
        assert fields["next_tasks.k"]["default"] == cfg.next_tasks.k
        assert all(f["why"] for f in fields.values()), [n for n, f in fields.items() if not f["why"]]
        assert [f["name"] for f in fields.values() if not f["advanced"]][:3] == [
            "source",
            "min_pairs",
            "promote_margin_se",
        ]
        assert fields["ppo.cliprange" if algo == "ppo" else "reward.weight_decay"]["advanced"]
    assert form_fields() == form_fields(RoundConfig().algo)  # no algorithm asked: the round's default
    assert form_fields()[1]["default"] == MIN_PREFERENCE_PAIRS
    with pytest.raises(RoundError, match="algo"):
        form_fields("sgd")


def test_the_form_records_only_what_differs_from_the_defaults():
    form = {
        "algo": "dpo",
        "dpo.beta": "0.2",
        "dpo.lr": "2e-5",
        "ppo.kl_coef": "0.05",
        "seed": "",
        "since": "2024",
    }
    assert config_from_form(form) == {"algo": "dpo", "dpo": {"beta": 0.2}, "since": "2024"}
    # only the chosen algorithm's settings are read; the advanced JSON may set anything
    assert config_from_form({"algo": "ppo", "extra": '{"dpo": {"epochs": 3}}', "dpo.beta": "0.3"}) == {
        "algo": "ppo",
        "dpo": {"epochs": 3},
    }
    with pytest.raises(RoundError, match="advanced settings: a JSON object"):
        config_from_form({"extra": "[1]"})


def test_next_tasks_selection_uses_the_new_reward_model_and_says_when_it_falls_back(db, tmp_path):
    from app.services.rounds.job import next_task_request, next_task_selection
    from tests.factories import make_model

    def selection(select):
        return next_task_selection(db, RoundConfig(next_tasks={"select": select}), tmp_path)

    assert selection("random") == ("random", [], "")
    assert selection("uncertainty") == ("uncertainty", [str(tmp_path / "reward")], "")
    used, models, note = selection("disagreement")  # this round's reward model is the first
    assert (used, models) == ("uncertainty", [str(tmp_path / "reward")]) and "needs two reward models" in note
    make_model(db, "rm-old", kind="reward", stage="rlhf", path="/rm/old")
    make_model(db, "rm-current", kind="reward", stage="rlhf", path="/rm/current", is_current=True)
    make_model(db, "rm-newer", kind="reward", stage="rlhf", path="/rm/newer")
    db.flush()
    assert selection("disagreement") == ("disagreement", [str(tmp_path / "reward"), "/rm/current", "/rm/newer"], "")
    request = next_task_request(RoundConfig(next_tasks={"select": "uncertainty", "prompts": 5}), "uncertainty")
    assert (request["select"], request["count"], request["oversample"], request["random_share"]) == (
        "uncertainty",
        5,
        4,
        0.2,
    )
    with pytest.raises(RoundError, match="next_tasks.select"):
        parse_round_config({"next_tasks": {"select": "loudest"}})
    assert RoundConfig().use_rewrites is True and RoundConfig().next_tasks.select == "random"


def test_the_lora_round_setting_gives_every_training_stage_its_rank():
    cfg = parse_round_config({"algo": "rs", "lora_r": 8, "ppo": {"lora_r": 2}})
    for stage in ("reward", "dpo", "sft"):
        assert cfg.stage_flags(stage)["lora_r"] == 8, stage
    assert cfg.stage_flags("ppo")["lora_r"] == 2  # a stage's own flag wins
    assert "lora_r" not in cfg.stage_flags("rs")  # best-of-n samples; its SFT step trains
    assert "lora_r" not in RoundConfig().stage_flags("reward")  # off: the trainer's default (0)
    fields = {f["name"]: f for f in form_fields("rs")}
    assert fields["lora_r"]["default"] == 0 and "peft adapter" in fields["lora_r"]["why"]
    assert config_from_form({"algo": "rs", "lora_r": "16"}) == {"algo": "rs", "lora_r": 16}
    with pytest.raises(RoundError, match="lora_r"):
        parse_round_config({"lora_r": -1})
    with pytest.raises(RoundError, match="--lora-alpha"):
        parse_round_config({"reward": {"lora_alpha": "x"}})


def test_a_round_may_set_its_training_processes_over_the_deployments():
    assert RoundConfig().processes(3) == 3  # unset: RLHF_TRAIN_PROCESSES
    assert parse_round_config({"train_processes": 2}).processes(1) == 2
    assert config_from_form({"algo": "dpo", "train_processes": "2"}) == {"algo": "dpo", "train_processes": 2}
    assert config_from_form({"algo": "dpo", "train_processes": ""}) == {"algo": "dpo"}
    with pytest.raises(RoundError, match="train_processes"):
        parse_round_config({"train_processes": 0})
