"""`python -m trainer ppo`: RLHF with PPO, by the book (InstructGPT; "The N+ implementation details of RLHF").

Four models: the policy (trained), a value model (trained; initialised from the reward model), a frozen
reference policy and the frozen reward model (trainer.reward_scoring). One step:

  1. rollout   sample one response per prompt of a batch with the KV-cache sampler (trainer.sampling);
               responses end at the first EOS.
  2. score     logprobs of the policy (old) and the reference, values, and the RM score at the last real
               token. Logprobs come from the logits at t-1 divided by the rollout temperature. Responses with
               no EOS score below every finished one (penalise_missing_eos). With one minibatch per epoch,
               the policy and value forwards keep their graph: the first update (same parameters, same rows)
               backpropagates through them instead of running them again.
  3. reward    per token: -kl_coef * KL(t) (k1 or k3), plus the score at the response's last token.
  4. GAE       γ=1, λ=0.95; advantages whitened over the batch's response tokens.
  5. update    ppo_epochs × shuffled minibatches (× microbatches): clipped ratio loss + vf_coef × clipped value
               loss, token-mean over the minibatch (so microbatch size does not change the gradient),
               gradient-norm clipping, AdamW(eps 1e-5), LR decaying linearly to 0. An update stops early
               (before its optimizer step) when the minibatch's approx-KL exceeds `approxkl_stop`.

Checkpoints: after every `checkpoint_every` steps the whole state (policy, value model, optimizer, scheduler,
KL coefficient, RNG states, step and the metrics written so far) goes to `OUT.ckpt/state.pt` (atomic
replace). `--resume OUT.ckpt` continues a killed run; rollout seeds and minibatch orders derive from
(seed, step), so the resumed run produces the same numbers as an uninterrupted one. The checkpoint dir is
removed when the run completes (unless --keep-checkpoint).

Dropout is off in all four models (they stay in eval mode; gradients still flow).

Distributed (torchrun / accelerate launch, WORLD_SIZE > 1): each process samples and scores the rollouts of its
share of a step's prompts (prompts[rank::world]); the missing-EOS floor and the whitening of advantages (and of
rewards) are taken over the global batch (the processes all-gather the per-row numbers), and every minibatch is the
same global rows as on one process, each process running its own rows of it under one DDP wrapper of policy and
value (a zero-weight filler row where it holds none, so that every process meets each all-reduce). Losses are
normalised by the minibatch's global token count, so the update equals one process's; rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer.adapters import LoraFields, add_lora, lora_enabled, reference_model, save_model, trainable_model
from trainer.config import TrainConfig, UsageError, config_to_dict
from trainer.context_fit import SKIPPED_METRIC, prompt_limit
from trainer.distributed import (
    NoOutput,
    all_reduce_sum,
    ddp,
    dist_info,
    end_process_group,
    gather_rows,
    process_device,
    sync_on_last,
)
from trainer.logprobs import kl_estimate, response_logprobs
from trainer.masks import masked_whiten, pad_sequences, response_mask_after_eos
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, progress, save_trainer_config
from trainer.prompt_data import load_prompts
from trainer.reward_scoring import RewardScorer, load_reward_model, load_reward_scorer
from trainer.runtime import (
    autocast,
    check_same_tokenizer,
    checkpoint_activations_,
    linear_decay,
    load_causal_lm,
    load_tokenizer,
    model_context,
    resolve_device,
    seed_everything,
    total_steps_for,
    use_fast_kernels_,
    weight_dtype,
)
from trainer.sampling import derive_seed, make_generator, sample_prompts


@dataclass(kw_only=True)
class PPOConfig(LoraFields, TrainConfig):
    policy: str = field(metadata={"help": "Causal LM to tune (usually the SFT model)."})
    reward_model: str = field(metadata={"help": "Reward model directory (from `trainer reward`)."})
    prompts: str = field(metadata={"help": 'Prompts JSONL: {"prompt_id"?, "prompt" | "messages"}.'})
    out: str = field(metadata={"help": "Output directory for the tuned policy."})
    ref: str = field(default="", metadata={"help": "Frozen reference policy (default: --policy)."})
    value_model: str = field(default="", metadata={"help": "Value model init (default: --reward-model)."})
    resume: str = field(default="", metadata={"help": "Checkpoint dir (OUT.ckpt) of a killed run to continue."})
    lr: float = field(default=3e-6, metadata={"help": "Peak learning rate (TRL default 3e-6)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts (episodes) per rollout batch = per step."})
    num_minibatches: int = field(default=1, metadata={"help": "Minibatches per PPO epoch."})
    micro_batch_size: int = field(default=0, metadata={"help": "Rows per forward (grad accumulation); 0 = minibatch."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    max_new_tokens: int = field(default=32, metadata={"help": "Response length limit."})
    temperature: float = field(default=0.7, metadata={"help": "Rollout temperature (logprobs use it too)."})
    top_k: int = field(default=0, metadata={"help": "Rollout top-k (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Rollout top-p (1.0 = off)."})
    kl_coef: float = field(
        default=0.05, metadata={"help": "β of the per-token KL penalty (initial value if adaptive)."}
    )
    kl_estimator: str = field(
        default="k1", metadata={"help": "KL estimator: k1 (log ratio) or k3 (non-negative).", "choices": ["k1", "k3"]}
    )
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt β towards --target-kl (Ziegler et al.)."})
    target_kl: float = field(default=6.0, metadata={"help": "Target KL per sequence for the adaptive controller."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (episodes) of the adaptive controller."})
    missing_eos_penalty: float = field(
        default=1.0,
        metadata={
            "help": "A response with no EOS scores this much below the batch's lowest finished response (0 = off)."
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards (off by default)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping."})
    adam_eps: float = field(default=1e-5, metadata={"help": "Adam epsilon."})
    lr_decay: bool = field(default=True, metadata={"help": "Decay the LR linearly to 0 over the run."})
    approxkl_stop: float = field(
        default=1.0,
        metadata={"help": "Stop a step's remaining updates when a minibatch's approx-KL exceeds this (0 = never)."},
    )
    checkpoint_every: int = field(default=1, metadata={"help": "Write OUT.ckpt every N steps (0 = never)."})
    keep_checkpoint: bool = field(default=False, metadata={"help": "Keep OUT.ckpt after the run completes."})


# ----------------------------------------------------------------------------- pure math


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens. rewards/values/mask [B, R] -> (advantages, returns).

    Positions outside `mask` have value 0 and reward 0, so the value after the last real token is 0
    (the episode ends there)."""
    m = mask.to(rewards.dtype)
    rewards, values = rewards * m, values * m
    B, R = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    returns = advantages + values
    return advantages * m, returns


