"""`python -m trainer dpo`: Direct Preference Optimization (Rafailov et al. 2023), the cheaper option to PPO.

loss = -log σ(β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))]), log π summed over
completion tokens. Reads the same preference exports as the reward stage (trainer.preference_data; `trl`
is the usual one; a ranking contributes all its pairs, tie pairs kept with --ties half get target 0.5 as
in conservative DPO; the `margin` column is not used). The reference's logprobs are computed once per
batch, with no gradient (trainer.logprobs), or with --precompute-ref-logprobs once for every pair before training,
after which the reference is freed (TRL's precompute_ref_log_probs): training then holds one model. Both responses
of a pair go through one forward, batched as the reward model batches them (trainer.preference_data.collate_groups).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.adapters import (
    LoraFields,
    lora_enabled,
    reference_model,
    save_model,
    trainable_model,
    trainable_parameters,
)
from trainer.config import TrainConfig, UsageError
from trainer.context_fit import SKIPPED_METRIC, sequence_limit
from trainer.distributed import (
    NoOutput,
    all_reduce_sum,
    ddp,
    dist_info,
    end_process_group,
    fsdp_requested,
    full_state_dict,
    micro_chunks,
    process_device,
    shard,
    sync_on_last,
    whole_value,
)
from trainer.logprobs import completion_logprobs
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, progress, save_trainer_config
from trainer.preference_data import PreferenceGroup, collate_groups, load_preferences, total_weight
from trainer.preference_loss import bradley_terry_loss
from trainer.runtime import (
    autocast,
    checkpoint_activations_,
    epoch_batches,
    linear_decay,
    load_causal_lm,
    load_tokenizer,
    model_dir_context,
    resolve_device,
    seed_everything,
    seeded_permutations,
    total_steps_for,
    use_fast_kernels_,
    weight_dtype,
)


@dataclass(kw_only=True)
class DPOConfig(LoraFields, TrainConfig):
    policy: str = field(metadata={"help": "Causal LM to tune (usually the SFT model)."})
    data: str = field(metadata={"help": "Preference JSONL (trl / trl-conversational; rankings and kto work too)."})
    out: str = field(metadata={"help": "Output directory for the tuned policy."})
    ref: str = field(default="", metadata={"help": "Frozen reference policy (default: --policy)."})
    beta: float = field(default=0.1, metadata={"help": "β: strength of the implicit KL constraint."})
    lr: float = field(default=1e-6, metadata={"help": "Peak learning rate (TRL default 1e-6)."})
    ties: str = field(
        default="exclude",
        metadata={"help": "Tie pairs: exclude, or half = target 0.5.", "choices": ["exclude", "half"]},
    )
    max_length: int = field(
        default=1024, metadata={"help": "Longer sequences are dropped; never past the model's context."}
    )
    micro_batch_size: int = field(default=0, metadata={"help": "Groups per forward; 0 = the whole batch."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping."})
    log_every: int = field(default=1, metadata={"help": "Write a metrics line every N steps."})
    fsdp: bool = field(
        default=False,
        metadata={
            "help": "Under torchrun / accelerate launch: shard the policy (parameters, gradients, AdamW state) and the "
            "reference across the processes (FSDP2) instead of a whole copy on each, for a model larger than one "
            "device. On by itself under `accelerate launch` with an FSDP config."
        },
    )
    precompute_ref_logprobs: bool = field(
        default=False,
        metadata={
            "help": "Score every pair under the reference once before training, then free the reference: training "
            "holds the policy alone (the same losses within float rounding)."
        },
    )


def sequence_logps(model, ids: torch.Tensor, mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """Sum of completion-token logprobs per row. ids/mask [S, T], prompt_lengths [S] -> [S]."""
    lp, completion = completion_logprobs(model, ids, mask, prompt_lengths)  # [S, T-1]
    return (lp * completion).sum(-1)


def dpo_loss(pi_better, pi_worse, ref_better, ref_worse, beta: float, target=None) -> torch.Tensor:
    """Per-pair DPO loss [N]; the Bradley-Terry loss on implicit rewards β (log π - log π_ref)."""
    return bradley_terry_loss(beta * (pi_better - ref_better), beta * (pi_worse - ref_worse), target=target)


@torch.no_grad()
def reference_logps(
    ref, groups: list[PreferenceGroup], pad_token_id: int, micro: int, device, precision: str
) -> list[torch.Tensor]:
    """--precompute-ref-logprobs: the reference's sequence_logps of every group's responses, `micro` groups a
    forward. -> one [S_g] tensor per group (on the CPU), in the order collate_groups lays out its sequences."""
    cached: list[torch.Tensor] = []
    for m in range(0, len(groups), micro):
        chunk = groups[m : m + micro]
        b = collate_groups(chunk, pad_token_id)
        with autocast(device, precision):
            lp = sequence_logps(ref, b.input_ids.to(device), b.attention_mask.to(device), b.prompt_lengths.to(device))
        cached.extend(lp.float().cpu().split([len(g.sequences) for g in chunk]))
    return cached


def _precomputed(ref, groups, tok, micro: int, device: torch.device, config: DPOConfig) -> list[torch.Tensor]:
    """--precompute-ref-logprobs: the reference's log-probs of every group's sequences, computed once; the caller
    drops its reference afterwards."""
    use_fast_kernels_(ref, device, config.precision)
    cached = reference_logps(ref, groups, tok.pad_token_id, micro, device, config.precision)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return cached


def train_dpo(config: DPOConfig, *, on_metrics: Callable[[dict], None] | None = None) -> Path:
    rank, world = dist_info()
    device = process_device(resolve_device(config.device), world)
    seed_everything(config.seed)
    tok = load_tokenizer(config.policy)
    # longer sequences are skipped, never past the policy's context (trainer.context_fit)
    max_length = sequence_limit(model_dir_context(config.policy), config.max_length)
    data = load_preferences(config.data, tok, ties=config.ties, max_length=max_length)
    groups = data.groups
    micro = config.micro_batch_size or config.batch_size
    dtype = weight_dtype(config.precision)
    load = lambda p: load_causal_lm(p, device, tokenizer=tok, dtype=dtype)  # noqa: E731  eval mode: dropout off
    sharded = world > 1 and fsdp_requested(config.fsdp)
    if sharded and lora_enabled(config):
        raise UsageError("--fsdp shards a model trained in full; a LoRA adapter is small enough to copy (drop one)")
    keep = shard if sharded else (lambda m: m)  # sharded, each process holds 1/world of every model
    cached_ref: list[torch.Tensor] | None = None
    if config.precompute_ref_logprobs and not lora_enabled(config):
        # a separate reference scores every pair once and is freed before the policy, its gradients and AdamW exist
        cached_ref = _precomputed(
            keep(load(Path(config.ref or config.policy)).requires_grad_(False)), groups, tok, micro, device, config
        )
    policy, peft_model = trainable_model(config.policy, config, load, task="CAUSAL_LM")
    # under LoRA the reference is the policy's own weights with the adapter switched off: no second copy
    ref = reference_model(config, config.policy, peft_model, load) if cached_ref is None else None
    if config.precompute_ref_logprobs and cached_ref is None:  # under LoRA: once, from the adapter-off policy
        cached_ref, ref = _precomputed(ref, groups, tok, micro, device, config), None
    for m in (policy, ref):
        if m is not None:
            use_fast_kernels_(m, device, config.precision)
    checkpoint_activations_(policy, config.gradient_checkpointing)
    if sharded and ref is not None:
        keep(ref)
    # one process: the policy itself; sharded, the policy is its own wrapper (FSDP2 works in place)
    trained = keep(policy) if sharded else ddp(policy, device, world)
    params = trainable_parameters(policy)  # after sharding: FSDP2 replaces them by their shards
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    batches_per_epoch = math.ceil(len(groups) / config.batch_size)
    total_steps = total_steps_for(epochs=config.epochs, batches_per_epoch=batches_per_epoch, max_steps=config.max_steps)
    scheduler = linear_decay(optimizer, total_steps)

    with atomic_output_dir(config.out) if rank == 0 else NoOutput() as tmp:
        log = MetricsLog(tmp / "metrics.jsonl", on_metrics) if rank == 0 else None
        bar = progress(total=total_steps, desc="dpo") if rank == 0 else None
        step = 0
        for epoch, index in epoch_batches(
            len(groups), config.batch_size, total_steps, seeded_permutations(len(groups), config.seed)
        ):  # each pass reshuffled
            batch_index = index.tolist()
            batch_groups = [groups[i] for i in batch_index]
            batch_weight = max(total_weight(batch_groups), 1e-12)  # the weighted mean over groups (line `weight`)
            s = dict.fromkeys(("loss", "acc", "decided", "rc", "rr", "lc", "lr_", "n"), 0.0)
            # this process's share of the batch (group indices), in microbatches; as many as every other process runs
            chunks = micro_chunks(batch_index, rank=rank, world=world, micro=micro)
            for i, (chunk, real) in enumerate(chunks):
                b = collate_groups([groups[j] for j in chunk], tok.pad_token_id)
                ids, mask = b.input_ids.to(device), b.attention_mask.to(device)
                plens = b.prompt_lengths.to(device)
                if cached_ref is not None:
                    ref_lp = torch.cat([cached_ref[j] for j in chunk]).to(device)  # [S]
                else:
                    with torch.no_grad(), autocast(device, config.precision):
                        ref_lp = sequence_logps(ref, ids, mask, plens).float()  # once per batch
                with sync_on_last(trained, i, len(chunks), world):
                    with autocast(device, config.precision):
                        pi_lp = sequence_logps(trained, ids, mask, plens).float()
                    bi, wi = b.better.to(device), b.worse.to(device)
                    losses = dpo_loss(pi_lp[bi], pi_lp[wi], ref_lp[bi], ref_lp[wi], config.beta, b.target.to(device))
                    w = b.pair_weight.to(device) * real  # a filler (an empty share) weighs nothing
                    # the weighted mean over the GLOBAL batch's groups; DDP averages over processes, hence × world
                    ((losses * w).sum() / batch_weight * world).backward()
                if not real:
                    continue
                with torch.no_grad():
                    rc = config.beta * (pi_lp[bi] - ref_lp[bi])
                    rr = config.beta * (pi_lp[wi] - ref_lp[wi])
                    decided = b.target.to(device) == 1.0
                    s["loss"] += float((losses * w).sum())
                    s["acc"] += float((rc > rr)[decided].sum())
                    s["decided"] += float(decided.sum())
                    s["rc"] += float(rc.sum())
                    s["rr"] += float(rr.sum())
                    s["lc"] += float(pi_lp[bi].sum())
                    s["lr_"] += float(pi_lp[wi].sum())
                    s["n"] += len(bi)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            s = dict(zip(s, all_reduce_sum(list(s.values()), world)))
            if log is not None and (step % config.log_every == 0 or step == total_steps):
                n = max(s["n"], 1)
                log.log(
                    step,
                    total_steps,
                    epoch=epoch,
                    loss=s["loss"] / batch_weight,
                    **{
                        "rewards/chosen": s["rc"] / n,
                        "rewards/rejected": s["rr"] / n,
                        "rewards/accuracies": s["acc"] / max(s["decided"], 1),
                        "rewards/margins": (s["rc"] - s["rr"]) / n,
                        "logps/chosen": s["lc"] / n,
                        "logps/rejected": s["lr_"] / n,
                    },
                    grad_norm=whole_value(grad_norm),
                    lr=lr,
                    **{SKIPPED_METRIC: data.skipped_too_long},
                    **(peak_memory(device) if step == total_steps else {}),
                )
            if bar is not None:
                bar.update(1)
        whole = full_state_dict(policy) if sharded else None  # every process takes part in gathering it
        if log is not None:
            bar.close()
            log.close()
            if whole is not None:
                policy.save_pretrained(str(tmp), state_dict=whole)
            else:
                save_model(policy, peft_model, tmp)
            tok.save_pretrained(tmp)
            save_trainer_config(tmp, "dpo", config)
    del trained  # the DDP wrapper goes before the process group (trainer.distributed.end_process_group)
    end_process_group(world)
    return Path(config.out)


def _register() -> None:
    from trainer.cli import register_stage

    register_stage(
        name="dpo",
        config_cls=DPOConfig,
        entry=train_dpo,
        help="Tune a policy with DPO on preference pairs (β, frozen reference).",
    )


_register()
