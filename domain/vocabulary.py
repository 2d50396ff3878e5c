"""Names the whole product agrees on: roles, task kinds, sources, splits, job states, model kinds and stages,
round algorithms, annotator weightings. Tuples keep the order shown to users (the first is the default where one is
needed)."""

from __future__ import annotations

# A reviewer works the disagreement queue (app.services.review); an admin may review too.
ROLES = ("annotator", "reviewer", "admin")
REVIEW_ROLES = ("reviewer", "admin")

TASK_KINDS = ("pairwise", "ranking", "rating")
# How many responses a task of each kind shows (fewest, most): a pair, a ranking of up to 8, ratings of 1 to 8.
TASK_RESPONSES = {"pairwise": (2, 2), "ranking": (2, 8), "rating": (1, 8)}
# A round's next tasks compare responses: rating tasks are made by hand or by import only.
ROUND_TASK_KINDS = ("pairwise", "ranking")
ASSIGNMENT_STATUSES = ("leased", "done", "skipped")
# How a generation request picks what people label out of more candidates than it shows: at random, by the current
# reward model's uncertainty (Bradley-Terry probability nearest 0.5), or by disagreement between reward models.
SELECTIONS = ("random", "uncertainty", "disagreement")
# Why a round's evaluation flagged a sample of the new policy as possible reward hacking (and made it a task people
# see first): the reward model prefers it but the gold judge prefers the old answer, it grew much longer, it grew
# longer and the reward model paid for it, it repeats itself, it stops at the token limit where the old one ended.
FLAG_REASONS = ("rm_vs_judge", "length_growth", "reward_length", "repetition", "truncation")
# Where a preference pair comes from: an annotator's choice or ranking, or a rewrite (the rewrite over the response
# it rewrote and over every response rated bad).
PAIR_SOURCES = ("choice", "ranking", "rewrite")

# An annotator's qualification (the gold tasks marked for qualification): passed or failed at the threshold, or
# allowed by an admin without passing.
QUALIFICATION_STATUSES = ("passed", "failed", "allowed")

# Who labelled: people, or a judge model (RLAIF). Filters add "all".
SOURCES = ("human", "ai")
SOURCE_FILTERS = ("all", *SOURCES)

SPLITS = ("train", "eval")
SPLIT_FILTERS = (*SPLITS, "all")

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_JOB_STATUSES = ("succeeded", "failed", "cancelled")

MODEL_KINDS = ("policy", "reward")
MODEL_STAGES = ("pretrained", "sft", "rlhf", "imported")
# What a person registers: `imported` is the registry entry the service makes for imported responses.
REGISTERED_STAGES = ("pretrained", "sft", "rlhf")

# How a round tunes the policy: PPO against the reward model, DPO on the pairs, or rejection sampling (best-of-n
# under the reward model, then SFT on the picks).
ROUND_ALGOS = ("ppo", "dpo", "rs")
# How much each annotator's pairs count in the reward model's loss: all alike, by gold accuracy, or by an accuracy
# estimated without gold from overlapped tasks (Dawid-Skene). app/services/annotator_reliability.py.
ANNOTATOR_WEIGHTINGS = ("none", "gold", "dawid_skene")
# Which labels an export or a round takes: the annotators' own (raw), or a task's reviewer's final label in place of
# its human annotations where the task has one (adjudicated). app/services/review.py.
LABEL_SETS = ("raw", "adjudicated")


def one_of(name: str, value: object, allowed: tuple[str, ...]) -> str | None:
    """The message for a value outside its vocabulary, or None when it is in it."""
    if value in allowed:
        return None
    return f"{name} must be one of {', '.join(allowed)}, not {value!r}"