def policy_loss_terms(new_logprobs, old_logprobs, advantages, mask, cliprange: float):
    """Clipped surrogate, summed over masked tokens. -> (loss_sum, clipped_count, ratio [B, R])."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    m = mask.to(ratio.dtype)
    loss_sum = (torch.maximum(unclipped, clipped) * m).sum()
    clipped_count = ((clipped > unclipped).to(ratio.dtype) * m).sum()
    return loss_sum, clipped_count, ratio


def value_loss_terms(values, old_values, returns, mask, cliprange_value: float):
    """0.5 × max(unclipped, clipped) squared error, summed over masked tokens. -> (loss_sum, clipped_count)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    m = mask.to(values.dtype)
    loss_sum = 0.5 * (torch.maximum(err, err_clipped) * m).sum()
    clipped_count = ((err_clipped > err).to(values.dtype) * m).sum()
    return loss_sum, clipped_count


class AdaptiveKLController:
    """β_{t+1} = β_t (1 + clip(KL/target - 1, ±0.2) · n/horizon) (Ziegler et al. 2019)."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon


def penalise_missing_eos(scores: torch.Tensor, finished: torch.Tensor, penalty: float) -> torch.Tensor:
    """A response cut at --max-new-tokens earns no reward ("N implementation details of RLHF": the score of a
    response without EOS is replaced by a low constant): its score becomes the lowest score of the batch's finished
    responses (or its own, if lower) minus `penalty`, so whatever the reward model's scale, no truncated response
    scores above a finished one. penalty 0 = off. scores, finished [B] -> [B]."""
    if penalty <= 0 or bool(finished.all()):
        return scores
    floor = scores[finished].min() if bool(finished.any()) else scores.min()
    return torch.where(finished, scores, torch.minimum(scores, floor) - penalty)


# ----------------------------------------------------------------------------- model passes


def response_values(value_scorer: RewardScorer, ids: torch.Tensor, mask: torch.Tensor, prompt_width: int):
    """V(state before each response token): the value head at positions P-1 .. P+R-2. -> [B, R]."""
    return value_scorer.token_values(ids, mask)[:, prompt_width - 1 : -1]


@dataclass
class Rollout:
    ids: torch.Tensor  # [B, P+R] left-padded prompt + response (PAD after EOS)
    mask: torch.Tensor  # [B, P+R] attention mask
    response_mask: torch.Tensor  # [B, R] real response tokens (through the first EOS)
    prompt_width: int  # P
    old_logprobs: torch.Tensor  # [B, R]
    ref_logprobs: torch.Tensor  # [B, R]
    values: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B] RM score after the missing-EOS penalty
    lengths: torch.Tensor  # [B] response tokens incl. EOS
    finished: torch.Tensor  # [B] produced an EOS
    advantages: torch.Tensor | None = None  # [B, R]
    returns: torch.Tensor | None = None  # [B, R]
    kl: torch.Tensor | None = None  # [B, R] per-token KL estimate (0 outside the response)
    banned_token: int | None = None  # PAD: never sampled, so outside every distribution (see response_logprobs)
    # (logprobs [B, R], entropy [B, R], values [B, R]) of the whole batch WITH their autograd graph, from the scoring
    # pass: the update's first minibatch, when it is the whole batch, starts from the same parameters and so would
    # compute exactly these numbers again; it uses them instead (two fewer forwards per step). Used once.
    first_forward: tuple | None = None

    def rows(self, idx: torch.Tensor) -> Rollout:
        """The rollout restricted to rows idx, its padding trimmed to the longest remaining response."""
        width = int(self.lengths[idx].max())
        P = self.prompt_width
        pick = lambda t: None if t is None else t[idx][:, :width]  # noqa: E731
        return Rollout(
            self.ids[idx][:, : P + width],
            self.mask[idx][:, : P + width],
            pick(self.response_mask),
            P,
            pick(self.old_logprobs),
            pick(self.ref_logprobs),
            pick(self.values),
            self.scores[idx],
            self.lengths[idx],
            self.finished[idx],
            pick(self.advantages),
            pick(self.returns),
            pick(self.kl),
            self.banned_token,
        )


def policy_value_forward(
    policy,
    value_scorer: RewardScorer,
    ids: torch.Tensor,
    mask: torch.Tensor,
    prompt_width: int,
    temperature: float,
    banned_token: int | None,
):
    """The two trained models on ids/mask [B, P+R]: (logprobs [B, R], entropy [B, R], values [B, R])."""
    new_lp, entropy = response_logprobs(
        policy, ids, mask, prompt_width, temperature, with_entropy=True, banned_token=banned_token
    )
    return new_lp, entropy, response_values(value_scorer, ids, mask, prompt_width)


class PolicyValue(torch.nn.Module):
    """The two trained models as one module whose forward is policy_value_forward: what DistributedDataParallel
    wraps (it syncs the gradients of the parameters a forward through it used; the value head's token_values is
    no forward of its own)."""

    def __init__(self, policy, value_scorer: RewardScorer):
        super().__init__()
        self.policy, self.value = policy, value_scorer

    def forward(self, ids, mask, prompt_width: int, temperature: float, banned_token: int | None):
        return policy_value_forward(self.policy, self.value, ids, mask, prompt_width, temperature, banned_token)


def ppo_minibatch_loss(
    policy, value_scorer: RewardScorer, rb: Rollout, cfg: PPOConfig, n_tokens: float, forward: tuple | None = None
):
    """Loss of one (micro)batch normalised by the minibatch's token count `n_tokens`, and its sums for stats.

    forward: the batch's policy_value_forward, when already computed (Rollout.first_forward)."""
    new_lp, entropy, vpred = forward or policy_value_forward(
        policy, value_scorer, rb.ids, rb.mask, rb.prompt_width, cfg.temperature, rb.banned_token
    )
    m = rb.response_mask
    pg_sum, pg_clipped, ratio = policy_loss_terms(new_lp, rb.old_logprobs, rb.advantages, m, cfg.cliprange)
    vf_sum, vf_clipped = value_loss_terms(vpred, rb.values, rb.returns, m, cfg.cliprange_value)
    loss = (pg_sum + cfg.vf_coef * vf_sum) / n_tokens
    with torch.no_grad():
        mf = m.float()
        log_ratio = (new_lp - rb.old_logprobs) * mf
        stats = {
            "pg_loss": float(pg_sum),
            "vf_loss": float(vf_sum),
            "pg_clipped": float(pg_clipped),
            "vf_clipped": float(vf_clipped),
            "approxkl": float(0.5 * (log_ratio**2).sum()),
            "entropy": float((entropy * mf).sum()),
            "ratio": float((ratio * mf).sum()),
            "ratio_sq": float((ratio**2 * mf).sum()),
        }
    return loss, stats


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.ckpt"


