"""Which registry models a round trains from: the current policy, its SFT ancestor, the previous reward model,
and which of them the policy starts from and is held close to (the KL reference)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.registry import JobFailed
from app.models import ModelVersion
from app.services.rounds.config import RoundConfig


@dataclass(frozen=True)
class Lineage:
    current: ModelVersion  # the current policy when the round began
    sft: ModelVersion  # its SFT ancestor
    previous_reward: ModelVersion | None  # the current reward model, when the new one starts from it
    start: ModelVersion  # the policy the round tunes
    reference: ModelVersion  # the KL reference

    @property
    def reward_init(self) -> ModelVersion:
        """The model the new reward model starts from (and its registry parent)."""
        return self.previous_reward or self.sft


def current_policy(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.kind == "policy", ModelVersion.is_current))


def sft_ancestor(session: Session, model: ModelVersion) -> ModelVersion:
    """The nearest SFT model up the parent chain (the model itself if it is one); else the chain's root."""
    node, seen = model, set()
    while node.stage != "sft" and node.parent_id is not None and node.id not in seen:
        seen.add(node.id)
        parent = session.get(ModelVersion, node.parent_id)
        if parent is None:
            break
        node = parent
    return node


def resolve_lineage(session: Session, cfg: RoundConfig) -> Lineage:
    current = current_policy(session)
    if current is None:
        raise JobFailed("no current policy: register one first")
    sft = sft_ancestor(session, current)
    reward = None
    if cfg.reward_init == "previous":
        reward = session.scalar(select(ModelVersion).where(ModelVersion.kind == "reward", ModelVersion.is_current))
    return Lineage(
        current=current,
        sft=sft,
        previous_reward=reward,
        start=current if cfg.policy_init == "current" else sft,
        reference=sft if cfg.reference == "sft" else current,
    )
