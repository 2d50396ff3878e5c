"""Whether a round's training steps fit in the GPU memory the deployment declares (RLHF_GPU_MEMORY_GB), checked at
start by the trainer's own estimator (trainer.memory_plan, what `python -m trainer plan` prints), so a round that
cannot fit refuses before any training rather than failing out of memory an hour in."""

from __future__ import annotations

from app.services.rounds.config import ALGO_STAGES, RoundConfig, stage_defaults

# The round's name of each training step -> the plan's
PLAN_STAGES = {"reward": "reward", "ppo": "ppo", "dpo": "dpo", "rs": "best-of-n", "sft": "sft"}


def memory_misfit(cfg: RoundConfig, policy_path: str, gpu_memory_gb: float) -> str | None:
    """None when every step of the round fits on one GPU of `gpu_memory_gb`; else the message saying which does not,
    what it needs and the flags that make it fit."""
    from trainer.config import UsageError
    from trainer.memory_plan import architecture_from_dir, misfit_message, plan_stages, stage_settings

    try:
        arch = architecture_from_dir(policy_path)
    except UsageError as exc:
        return f"cannot plan the round's memory (RLHF_GPU_MEMORY_GB is set): {exc}"
    settings = {}
    for stage in ("reward", *ALGO_STAGES[cfg.algo]):
        flags = {**stage_defaults(stage), **cfg.stage_flags(stage)}
        settings[PLAN_STAGES[stage]] = stage_settings(PLAN_STAGES[stage], flags, context=arch.context)
    plans, fits = plan_stages(arch, settings, gpu_memory_gb)
    if fits:
        return None
    return (
        f"{misfit_message(arch, plans, gpu_memory_gb, 1)}. Set the flags per stage (e.g. --set "
        "ppo.gradient_checkpointing=true), or raise RLHF_GPU_MEMORY_GB if the GPU is larger"
    )