def save_checkpoint(ckpt: Path, state: dict) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / "state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, ckpt / "state.pt")  # a kill mid-save leaves the previous checkpoint intact


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


_RESUME_IGNORED = {"resume", "keep_checkpoint", "checkpoint_every", "device"}


def load_checkpoint(ckpt: str | Path, config: PPOConfig) -> dict:
    path = Path(ckpt) / "state.pt"
    if not path.is_file():
        raise UsageError(f"{ckpt}: no PPO checkpoint (state.pt) there")
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved, now = state["config"], config_to_dict(config)
    diff = sorted(k for k in now if k not in _RESUME_IGNORED and saved.get(k) != now[k])
    if diff:
        raise UsageError(f"{ckpt}: checkpoint was made with different settings: {', '.join(diff)}")
    return state


# ----------------------------------------------------------------------------- training


def train_ppo(config: PPOConfig, *, on_metrics: Callable[[dict], None] | None = None) -> Path:
    rank, world = dist_info()
    device = process_device(resolve_device(config.device), world)
    seed_everything(config.seed)
    if config.batch_size < config.num_minibatches:
        raise UsageError("--batch-size must be at least --num-minibatches")
    tok = load_tokenizer(config.policy)
    check_same_tokenizer(tok, load_tokenizer(config.reward_model), "--reward-model", against="the policy")
    dtype = weight_dtype(config.precision)
    load = lambda p: load_causal_lm(p, device, tokenizer=tok, dtype=dtype)  # noqa: E731  eval mode: dropout off
    policy, peft_model = trainable_model(config.policy, config, load, task="CAUSAL_LM")
    context = model_context(policy)
    if config.max_new_tokens >= context:
        raise UsageError(f"--max-new-tokens {config.max_new_tokens} leaves no room in the {context}-token context")
    skipped: list[int] = []  # prompts that leave less than --max-new-tokens of the context (trainer.context_fit)
    prompts = load_prompts(
        config.prompts, tok, max_prompt_tokens=prompt_limit(context, config.max_new_tokens), skipped=skipped
    )
    # under LoRA the reference is the policy's own weights with the adapter switched off: no second copy
    ref = reference_model(config, config.policy, peft_model, load)
    reward = load_reward_scorer(config.reward_model, tok, device, dtype=dtype).requires_grad_(False)
    value_init = load_reward_model(config.value_model or config.reward_model, tok, device, dtype=dtype)
    if lora_enabled(config):  # the value model too: a frozen backbone under an adapter, its head trained in full
        value_init = add_lora(value_init, config, task="SEQ_CLS", modules_to_save=["score"]).get_base_model()
    value = RewardScorer(value_init)
    reward_lm = [reward.likelihood.lm] if reward.likelihood is not None else []
    for m in (policy, ref, reward.model, *reward_lm, value.model):
        use_fast_kernels_(m, device, config.precision)
    # the two trained models; the rollout samples under no_grad, where layers keep their KV cache
    for m in (policy, value.model):
        checkpoint_activations_(m, config.gradient_checkpointing)
    params = [p for p in list(policy.parameters()) + list(value.parameters()) if p.requires_grad]
    trained = ddp(PolicyValue(policy, value), device, world) if world > 1 else None
    # fused: one kernel over all tensors instead of ~10 ops per parameter tensor (≈200 tensors here)
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, eps=config.adam_eps, weight_decay=0.0, fused=device.type in ("cpu", "cuda")
    )

    steps_per_epoch = math.ceil(len(prompts) / config.batch_size)
    total_steps = total_steps_for(epochs=config.epochs, batches_per_epoch=steps_per_epoch, max_steps=config.max_steps)
    scheduler = linear_decay(optimizer, total_steps, enabled=config.lr_decay)
    kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
    ckpt = checkpoint_dir(config.out)
    past_metrics: list[dict] = []
    start_step = 0
    if config.resume:
        state = load_checkpoint(config.resume, config)
        policy.load_state_dict(state["policy"])
        value.load_state_dict(state["value"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        kl_ctl.value = state["kl_coef"]
        set_rng_state(state["rng"])
        start_step, past_metrics = state["step"], state["metrics"]
        ckpt = Path(config.resume)

    with atomic_output_dir(config.out) if rank == 0 else NoOutput() as tmp:
        log = bar = None
        if rank == 0:
            # a resumed run starts its file with the checkpoint's lines: it ends equal to the uninterrupted run's
            (tmp / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in past_metrics))
            log = MetricsLog(tmp / "metrics.jsonl", on_metrics)
            bar = progress(total=total_steps, desc="ppo")
            bar.update(start_step)
        for step in range(start_step, total_steps):
            batch = prompt_batch(prompts, step, steps_per_epoch, config)
            # this process's prompts; a share left empty by a short last batch samples batch[0] as a filler
            share = batch[rank::world]
            rollout = make_rollout(
                policy, ref, reward, value, tok, share or batch[:1], step, config, kl_ctl.value, device,
                rank=rank, world=world, real=len(share),
            )  # fmt: skip
            stats = ppo_update(
                policy, value, optimizer, params, rollout, step, config, device,
                trained=trained, rank=rank, world=world, real=len(share),
            )  # fmt: skip
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            metrics = rollout_metrics(global_rollout(rollout, len(share), world), config, kl_ctl.value)
            metrics.update(stats, lr=lr, episode=episodes_done(step, steps_per_epoch, len(prompts), config.batch_size))
            metrics[SKIPPED_METRIC] = len(skipped)
            if step + 1 == total_steps:
                metrics.update(peak_memory(device))
            if config.adaptive_kl:
                kl_ctl.update(metrics["objective/kl"], len(batch))
            if log is None:
                continue
            past_metrics.append(log.log(step + 1, total_steps, **metrics))
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < total_steps:
                save_checkpoint(
                    ckpt,
                    {
                        "step": step + 1,
                        "policy": policy.state_dict(),
                        "value": value.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "kl_coef": kl_ctl.value,
                        "rng": rng_state(),
                        "metrics": past_metrics,
                        "config": config_to_dict(config),
                    },
                )
            bar.update(1)
        if log is not None:
            bar.close()
            log.close()
            save_model(policy, peft_model, tmp)
            tok.save_pretrained(tmp)
            save_trainer_config(tmp, "ppo", config)
    del trained  # the DDP wrapper goes before the process group (trainer.distributed.end_process_group)
    end_process_group(world)
    if rank == 0 and not config.keep_checkpoint and ckpt.is_dir():
        shutil.rmtree(ckpt, ignore_errors=True)
    return Path(config.out)


def episodes_done(step: int, steps_per_epoch: int, n_prompts: int, batch_size: int) -> int:
    """Episodes (rollouts) generated up to and including `step`."""
    epoch, i = divmod(step, steps_per_epoch)
    return epoch * n_prompts + min((i + 1) * batch_size, n_prompts)


def prompt_batch(prompts, step: int, steps_per_epoch: int, cfg: PPOConfig) -> list[tuple[str, list[int]]]:
    """The prompts of a step: a per-epoch shuffle seeded by (seed, epoch), so any step can be rebuilt on resume."""
    epoch, i = divmod(step, steps_per_epoch)
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(cfg.seed * 1000003 + epoch))
    return [prompts[j] for j in order[i * cfg.batch_size : (i + 1) * cfg.batch_size].tolist()]


