"""A round's config: validation, and the per-stage flags a round runs with (the round's own defaults on top of the
trainer's) and shows on its start form."""

from __future__ import annotations

import dataclasses
import importlib
from typing import get_args

import pytest

from app.services.rounds import STAGE_CONFIG_CLASSES, NextTasks, RoundConfig, RoundError, parse_round_config
from app.services.rounds.config import DEFAULT_ALGO, MIN_POLICY_STEPS, data_sized_flags, stage_defaults
from app.services.rounds.form import config_from_form, form_fields
from domain.vocabulary import ROUND_ALGOS, ROUND_TASK_KINDS, SOURCE_FILTERS

# What every stage runs with before its length is sized from the data (data_sized_flags), and what the start form
# shows: a change to either side shows up here.
EFFECTIVE_STAGE_FLAGS = {
    "reward": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 0.0001,
        "eval_data": "", "ties": "exclude", "center_coef": 0.0, "max_length": 1024, "micro_batch_size": 0,
        "max_grad_norm": 1.0, "weight_decay": 0.0, "center_on_chosen": True, "log_every": 1, "likelihood_model": "",
        "likelihood_lr": 0.1, "early_stopping_patience": 2, "max_epochs": 10,
    },
    "ppo": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 3e-05,
        "ref": "", "value_model": "", "resume": "", "num_minibatches": 1, "micro_batch_size": 0, "ppo_epochs": 4,
        "max_new_tokens": 32, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "kl_coef": 0.05, "kl_estimator": "k1",
        "adaptive_kl": False, "target_kl": 6.0, "kl_horizon": 10000, "missing_eos_penalty": 1.0, "gamma": 1.0,
        "lam": 0.95, "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "whiten_rewards": False,
        "max_grad_norm": 1.0, "adam_eps": 1e-05, "lr_decay": True, "approxkl_stop": 1.0, "checkpoint_every": 1,
        "keep_checkpoint": False,
    },
    "dpo": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 2e-05,
        "ref": "", "beta": 0.1, "ties": "exclude", "max_length": 1024, "micro_batch_size": 0, "max_grad_norm": 1.0,
        "log_every": 1,
    },
    "rs": {
        "num_samples": 8, "temperature": 0.7, "top_k": 0, "top_p": 1.0, "max_new_tokens": 32, "seed": 0,
        "device": "auto", "precision": "auto", "batch_size": 32,
    },
    "sft": {
        "seed": 0, "device": "auto", "precision": "auto", "epochs": 1, "max_steps": 0, "batch_size": 16, "lr": 2e-05,
        "max_length": 0, "weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 1.0,
    },
}  # fmt: skip

FORM_DEFAULTS = [
    ("seed", 0, None),
    ("source", "all", ["all", "human", "ai"]),
    ("since", None, None),
    ("min_agreement", None, None),
    ("min_pairs", 16, None),
    ("policy_init", "current", ["current", "sft"]),
    ("reference", "sft", ["sft", "current"]),
    ("reward_init", "sft", ["sft", "previous"]),
    ("reward_likelihood", False, ["true", "false"]),
    ("eval_prompts", 64, None),
    ("eval_samples", 1, None),
    ("gold_judge", "", None),
    ("reward.epochs", 1, None),
    ("reward.lr", 0.0001, None),
    ("reward.batch_size", 16, None),
    ("reward.max_steps", 0, None),
    ("reward.center_coef", 0.0, None),
    ("ppo.epochs", 1, None),
    ("ppo.max_steps", 0, None),
    ("ppo.lr", 3e-05, None),
    ("ppo.batch_size", 16, None),
    ("ppo.ppo_epochs", 4, None),
    ("ppo.kl_coef", 0.05, None),
    ("ppo.adaptive_kl", False, ["true", "false"]),
    ("ppo.max_new_tokens", 32, None),
    ("ppo.temperature", 0.7, None),
    ("dpo.epochs", 1, None),
    ("dpo.max_steps", 0, None),
    ("dpo.lr", 2e-05, None),
    ("dpo.batch_size", 16, None),
    ("dpo.beta", 0.1, None),
    ("rs.num_samples", 8, None),
    ("rs.temperature", 0.7, None),
    ("rs.max_new_tokens", 32, None),
    ("sft.epochs", 1, None),
    ("sft.max_steps", 0, None),
    ("sft.lr", 2e-05, None),
    ("sft.batch_size", 16, None),
    ("next_tasks.prompts", 32, None),
    ("next_tasks.k", 2, None),
    ("next_tasks.kind", "pairwise", ["pairwise", "ranking"]),
    ("next_tasks.overlap", 1, None),
    ("next_tasks.temperature", 1.0, None),
    ("next_tasks.max_new_tokens", 32, None),
]


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
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


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


def test_the_start_form_shows_the_same_defaults_as_before():
    assert [(f["name"], f["default"], f["choices"]) for f in form_fields()] == FORM_DEFAULTS


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
    assert config_from_form({"extra": '{"dpo": {"epochs": 3}}', "dpo.beta": "0.3"}) == {
        "algo": DEFAULT_ALGO,
        "dpo": {"beta": 0.3, "epochs": 3},
    }
    with pytest.raises(RoundError, match="advanced settings: a JSON object"):
        config_from_form({"extra": "[1]"})
