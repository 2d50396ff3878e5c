"""Which models a round trains from: the current policy, its SFT ancestor up the parent chain, the previous reward
model when asked for, and the policy it starts from and the KL reference as the config says."""

from __future__ import annotations

import pytest

from app.jobs.registry import JobFailed
from app.services.rounds import RoundConfig, resolve_lineage
from tests import factories


def test_lineage_follows_the_parent_chain_to_the_sft_model(db):
    base = factories.make_model(db, "base", stage="pretrained")
    sft = factories.make_model(db, "sft", stage="sft")
    sft.parent_id = base.id
    tuned = factories.make_model(db, "policy-r1", stage="rlhf", is_current=True)
    tuned.parent_id = sft.id
    reward = factories.make_model(db, "reward-r1", kind="reward", stage="rlhf", is_current=True)
    db.flush()

    lineage = resolve_lineage(db, RoundConfig())
    assert (lineage.current, lineage.sft, lineage.start, lineage.reference) == (tuned, sft, tuned, sft)
    assert lineage.previous_reward is None and lineage.reward_init == sft

    lineage = resolve_lineage(db, RoundConfig(policy_init="sft", reference="current", reward_init="previous"))
    assert (lineage.start, lineage.reference) == (sft, tuned)
    assert lineage.previous_reward == reward and lineage.reward_init == reward


def test_lineage_needs_a_current_policy(db):
    factories.make_model(db, "sft", stage="sft")
    with pytest.raises(JobFailed, match="no current policy"):
        resolve_lineage(db, RoundConfig())