@torch.no_grad()
def make_rollout(
    policy,
    ref,
    reward: RewardScorer,
    value: RewardScorer,
    tok,
    batch,
    step: int,
    cfg: PPOConfig,
    kl_coef: float,
    device,
    *,
    rank: int = 0,
    world: int = 1,
    real: int | None = None,
) -> Rollout:
    """The rollout of `batch`: this process's share of the step's prompts, the first `real` of them real (the rest
    a filler, when the share is empty); batch-wide figures over the global batch (trainer.distributed.gather_rows)."""
    real = len(batch) if real is None else real
    prompt_ids, prompt_mask = pad_sequences([ids for _, ids in batch], pad_token_id=tok.pad_token_id, side="left")
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)  # [B, P]
    P = prompt_ids.shape[1]
    gens = [make_generator(derive_seed(cfg.seed, f"ppo-step-{step}:{pid}", 0)) for pid, _ in batch]
    out = sample_prompts(policy, tok, prompt_ids, prompt_mask, cfg, gens)
    width = max(int(out.lengths.max()), 1)
    response = out.tokens[:, :width].to(device)  # [B, R]
    response_mask = response_mask_after_eos(response, tok.eos_token_id, tok.pad_token_id)
    response_mask &= torch.arange(width, device=device)[None] < out.lengths.to(device)[:, None]
    ids = torch.cat([prompt_ids, response], dim=1)  # [B, P+R]
    mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
    banned = tok.pad_token_id if tok.pad_token_id != tok.eos_token_id else None
    # the update's first minibatch is this whole batch at these parameters: keep the graph for it
    # (not under DDP: the update's forwards must go through the wrapper, whose backward all-reduces)
    keep_graph = (
        world == 1 and cfg.ppo_epochs > 0 and cfg.num_minibatches == 1 and cfg.micro_batch_size in (0, len(batch))
    )
    with autocast(device, cfg.precision), torch.set_grad_enabled(keep_graph):
        first_forward = policy_value_forward(policy, value, ids, mask, P, cfg.temperature, banned)
    old_lp, values = first_forward[0].detach(), first_forward[2].detach().float()
    with autocast(device, cfg.precision):
        ref_lp = response_logprobs(ref, ids, mask, P, cfg.temperature, banned_token=banned)
        # [B] at the last real token (the EOS when there is one); prompts are left-padded to P
        scores = reward(ids, mask, prompt_mask.sum(-1)).float()
    finished = out.finished.to(device)
    scores = across_batch(
        lambda g: penalise_missing_eos(g["scores"], g["finished"], cfg.missing_eos_penalty),
        {"scores": scores, "finished": finished},
        rank=rank,
        world=world,
        real=real,
    )
    m = response_mask
    kl = kl_estimate(old_lp, ref_lp, cfg.kl_estimator) * m  # [B, R]
    rewards = -kl_coef * kl
    last = out.lengths.to(device) - 1  # [B] index of the final response token
    rewards[torch.arange(len(batch), device=device), last] += scores
    spread = dict(rank=rank, world=world, real=real)
    if cfg.whiten_rewards:
        rewards = across_batch(
            lambda g: masked_whiten(g["x"], g["m"], shift_mean=False), {"x": rewards, "m": m}, **spread
        )
        rewards = rewards * m
    values = values * m
    advantages, returns = compute_gae(rewards, values, m, cfg.gamma, cfg.lam)
    advantages = across_batch(lambda g: masked_whiten(g["x"], g["m"]), {"x": advantages, "m": m}, **spread) * m
    return Rollout(
        ids,
        mask,
        m,
        P,
        old_lp * m,
        ref_lp * m,
        values,
        scores,
        out.lengths.to(device),
        finished,
        advantages,
        returns,
        kl,
        banned,
        first_forward=first_forward if keep_graph else None,
    )


