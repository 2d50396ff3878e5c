"""What a round is run with: `RoundConfig` (stored as the `round` job's config, so a round can be rerun as is),
the tasks it makes next, and the trainer flags of each stage: the round's own defaults, where they differ from the
trainer's, and the check of the rest by the trainer's own config loader."""

from __future__ import annotations

import dataclasses
import importlib
import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.services.errors import ServiceError
from app.services.generation import DEFAULT_OVERSAMPLE, DEFAULT_RANDOM_SHARE, MAX_OVERSAMPLE
from domain.sampling import RESPONSES_PER_PROMPT_MAX, RESPONSES_PER_PROMPT_MIN, TEMPERATURE_MIN, TOP_K_MIN, TOP_P_MAX
from domain.vocabulary import (
    ANNOTATOR_WEIGHTINGS,
    LABEL_SETS,
    ROUND_ALGOS,
    ROUND_TASK_KINDS,
    SELECTIONS,
    SOURCE_FILTERS,
)

ROUND_KIND = "round"

# Trainer flags a round sets itself (paths); the rest of each stage's flags may come from the round config.
RESERVED_FLAGS = {
    "reward": {"model", "data", "eval_data", "out", "seed", "likelihood_model"},
    "ppo": {"policy", "reward_model", "prompts", "out", "ref", "value_model", "resume", "seed"},
    "dpo": {"policy", "data", "out", "ref", "seed"},
    "rs": {"policy", "judge", "prompts", "out", "seed"},
    "sft": {"model", "data", "out", "seed"},
}
# The round's defaults where they differ from the trainer's (every other flag: the trainer's default, or the
# data-sized value of data_sized_flags). Why each value: docs/design.md, "Round defaults".
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "reward": {},
    "ppo": {"lr": 3e-5},
    "dpo": {"lr": 2e-5},
    "rs": {"max_new_tokens": 32},
    "sft": {},
}
# The algorithm a round runs unless told: the one that learnt best on bench/preference_suite.py's pilot seed (all six
# screened rules at 150 labels, the lowest median ratio; DPO also met all six, PPO four; docs/results.md).
DEFAULT_ALGO = "rs"
# Whether the reward model adds the SFT model's likelihood unless told (the round setting reward_likelihood).
DEFAULT_REWARD_LIKELIHOOD = False
# Data-sized lengths (data_sized_flags): every policy stage takes at least MIN_POLICY_STEPS optimizer steps, however
# few prompts or pairs there are, and PPO goes PPO_PASSES times over the prompts when they are many.
MIN_POLICY_STEPS = 64
PPO_PASSES = 2
MAX_EPOCHS_SIZED = 8  # so a handful of pairs is not repeated hundreds of times
# Flags that set a stage's length: one given by the user replaces the sized length.
LENGTH_FLAGS = {"epochs", "max_steps"}


@dataclasses.dataclass(frozen=True)
class SizedFlag:
    """A stage flag the round sets from the size of its data, and the reason, for the start form and the report."""

    value: Any
    why: str


def data_sized_flags(stage: str, *, prompts: int, pairs: int, batch_size: int) -> dict[str, SizedFlag]:
    """The length of a policy stage from the round's data: train prompts (PPO's episodes, rejection sampling's SFT
    examples: one per prompt) and preference pairs (DPO's examples). `batch_size`: the stage's own."""
    if stage == "ppo":
        passes = math.ceil(PPO_PASSES * prompts / batch_size)
        steps = max(MIN_POLICY_STEPS, passes)
        return {
            "max_steps": SizedFlag(
                steps,
                f"{PPO_PASSES} passes over {prompts} prompts at {batch_size} a step = {passes} steps, "
                f"at least {MIN_POLICY_STEPS}",
            )
        }
    examples = {"sft": prompts, "dpo": pairs}.get(stage)
    if examples is None:
        return {}
    per_epoch = max(1, math.ceil(examples / batch_size))
    epochs = min(MAX_EPOCHS_SIZED, max(1 if stage == "dpo" else 2, math.ceil(MIN_POLICY_STEPS / per_epoch)))
    what = "best samples (one per prompt)" if stage == "sft" else "preference pairs"
    return {
        "epochs": SizedFlag(
            epochs,
            f"{examples} {what} at {batch_size} a step = {per_epoch} steps a pass; passes for at least "
            f"{MIN_POLICY_STEPS} steps, at most {MAX_EPOCHS_SIZED}",
        )
    }


