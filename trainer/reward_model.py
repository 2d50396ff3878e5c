"""`python -m trainer reward`: a scalar head on a causal LM's backbone, trained with the Bradley–Terry loss.

The output is a `save_pretrained` directory of the architecture's *ForSequenceClassification (num_labels=1,
pad_token_id set unless PAD is EOS), so `AutoModelForSequenceClassification` loads it as it is; scores are read as
trainer.reward_scoring reads them (at the last real token, positions counted over real tokens).

Likelihood feature (`--likelihood-model DIR`, the SFT model): the score adds w · (mean log-probability of the
response's tokens under that frozen causal LM), w learned with the head. The model's own belief in an answer is what
tells a right answer from a wrong one in the same style, which a head trained on a few hundred labels does not learn
to read out of the backbone (measured: bench/rlhf_efficacy.py, README). The directory then also holds
`likelihood_feature.json` (the LM's path, relative to this directory, and w): load it with
`trainer.reward_scoring.load_reward_scorer`; HF's classifier alone gives the head's part of the score only. The
directory's `README.md` (a model card) says what the score is and how to compute all of it with transformers alone.

Length of training: with held-out pairs (`--eval-data`) the run stops once their loss has not improved for
`--early-stopping-patience` passes (at most `--max-epochs`) and saves the best pass's weights, so a few hundred labels
and tens of thousands get the passes each needs; without held-out pairs it runs `--epochs` passes.

Speed: chosen and rejected (all K responses of a ranking) go through one forward; batches are padded to
their own longest sequence; optional bf16 autocast (`--precision bf16`) with fp32 master weights.
Distributed: under `torchrun`/`accelerate launch` (WORLD_SIZE > 1) each process takes every world-th group
of a global batch and the loss is normalised by the global group count, so the gradient equals one
process's on the same global batch (trainer.distributed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainer.adapters import LoraFields, save_model, trainable_model, trainable_parameters, trained_copy
from trainer.config import TrainConfig
from trainer.context_fit import sequence_limit
from trainer.distributed import (
    NoOutput,
    all_reduce_sum,
    ddp,
    dist_info,
    end_process_group,
    micro_chunks,
    process_device,
    sync_on_last,
)
from trainer.masks import pad_sequences
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, progress, save_trainer_config
from trainer.preference_data import PreferenceGroup, collate_groups, load_preferences, total_weight
from trainer.reward_scoring import (
    RewardScorer,
    batch_losses,
    evaluate_pairs,
    load_likelihood_feature,
    load_reward_model,
    ordered_right,
    save_likelihood_feature,
    write_model_card,
)
from trainer.runtime import (
    autocast,
    checkpoint_activations_,
    epoch_batches,
    linear_decay,
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
class RewardConfig(LoraFields, TrainConfig):
    model: str = field(metadata={"help": "Causal LM (or reward model) directory to start from."})
    data: str = field(metadata={"help": "Preference JSONL: trl, trl-conversational, rankings or kto format."})
    out: str = field(metadata={"help": "Output directory (the reward model)."})
    eval_data: str = field(default="", metadata={"help": "Held-out preference JSONL; accuracy reported."})
    ties: str = field(
        default="exclude",
        metadata={"help": "Tie pairs: exclude them, or half = target 0.5.", "choices": ["exclude", "half"]},
    )
    center_coef: float = field(
        default=0.0,
        metadata={"help": "Reward centering: adds coef * mean((r_better + r_worse)^2) to the loss (0.01 is typical)."},
    )
    max_length: int = field(
        default=1024, metadata={"help": "Longer sequences are dropped (as TRL does); never past the model's context."}
    )
    micro_batch_size: int = field(
        default=0, metadata={"help": "Groups per forward (gradient accumulation); 0 = the whole batch."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    center_on_chosen: bool = field(
        default=True,
        metadata={"help": "After training, shift scores so the preferred responses of the training data average 0."},
    )
    log_every: int = field(default=1, metadata={"help": "Write a metrics line every N steps."})
    likelihood_model: str = field(
        default="",
        metadata={
            "help": "Frozen causal LM (the SFT model) whose mean response log-probability is added to the score with a "
            "learned weight; empty = off."
        },
    )
    likelihood_lr: float = field(default=0.1, metadata={"help": "Learning rate of the likelihood feature's weight."})
    early_stopping_patience: int = field(
        default=2,
        metadata={
            "help": "With --eval-data: stop once the held-out loss has not improved for this many passes and keep the "
            "best pass's weights (up to --max-epochs passes; --epochs is then unused); 0 = off."
        },
    )
    max_epochs: int = field(default=10, metadata={"help": "Most passes over the data when stopping early."})


# ----------------------------------------------------------------------------- centring


def shift_scores_(model: nn.Module, offset: float) -> str:
    """Subtract `offset` from every score the model produces, inside the saved weights.

    GPT-2-style heads have no bias, so the shift goes into the bias of the final norm: adding
    delta = -offset * w / |w|^2 to every hidden state changes w·h by exactly -offset."""
    head = trained_copy(model.score)  # under LoRA: the adapter's own copy of the head, which is saved
    if getattr(head, "bias", None) is not None:
        with torch.no_grad():
            head.bias -= offset
        return "score.bias"
    norm = _final_norm(model)
    norm = trained_copy(norm) if norm is not None else None
    if norm is not None and getattr(norm, "bias", None) is not None:
        with torch.no_grad():
            w = head.weight[0]
            norm.bias += -offset * w / w.dot(w)
        return "final_norm.bias"
    return ""


def head_modules(model: nn.Module) -> list[str]:
    """What trains in full beside a LoRA adapter: the score head, and the final norm when it has a bias (where
    shift_scores_ centres the scores on a head without one). Full module paths: peft matches by suffix."""
    names = ["score"]
    norm = _final_norm(model)
    if norm is not None and getattr(norm, "bias", None) is not None:
        names += [name for name, module in model.named_modules() if module is norm]
    return names


def _final_norm(model: nn.Module) -> nn.Module | None:
    base = model.base_model
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return getattr(base, name)
    return None


# ----------------------------------------------------------------------------- training


def train_reward(config: RewardConfig, *, on_metrics: Callable[[dict], None] | None = None) -> Path:
    rank, world = dist_info()
    device = process_device(resolve_device(config.device), world)
    seed_everything(config.seed)
    tok = load_tokenizer(config.model)
    # longer sequences are skipped, never past the model's context (trainer.context_fit)
    contexts = [model_dir_context(p) for p in (config.model, config.likelihood_model) if p]
    max_length = sequence_limit(min(contexts), config.max_length)
    train_set = load_preferences(config.data, tok, ties=config.ties, max_length=max_length)
    eval_set = (
        load_preferences(config.eval_data, tok, ties=config.ties, max_length=max_length) if config.eval_data else None
    )
    dtype = weight_dtype(config.precision)
    # with --lora-r: the backbone frozen under a trained adapter, the head (and final norm) trained in full
    model, peft_model = trainable_model(
        config.model,
        config,
        lambda p: load_reward_model(p, tok, device, new_head_seed=config.seed, dtype=dtype),
        task="SEQ_CLS",
        modules_to_save=head_modules,
    )
    model = use_fast_kernels_(model, device, config.precision)
    checkpoint_activations_(model, config.gradient_checkpointing)
    likelihood = None
    if config.likelihood_model:
        likelihood = load_likelihood_feature(config.likelihood_model, tok, device, dtype=dtype)
        use_fast_kernels_(likelihood.lm, device, config.precision)
    scorer: nn.Module = RewardScorer(model, likelihood)
    own_scorer = scorer
    scorer = ddp(scorer, device, world)  # one process: the scorer itself
    param_groups = [{"params": trainable_parameters(model), "lr": config.lr, "weight_decay": config.weight_decay}]
    if likelihood is not None:  # one scalar: its own, larger step (at the backbone's lr it would barely move)
        param_groups.append({"params": [likelihood.weight], "lr": config.likelihood_lr, "weight_decay": 0.0})
    trained = [p for g in param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(param_groups)
    groups = train_set.groups
    batches_per_epoch = math.ceil(len(groups) / config.batch_size)
    stopper = EarlyStopping(config.early_stopping_patience) if early_stopping(config, eval_set) else None
    epochs = config.max_epochs if stopper is not None else config.epochs
    total_steps = total_steps_for(epochs=epochs, batches_per_epoch=batches_per_epoch, max_steps=config.max_steps)
    scheduler = linear_decay(optimizer, total_steps)  # to 0 over the run (TRL's default schedule)
    micro = config.micro_batch_size or config.batch_size
    pad = tok.pad_token_id

    out_ctx = atomic_output_dir(config.out) if rank == 0 else NoOutput()
    with out_ctx as tmp:
        log = MetricsLog(tmp / "metrics.jsonl", on_metrics) if rank == 0 else None
        bar = progress(total=total_steps, desc="reward") if rank == 0 else None
        step = 0
        for epoch, index in epoch_batches(
            len(groups), config.batch_size, total_steps, seeded_permutations(len(groups), config.seed)
        ):  # each pass reshuffled
            global_batch = [groups[i] for i in index.tolist()]
            # the weighted mean over groups (line `weight`, default 1.0: the plain mean); all-zero weights learn nothing
            batch_weight = max(total_weight(global_batch), 1e-12)
            sums = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # loss·w, correct, decided, margin, score, score²
            n_scores = 0
            chunks = micro_chunks(global_batch, rank=rank, world=world, micro=micro)
            for i, (chunk, real) in enumerate(chunks):
                batch = collate_groups(chunk, pad)
                with sync_on_last(scorer, i, len(chunks), world):
                    losses, scores = batch_losses(scorer, batch, device, config.precision, config.center_coef)
                    w = batch.pair_weight.to(device) * real
                    # normalised by the GLOBAL group weight: the sum over microbatches and processes is the mean
                    loss = (losses * w).sum() / batch_weight * world  # DDP averages over processes
                    loss.backward()
                if not real:
                    continue
                with torch.no_grad():
                    d = scores[batch.better.to(device)] - scores[batch.worse.to(device)]
                    decided = batch.target.to(device) == 1.0
                    sums[0] += float((losses * w).sum())
                    sums[1] += float(ordered_right(d[decided], batch.identical.to(device)[decided]).sum())
                    sums[2] += float(decided.sum())
                    sums[3] += float(d[decided].sum())
                    sums[4] += float(scores.sum())
                    sums[5] += float((scores**2).sum())
                    n_scores += scores.numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            sums = all_reduce_sum(sums + [float(n_scores)], world)
            n_scores = sums.pop()
            held_out: dict[str, float] = {}
            if stopper is not None and (step % batches_per_epoch == 0 or step == total_steps):
                # every process scores the whole held-out slice with the same weights, so all of them stop together
                ev = evaluate_pairs(
                    own_scorer, eval_set.groups, pad_token_id=pad, device=device, precision=config.precision
                )
                stopper.update(ev["loss"], step, own_scorer)
                held_out = {"eval_loss": ev["loss"], "eval_accuracy": ev["accuracy"]}
            if log is not None and (step % config.log_every == 0 or step == total_steps or held_out):
                mean = sums[4] / max(n_scores, 1)
                weight_metric = {} if likelihood is None else {"likelihood_weight": float(likelihood.weight.detach())}
                log.log(
                    step,
                    total_steps,
                    epoch=epoch,
                    loss=sums[0] / batch_weight,
                    accuracy=sums[1] / max(sums[2], 1),
                    margin=sums[3] / max(sums[2], 1),
                    reward_mean=mean,
                    reward_std=math.sqrt(max(sums[5] / max(n_scores, 1) - mean * mean, 0.0)),
                    grad_norm=float(grad_norm),
                    lr=lr,
                    **weight_metric,
                    **held_out,
                )
            if bar is not None:
                bar.update(1)
            if stopper is not None and stopper.done:
                break
        if bar is not None:
            bar.close()

        final: dict[str, float] = {}
        if stopper is not None:
            stopper.restore_best(own_scorer)
            final.update(best_step=stopper.best_step, stopped_step=step)
            if likelihood is not None:
                final["likelihood_weight"] = float(likelihood.weight.detach())
        if config.center_on_chosen and rank == 0:
            offset = mean_preferred_score(
                own_scorer, groups, pad_token_id=pad, device=device, precision=config.precision
            )
            where = shift_scores_(model, offset)
            final["reward_offset"] = offset if where else 0.0
        if eval_set is not None and rank == 0:
            ev = evaluate_pairs(
                own_scorer, eval_set.groups, pad_token_id=pad, device=device, precision=config.precision
            )
            final.update({f"eval_{k}": v for k, v in ev.items()})
        if log is not None:
            final.update(
                train_pairs=train_set.n_pairs,
                skipped_ties=train_set.skipped_ties,
                skipped_too_long=train_set.skipped_too_long,
                skipped_unpaired=train_set.skipped_unpaired,
                **peak_memory(device),
            )
            log.log(step, total_steps, **final)
            log.close()
        if rank == 0:
            save_model(model, peft_model, tmp)
            tok.save_pretrained(tmp)
            if likelihood is not None:
                save_likelihood_feature(tmp, likelihood, final_dir=config.out)
            write_model_card(tmp, type(model).__name__, centred=bool(final.get("reward_offset")))
            save_trainer_config(tmp, "reward", config)
    del scorer  # the DDP wrapper goes before the process group (trainer.distributed.end_process_group)
    end_process_group(world)
    return Path(config.out)


def early_stopping(config: RewardConfig, eval_set) -> bool:
    """Early stopping needs held-out pairs to judge by, and gives way to an explicit --max-steps."""
    return (
        config.early_stopping_patience > 0 and eval_set is not None and bool(eval_set.groups) and not config.max_steps
    )


class EarlyStopping:
    """Keeps the weights of the pass with the lowest held-out loss; done after `patience` passes without a better
    one (a held-out loss that rises while the training loss falls is the reward model learning its labels' noise)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss = math.inf
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def update(self, loss: float, step: int, scorer: nn.Module) -> None:
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            self.best_state = {k: v.detach().clone() for k, v in scorer.state_dict().items() if ".lm." not in k}
        else:
            self.since_best += 1

    @property
    def done(self) -> bool:
        return self.since_best >= self.patience

    def restore_best(self, scorer: nn.Module) -> None:
        if self.best_state is not None:
            scorer.load_state_dict(self.best_state, strict=False)


@torch.no_grad()
def mean_preferred_score(
    scorer: RewardScorer, groups: list[PreferenceGroup], *, pad_token_id: int, device, precision: str, limit: int = 1024
) -> float:
    """Mean score of the preferred response of each pair (the demonstrations the policy starts near),
    on up to `limit` groups: the offset that centres the reward at 0 (checklist: 'add a bias')."""
    seqs, prompt_lengths = [], []
    for g in groups[:limit]:
        best = {p.better for p in g.pairs if p.target == 1.0}
        seqs.extend(g.sequences[i] for i in sorted(best))
        prompt_lengths.extend(g.prompt_lengths[i] for i in sorted(best))
    if not seqs:
        return 0.0
    total = 0.0
    for i in range(0, len(seqs), 64):
        ids, mask = pad_sequences(seqs[i : i + 64], pad_token_id=pad_token_id)
        lengths = torch.tensor(prompt_lengths[i : i + 64], device=device)
        with autocast(device, precision):
            total += float(scorer(ids.to(device), mask.to(device), lengths).sum())
    return total / len(seqs)


def _register() -> None:
    from trainer.cli import register_stage

    register_stage(
        name="reward",
        config_cls=RewardConfig,
        entry=train_reward,
        help="Train a reward model (scalar head, Bradley-Terry loss) on preference data.",
    )


_register()