def across_batch(fn, tensors: dict[str, torch.Tensor], *, rank: int, world: int, real: int) -> torch.Tensor:
    """fn over the GLOBAL batch's rows of `tensors` (this process holds rows rank, rank + world, ...; its first
    `real` rows are real), as one process computes it over the whole batch; -> this process's rows of the result
    (a filler's rows: fn's result unchanged on one process, the input's first tensor under several)."""
    if world <= 1:
        return fn(tensors)
    first = next(iter(tensors.values()))
    whole = fn(gather_rows({k: v[:real] for k, v in tensors.items()}, world))
    if real == 0:
        return first
    mine = whole[rank::world]
    return mine[:, : first.shape[1]] if first.dim() >= 2 else mine


def global_rollout(r: Rollout, real: int, world: int) -> Rollout:
    """The figures rollout_metrics reads, of the global batch (all processes' real rows, in batch order)."""
    if world <= 1:
        return r
    fields = ("response_mask", "old_logprobs", "values", "scores", "lengths", "finished", "returns", "kl")
    rows = gather_rows({f: getattr(r, f)[:real] for f in fields}, world)
    return dataclasses.replace(r, first_forward=None, **rows)


def ppo_update(
    policy,
    value,
    optimizer,
    params,
    rollout: Rollout,
    step: int,
    cfg: PPOConfig,
    device,
    *,
    trained=None,
    rank: int = 0,
    world: int = 1,
    real: int | None = None,
) -> dict:
    """ppo_epochs × minibatches × microbatches; returns TRL-named averages over the updates that ran.

    Under DDP (`trained`, the PolicyValue wrapper): minibatches are drawn over the global batch; this process
    runs its own rows of each (the first `real` rows of its rollout are global rows rank, rank + world, ...)."""
    real = rollout.ids.shape[0] if real is None else real
    row_tokens = gather_rows({"t": rollout.response_mask[:real].sum(1).cpu()}, world)["t"]  # [B] global
    B = len(row_tokens)
    g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    mb_size = math.ceil(B / cfg.num_minibatches)
    sums = dict.fromkeys(
        (
            "pg_loss",
            "vf_loss",
            "pg_clipped",
            "vf_clipped",
            "approxkl",
            "entropy",
            "ratio",
            "ratio_sq",
            "tokens",
            "grad_norm",
            "updates",
        ),
        0.0,
    )
    early_stop = 0.0
    for _epoch in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=g)
        for start in range(0, B, mb_size):
            mb_idx = perm[start : start + mb_size].tolist()
            n_tokens = float(row_tokens[mb_idx].sum().clamp(min=1))
            # this process's rows of the minibatch; every process runs as many microbatches as the busiest one
            counts = [sum(i % world == r for i in mb_idx) for r in range(world)]
            mine = [i // world for i in mb_idx if i % world == rank]
            micro = cfg.micro_batch_size or max(counts)
            n_micro = max(math.ceil(c / micro) for c in counts)
            mb_stats = dict.fromkeys(
                ("pg_loss", "vf_loss", "pg_clipped", "vf_clipped", "approxkl", "entropy", "ratio", "ratio_sq"), 0.0
            )
            for k in range(n_micro):
                rows = mine[k * micro : (k + 1) * micro]
                forward, rollout.first_forward = rollout.first_forward, None  # only the first update may use it
                # its rows are in batch order, not the minibatch's shuffled order: the same sums
                rb = rollout if forward is not None else rollout.rows(torch.tensor(rows or [0], device=device))
                with sync_on_last(trained, k, n_micro, world), autocast(device, cfg.precision):
                    if trained is not None:
                        forward = trained(rb.ids, rb.mask, rb.prompt_width, cfg.temperature, rb.banned_token)
                    loss, st = ppo_minibatch_loss(policy, value, rb, cfg, n_tokens, forward)
                    # a filler (no rows of this minibatch here) weighs nothing; DDP averages over processes: × world
                    (loss * (world if rows else 0.0)).backward()
                if rows:
                    for key, v in st.items():
                        mb_stats[key] += v
            mb_stats = dict(zip(mb_stats, all_reduce_sum(list(mb_stats.values()), world)))
            approxkl = mb_stats["approxkl"] / n_tokens
            if cfg.approxkl_stop and approxkl > cfg.approxkl_stop:
                # the policy moved too far from the rollout policy: drop this step's gradient and stop
                optimizer.zero_grad(set_to_none=True)
                early_stop = 1.0
                break
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in mb_stats.items():
                sums[k] += v
            sums["tokens"] += n_tokens
            sums["grad_norm"] += float(grad_norm)
            sums["updates"] += 1
        if early_stop:
            break
    n, u = max(sums["tokens"], 1.0), max(sums["updates"], 1.0)
    ratio_mean = sums["ratio"] / n
    return {
        "policy/approxkl_avg": sums["approxkl"] / n,
        "policy/clipfrac_avg": sums["pg_clipped"] / n,
        "policy/entropy_avg": sums["entropy"] / n,
        "loss/policy_avg": sums["pg_loss"] / n,
        "loss/value_avg": sums["vf_loss"] / n,
        "val/clipfrac_avg": sums["vf_clipped"] / n,
        "val/ratio": ratio_mean,
        "val/ratio_var": sums["ratio_sq"] / n - ratio_mean**2,
        "grad_norm": sums["grad_norm"] / u,
        "policy/updates": sums["updates"],
        "policy/early_stop": early_stop,
    }


def rollout_metrics(r: Rollout, cfg: PPOConfig, kl_coef: float) -> dict:
    m = r.response_mask.float()
    kl_seq = r.kl.sum(1)
    non_score = (-kl_coef * r.kl).sum(1)
    lengths = r.lengths.float()
    scores = r.scores.float()
    returns_var = float(torch.var(r.returns[m.bool()])) if m.sum() > 1 else 0.0
    resid_var = float(torch.var((r.returns - r.values)[m.bool()])) if m.sum() > 1 else 0.0
    corr = 0.0
    if lengths.std() > 0 and scores.std() > 0:
        corr = float(torch.corrcoef(torch.stack([scores, lengths]))[0, 1])
    return {
        "objective/kl": float(kl_seq.mean()),
        "objective/entropy": float((-r.old_logprobs * m).sum(1).mean()),
        "objective/non_score_reward": float(non_score.mean()),
        "objective/rlhf_reward": float(scores.mean() + non_score.mean()),
        "objective/scores": float(scores.mean()),
        "reward_std": float(scores.std()) if scores.numel() > 1 else 0.0,
        "val/num_eos_tokens": float(r.finished.sum()),
        "truncated_rate": float((~r.finished).float().mean()),
        "gen_len": float(lengths.mean()),
        "reward_length_corr": corr,
        "val/explained_variance": 1.0 - resid_var / returns_var if returns_var > 0 else 0.0,
        "kl_coef": kl_coef,
    }


def _register() -> None:
    from trainer.cli import register_stage

    register_stage(
        name="ppo",
        config_cls=PPOConfig,
        entry=train_ppo,
        help="Tune a policy with PPO against a reward model under a KL penalty to a reference.",
    )


_register()