# The stages that train a model and so take the LoRA flags (trainer.adapters.LoraFields): the round setting lora_r
# gives them all its rank (best-of-n only samples; its SFT step is the "sft" stage).
LORA_STAGES = ("reward", "ppo", "dpo", "sft")
LORA_RANK_MAX = 1024

# Each stage's trainer config dataclass, imported when needed (the service runs without torch until a round does).
STAGE_CONFIG_CLASSES = {
    "reward": ("trainer.reward_model", "RewardConfig"),
    "ppo": ("trainer.ppo", "PPOConfig"),
    "dpo": ("trainer.dpo", "DPOConfig"),
    "rs": ("trainer.best_of_n", "BestOfNConfig"),
    "sft": ("trainer.sft", "SftConfig"),
}
# The trainer stages each algorithm runs after the reward model (their flags: the config's field of that name).
ALGO_STAGES = {"ppo": ("ppo",), "dpo": ("dpo",), "rs": ("rs", "sft")}
# Below this many preference pairs a round refuses to start (`min_pairs` overrides it per round). No measured
# figure yet; the preference suite in bench/ is what sets it.
MIN_PREFERENCE_PAIRS = 100
# The promotion gate: the new policy becomes current only when its win-rate against the current one under the new
# reward model beats 50% by more than this many standard errors (over eval prompts) and every reward-hacking check
# passes. 2 standard errors: a policy no better than the current one passes about 2.5% of the time.
PROMOTE_MARGIN_SE = 2.0
# A round whose new policy is closer than this to the policy it started from (KL per response, nats) changed
# almost nothing, and says so.
KL_FLOOR = 0.02
# How many of the samples its failed reward-hacking checks flag a round makes into tasks people see first
# (app.services.rounds.flagged), unless told: enough to tell hacking from chance, few enough to be done first.
DEFAULT_FLAGGED_TASKS = 16


class RoundError(ServiceError):
    """A round that cannot start (bad config, too little data, one already active); the message is safe to show."""


class NextTasks(BaseModel):
    """The tasks a round makes from its new policy's samples."""

    model_config = ConfigDict(extra="forbid")
    prompts: int = Field(32, ge=0, le=100_000, description="Train prompts to sample (fewest tasks first); 0 = none.")
    k: int = Field(2, ge=RESPONSES_PER_PROMPT_MIN, le=RESPONSES_PER_PROMPT_MAX, description="Responses per prompt.")
    kind: Literal[ROUND_TASK_KINDS] = Field(ROUND_TASK_KINDS[0], description="The kind of the next tasks.")
    overlap: int = Field(1, ge=1, le=100, description="Distinct human annotators each task needs.")
    temperature: float = Field(1.0, ge=TEMPERATURE_MIN, description="Sampling temperature: 1 keeps responses varied.")
    top_k: int = Field(0, ge=TOP_K_MIN, description="Top-k sampling (0 = off).")
    top_p: float = Field(1.0, gt=0.0, le=TOP_P_MAX, description="Top-p sampling (1 = off).")
    max_new_tokens: int = Field(32, ge=1, description="Longest response, in tokens.")
    select: Literal[SELECTIONS] = Field(
        SELECTIONS[0],
        description="Which prompts and pairs people see: random, uncertainty (the new reward model's P(a beats b) "
        "nearest 0.5) or disagreement (between the new and the latest reward models; uncertainty, said so, when "
        "there is only one).",
    )
    oversample: int = Field(
        DEFAULT_OVERSAMPLE, ge=1, le=MAX_OVERSAMPLE, description="Selection: candidates sampled per one shown."
    )
    random_share: float = Field(
        DEFAULT_RANDOM_SHARE, ge=0.0, le=1.0, description="Selection: share of prompts drawn at random (unbiased)."
    )

    @model_validator(mode="after")
    def _pairs_need_even_k(self) -> NextTasks:
        if self.kind == "pairwise" and self.k % 2:
            raise ValueError("pairwise tasks take the k responses two by two: k must be even")
        return self


class RoundConfig(BaseModel):
    """Everything a round is run with; stored as the job's config, so it can be rerun as is."""

    model_config = ConfigDict(extra="forbid")
    # Literal over the vocabulary's tuples: subscripting with a tuple gives its members (one declaration).
    algo: Literal[ROUND_ALGOS] = Field(
        DEFAULT_ALGO,
        description="How the policy learns from the new reward model. Rejection sampling by default: on the preference "
        "suite (docs/results.md) it learnt all six hidden rules at 150 labels, moving them most (median) of the "
        "algorithms that stayed within the KL bound; DPO learnt all six too, PPO moved further but past the bound "
        "on two.",
    )
    seed: int = Field(0, description="Seed of every stage: the same snapshot and seed give the same round.")
    # data filters
    source: Literal[SOURCE_FILTERS] = Field(SOURCE_FILTERS[0], description="Whose annotations: human, AI or all.")
    since: datetime | None = Field(None, description="Only annotations made at or after this time.")
    min_agreement: float | None = Field(
        None, ge=0.0, le=1.0, description="Only tasks whose annotators agreed at least this much."
    )
    allow_untrusted_ai_labels: bool = Field(
        False,
        description="Train on AI labels even when their judge's latest calibration agreed with human labels less "
        "than the trusted minimum (RLHF_AI_MIN_AGREEMENT), or is absent: recorded here so the report says so.",
    )
    min_pairs: int = Field(
        MIN_PREFERENCE_PAIRS,
        ge=1,
        description="Refuse the round with fewer preference pairs than this: too few to learn from.",
    )
    annotator_weighting: Literal[ANNOTATOR_WEIGHTINGS] = Field(
        ANNOTATOR_WEIGHTINGS[0],
        description=(
            "How much each annotator's pairs count in the reward model's loss: all alike (none), by accuracy on gold "
            "tasks (gold), or by an accuracy estimated from overlapped tasks (dawid_skene; needs task overlap >= 2)."
        ),
    )
    labels: Literal[LABEL_SETS] = Field(
        LABEL_SETS[0],
        description=(
            "Which labels it trains on: the annotators' own (raw), or a task's reviewer's final label in place of its "
            "human annotations where the task has one (adjudicated)."
        ),
    )
    rm_eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of annotations held out from the RM.")
    snapshot_from: int | None = Field(None, description="Rerun on this round's snapshot instead of a new one.")
    # what trains from what
    reward_init: Literal["sft", "previous"] = Field(
        "sft", description="The new reward model starts from the SFT model, or the current reward model."
    )
    reward_likelihood: bool = Field(
        DEFAULT_REWARD_LIKELIHOOD,
        description=(
            "The reward model adds the SFT ancestor's mean response log-likelihood, its weight learned with the head: "
            "what tells a right answer from a wrong one said alike."
        ),
    )
    use_rewrites: bool = Field(
        True,
        description="A rewrite is a preference: the rewrite over the response it rewrote and every response rated "
        "bad. The reward model and DPO train on those pairs too (counted apart in the report).",
    )
    lora_r: int = Field(
        0,
        ge=0,
        le=LORA_RANK_MAX,
        description="LoRA rank of every trained model (reward, PPO/DPO policy, rejection sampling's SFT): each trains "
        "a peft adapter on its frozen base, and the PPO/DPO reference is the base with the adapter off. 0 = train "
        "every weight. A stage's own lora_r wins.",
    )
    train_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Processes each training stage runs on (torchrun; the global batch stays the same). Unset: the "
        "deployment's RLHF_TRAIN_PROCESSES.",
    )
    policy_init: Literal["current", "sft"] = Field("current", description="The policy the round tunes.")
    reference: Literal["sft", "current"] = Field("sft", description="The policy the KL penalty keeps it close to.")
    # trainer flags per stage (on top of STAGE_DEFAULTS)
    reward: dict[str, Any] = Field(default_factory=dict)
    ppo: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    rs: dict[str, Any] = Field(default_factory=dict, description="best-of-n flags (algo rs).")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT flags on the best samples (algo rs).")
    # evaluation
    eval_prompts: int = Field(64, ge=1, description="Eval-split prompts used to compare the policies.")
    eval_max_new_tokens: int = Field(32, ge=1)
    eval_temperature: float = Field(0.7, ge=TEMPERATURE_MIN)
    eval_samples: int = Field(
        1,
        ge=1,
        le=16,
        description="Samples per eval prompt and policy: the win-rate's standard error falls with their square root.",
    )
    baseline: Literal["current", "sft"] = Field("current", description="The policy the new one is compared with.")
    promote_margin_se: float = Field(
        PROMOTE_MARGIN_SE,
        ge=0.0,
        description="The new policy becomes current only if its win-rate under the new reward model beats 50% by "
        "more than this many standard errors, and no reward-hacking check fails; else it waits for promotion by hand.",
    )
    kl_floor: float = Field(
        KL_FLOOR,
        ge=0.0,
        description="Below this KL (per response) from the policy the round started from, it changed almost nothing.",
    )
    verdict_tasks: int = Field(
        32,
        ge=0,
        le=10_000,
        description="After the round, eval prompts answered by the new policy and by the one it was evaluated against, "
        "queued as blind pairwise tasks: the human win-rate beside the reward model's. 0 = none (the round page "
        "can still queue them).",
    )
    report_samples: int = Field(8, ge=0, le=200, description="Eval prompts shown before/after on the report.")
    gold_judge: str = Field(
        "",
        description="module:function (prompt, response) -> float, e.g. "
        "trainer.world.judge:score on the embedded world.",
    )
    flagged_tasks: int = Field(
        DEFAULT_FLAGGED_TASKS,
        ge=0,
        le=1000,
        description="When a reward-hacking check fails, the new policy's answers to train prompts that it points "
        "at become pairwise tasks (new answer against the old one) offered before every other task, at most this "
        "many a round; 0 = none.",
    )
    next_tasks: NextTasks = Field(default_factory=NextTasks)
    note: str = Field("", max_length=500, description="Why the round was started (e.g. the schedule's trigger).")

    @field_validator("gold_judge")
    @classmethod
    def _judge_spec(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("py:"):
            value = value[3:]
        if value and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError("gold_judge must look like module:function")
        return value

    def processes(self, deployment: int) -> int:
        """Processes each training stage runs on: the round's own count, else the deployment's setting."""
        return self.train_processes or deployment

    def stage_flags(self, stage: str, *, prompts: int | None = None, pairs: int | None = None) -> dict[str, Any]:
        """The flags the round gives this stage's trainer (the trainer's defaults fill in the rest); with the data's
        size, the sized lengths too (sized_flags)."""
        sized = {} if prompts is None or pairs is None else self.sized_flags(stage, prompts=prompts, pairs=pairs)
        lora = {"lora_r": self.lora_r} if self.lora_r and stage in LORA_STAGES else {}
        return {**STAGE_DEFAULTS[stage], **{k: v.value for k, v in sized.items()}, **lora, **getattr(self, stage)}

    def sized_flags(self, stage: str, *, prompts: int, pairs: int) -> dict[str, SizedFlag]:
        """data_sized_flags for this round's stage, unless the round sets the stage's length itself."""
        given = getattr(self, stage)
        if LENGTH_FLAGS & set(given):
            return {}
        batch_size = given.get("batch_size", stage_defaults(stage).get("batch_size", 16))
        return data_sized_flags(stage, prompts=prompts, pairs=pairs, batch_size=int(batch_size))


def parse_round_config(raw: dict[str, Any] | None) -> RoundConfig:
    """Validate a round config (form, CLI options, job config); RoundError names the bad field."""
    try:
        config = RoundConfig.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise RoundError(f"{where}: {first['msg']}") from None
    check_round_flags(config)
    return config


def merge_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`; groups of settings (dicts in both) merge key by key."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_config(out[key], value) if both else value
    return out


def as_round_config(config: dict[str, Any] | RoundConfig | None) -> RoundConfig:
    """A round config checked whole: a dict is parsed; a model (an API body) has its stage flags checked."""
    if isinstance(config, RoundConfig):
        check_round_flags(config)
        return config
    return parse_round_config(config)


def check_round_flags(config: RoundConfig) -> None:
    for stage in ("reward", *ALGO_STAGES[config.algo]):
        check_stage_flags(stage, getattr(config, stage))


def trainer_config_class(stage: str) -> type:
    module, name = STAGE_CONFIG_CLASSES[stage]
    return getattr(importlib.import_module(module), name)


def stage_defaults(stage: str) -> dict[str, Any]:
    """Every flag of a stage with the value a round runs it with (shown on the start form)."""
    try:
        cls = trainer_config_class(stage)
    except ModuleNotFoundError:
        return dict(STAGE_DEFAULTS[stage])
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    return {**defaults, **STAGE_DEFAULTS[stage]}


def check_stage_flags(stage: str, flags: dict[str, Any]) -> None:
    """The trainer's own config loader judges the flags (names, types, choices), so a bad one is refused at
    start, not minutes later in the worker."""
    from trainer.config import UsageError, load_config

    reserved = sorted(set(flags) & RESERVED_FLAGS[stage])
    if reserved:
        raise RoundError(f"{stage}: {', '.join(reserved)} are set by the round itself")
    try:
        cls = trainer_config_class(stage)
    except ModuleNotFoundError:
        raise RoundError(f"the trainer has no {stage} stage in this installation") from None
    placeholders = {f: "x" for f in RESERVED_FLAGS[stage] if f not in ("seed", "resume")}
    try:
        load_config(cls, None, {**STAGE_DEFAULTS[stage], **flags, **placeholders})
    except UsageError as exc:
        raise RoundError(f"{stage}: {exc}") from None
