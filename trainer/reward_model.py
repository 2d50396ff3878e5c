"""`python -m trainer reward`: a scalar head on a causal LM's backbone, trained with the Bradley–Terry loss.

The output is a `save_pretrained` directory of the architecture's *ForSequenceClassification (num_labels=1,
pad_token_id set), so `AutoModelForSequenceClassification` loads it as it is. Scores are always read by
this module at the last real token (the EOS) with positions counted over real tokens, so left and right
padding give the same score (HF's pooling finds the last non-PAD token, but GPT-2 gives a left-padded row
shifted positions unless position_ids are passed).

Likelihood feature (`--likelihood-model DIR`, the SFT model): the score adds w · (mean log-probability of the
response's tokens under that frozen causal LM), w learned with the head. The model's own belief in an answer is what
tells a right answer from a wrong one in the same style, which a head trained on a few hundred labels does not learn
to read out of the backbone (measured: bench/rlhf_efficacy.py, README). The directory then also holds
`likelihood_feature.json` (the LM's path and w): load it with `load_reward_scorer`; HF's classifier alone gives the
head's part of the score only.

Speed: chosen and rejected (all K responses of a ranking) go through one forward; batches are padded to
their own longest sequence; optional bf16 autocast (`--precision bf16`) with fp32 master weights.
Distributed: under `torchrun`/`accelerate launch` (WORLD_SIZE > 1) each process takes every world-th group
of a global batch and the loss is normalised by the global group count, so the gradient equals one
process's on the same global batch.
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrainConfig, UsageError
from trainer.masks import (
    gather_at,
    gather_logprobs,
    last_token_index,
    masked_mean,
    pad_sequences,
    position_ids_from_mask,
    response_token_mask,
)
from trainer.outputs import MetricsLog, atomic_output_dir, progress, save_trainer_config
from trainer.preference_data import PreferenceGroup, load_preferences
from trainer.runtime import (
    autocast,
    check_same_tokenizer,
    epochs_for,
    linear_decay,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    seed_everything,
    total_steps_for,
    uses_bf16,
)

LIKELIHOOD_FILE = "likelihood_feature.json"


@dataclass(kw_only=True)
class RewardConfig(TrainConfig):
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
    max_length: int = field(default=1024, metadata={"help": "Longer sequences are dropped (as TRL does)."})
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


# ----------------------------------------------------------------------------- model


def head_init_(linear: nn.Linear, generator: torch.Generator | None = None) -> None:
    """N(0, 1/sqrt(d+1)) (Stiennon et al. 2020; "N implementation details of RLHF"), bias 0."""
    d = linear.weight.shape[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) / math.sqrt(d + 1))
        if linear.bias is not None:
            linear.bias.zero_()


def load_reward_model(path: str | Path, tokenizer, device: torch.device | str = "cpu", *, new_head_seed: int = 0):
    """*ForSequenceClassification(num_labels=1) from a causal LM or a reward-model directory.

    From a causal LM the backbone weights are reused and the head is freshly initialised (seeded)."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{p}: not a model directory")
    try:
        cfg = AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load model config: {e}") from None
    is_reward_model = any(a.endswith("ForSequenceClassification") for a in (cfg.architectures or []))
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "score.weight newly initialised" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load as a sequence classifier: {e}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not is_reward_model:
        head_init_(model.score, torch.Generator().manual_seed(new_head_seed))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.to(device)
    model.eval()  # dropout off: eval mode for training too (gradients still flow)
    return model


def use_fast_kernels_(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """Same function, faster kernels. GPT-2's `gelu_new` is a Python formula of five element-wise ops; torch's
    fused tanh-GELU computes the same function (within 3e-7) at a quarter of the cost. Under bf16 autocast on
    CPU, SDPA's flash-attention backward is slower than eager attention at these lengths, so eager is used."""
    for module in model.modules():
        if type(getattr(module, "act", None)).__name__ in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh"):
            module.act = nn.GELU(approximate="tanh")
    if device.type == "cpu" and uses_bf16(device, precision) and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):
            pass  # the architecture has no eager path: keep its default
    return model


class LikelihoodFeature(nn.Module):
    """weight · mean log-probability of each row's response tokens (EOS included, temperature 1) under a frozen
    causal LM; only the weight trains."""

    def __init__(self, lm: nn.Module, model_path: str, weight: float = 0.0):
        super().__init__()
        self.lm = lm.requires_grad_(False)
        self.model_path = model_path
        self.weight = nn.Parameter(torch.tensor(float(weight)))

    @torch.no_grad()
    def mean_logprob(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor
    ) -> torch.Tensor:
        logits = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            position_ids=position_ids_from_mask(attention_mask),
        ).logits  # [B, T, V]
        logprobs = gather_logprobs(logits, input_ids)  # [B, T-1]: token t under the logits at t-1
        response = response_token_mask(attention_mask, prompt_lengths)[:, 1:]  # [B, T-1]
        return masked_mean(logprobs, response, dim=1)  # [B]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor):
        return self.weight * self.mean_logprob(input_ids, attention_mask, prompt_lengths)  # [B]


def load_likelihood_feature(model_path: str | Path, tokenizer, device, weight: float = 0.0) -> LikelihoodFeature:
    check_same_tokenizer(
        tokenizer, load_tokenizer(model_path), f"likelihood model {model_path}", against="the reward model"
    )
    lm = load_causal_lm(model_path, device, tokenizer=tokenizer)  # eval mode: dropout off
    return LikelihoodFeature(lm, str(Path(model_path).resolve()), weight).to(device)


def save_likelihood_feature(directory: Path, feature: LikelihoodFeature) -> None:
    (directory / LIKELIHOOD_FILE).write_text(
        json.dumps(
            {
                "model": feature.model_path,
                "weight": float(feature.weight.detach()),
                "feature": "mean log-probability of the response tokens (EOS included) under model, temperature 1",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def load_reward_scorer(path: str | Path, tokenizer, device: torch.device | str = "cpu") -> RewardScorer:
    """A trained reward model as it scores: the classifier, plus its likelihood feature when it has one."""
    model = load_reward_model(path, tokenizer, device)
    spec_file = Path(path) / LIKELIHOOD_FILE
    if not spec_file.is_file():
        return RewardScorer(model)
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        model_path, weight = spec["model"], float(spec["weight"])
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{spec_file}: not a likelihood feature file: {e}") from None
    if not Path(model_path).is_dir():
        raise UsageError(f"{spec_file}: its likelihood model {model_path} is missing")
    return RewardScorer(model, load_likelihood_feature(model_path, tokenizer, device, weight))


class RewardScorer(nn.Module):
    """Score at the last real token (+ the likelihood feature). Wraps the HF model so DDP sees one forward."""

    def __init__(self, model: nn.Module, likelihood: LikelihoodFeature | None = None):
        super().__init__()
        self.model = model
        self.likelihood = likelihood

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        return out.last_hidden_state  # [B, T, d]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """prompt_lengths [B] (real prompt tokens of each row) is needed with a likelihood feature only."""
        hidden = self.hidden_states(input_ids, attention_mask)  # [B, T, d]
        last = gather_at(hidden, last_token_index(attention_mask))  # [B, d]
        score = self.model.score(last).squeeze(-1).float()  # [B]
        if self.likelihood is not None:
            if prompt_lengths is None:
                raise ValueError("this reward model has a likelihood feature: pass prompt_lengths")
            score = score + self.likelihood(input_ids, attention_mask, prompt_lengths).float()
        return score

    def token_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head at every position (PPO's value model). -> [B, T]."""
        return self.model.score(self.hidden_states(input_ids, attention_mask)).squeeze(-1).float()


def shift_scores_(model: nn.Module, offset: float) -> str:
    """Subtract `offset` from every score the model produces, inside the saved weights.

    GPT-2-style heads have no bias, so the shift goes into the bias of the final norm: adding
    delta = -offset * w / |w|^2 to every hidden state changes w·h by exactly -offset."""
    head = model.score
    if getattr(head, "bias", None) is not None:
        with torch.no_grad():
            head.bias -= offset
        return "score.bias"
    norm = _final_norm(model)
    if norm is not None and getattr(norm, "bias", None) is not None:
        with torch.no_grad():
            w = head.weight[0]
            norm.bias += -offset * w / w.dot(w)
        return "final_norm.bias"
    return ""


def _final_norm(model: nn.Module) -> nn.Module | None:
    base = model.base_model
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return getattr(base, name)
    return None


# ----------------------------------------------------------------------------- loss


def bradley_terry_loss(
    r_better: torch.Tensor,
    r_worse: torch.Tensor,
    margin: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss [N]: -[y log σ(d) + (1-y) log σ(-d)], d = r_better - r_worse - margin,
    plus center_coef * (r_better + r_worse)^2 (TRL's center_rewards_coefficient)."""
    d = r_better - r_worse
    if margin is not None:
        d = d - margin
    loss = -F.logsigmoid(d)
    if target is not None:
        loss = -(target * F.logsigmoid(d) + (1 - target) * F.logsigmoid(-d))
    if center_coef:
        loss = loss + center_coef * (r_better + r_worse) ** 2
    return loss


@dataclass
class GroupBatch:
    input_ids: torch.Tensor  # [S, T] every response of every group, right-padded
    attention_mask: torch.Tensor  # [S, T]
    prompt_lengths: torch.Tensor  # [S]
    better: torch.Tensor  # [N] row of the preferred response of each pair
    worse: torch.Tensor  # [N]
    margin: torch.Tensor  # [N]
    target: torch.Tensor  # [N]
    pair_weight: torch.Tensor  # [N] 1 / (pairs in its group): each group counts once, as in InstructGPT
    n_groups: int
    identical: torch.Tensor  # [N] bool: the pair's two responses are the same tokens


def collate_groups(groups: list[PreferenceGroup], pad_token_id: int) -> GroupBatch:
    seqs, prompt_lengths, better, worse, margin, target, weight, identical = [], [], [], [], [], [], [], []
    for g in groups:
        base = len(seqs)
        seqs.extend(g.sequences)
        prompt_lengths.extend(g.prompt_lengths)
        for p in g.pairs:
            better.append(base + p.better)
            worse.append(base + p.worse)
            margin.append(p.margin)
            target.append(p.target)
            weight.append(1.0 / len(g.pairs))
            identical.append(g.sequences[p.better] == g.sequences[p.worse])
    ids, mask = pad_sequences(seqs, pad_token_id=pad_token_id, side="right")
    t = lambda v, dt=torch.float32: torch.tensor(v, dtype=dt)  # noqa: E731
    return GroupBatch(
        ids,
        mask,
        t(prompt_lengths, torch.long),
        t(better, torch.long),
        t(worse, torch.long),
        t(margin),
        t(target),
        t(weight),
        len(groups),
        t(identical, torch.bool),
    )


def batch_losses(scorer: nn.Module, batch: GroupBatch, device, precision: str, center_coef: float):
    """(per-pair losses [N], scores [S]) for one collated batch."""
    with autocast(device, precision):
        scores = scorer(
            batch.input_ids.to(device), batch.attention_mask.to(device), batch.prompt_lengths.to(device)
        )  # [S]
    rb, rw = scores[batch.better.to(device)], scores[batch.worse.to(device)]
    losses = bradley_terry_loss(rb, rw, batch.margin.to(device), batch.target.to(device), center_coef)
    return losses, scores


def ordered_right(d: torch.Tensor, identical: torch.Tensor) -> torch.Tensor:
    """Credit per decided pair for its score gap d = r_better - r_worse [N]: 1 if d > 0, else 0; half when the two
    responses are the same tokens (sampled rankings do hold a response twice: no model can order them, as a gold
    tie is counted half in the label-noise ceiling). -> [N]."""
    return torch.where(identical, 0.5, (d > 0).float())


@torch.no_grad()
def evaluate_pairs(
    scorer: nn.Module,
    groups: list[PreferenceGroup],
    *,
    pad_token_id: int,
    device,
    precision: str = "fp32",
    batch_size: int = 64,
) -> dict[str, float]:
    """Held-out loss, accuracy (a pair of identical responses counts half: ordered_right) and mean margin (tie pairs
    count in the loss only), calibration (ECE)."""
    tot_loss = tot_w = 0.0
    correct = n_acc = 0.0
    margins, probs, outcomes = [], [], []
    for i in range(0, len(groups), batch_size):
        batch = collate_groups(groups[i : i + batch_size], pad_token_id)
        losses, scores = batch_losses(scorer, batch, device, precision, 0.0)
        w = batch.pair_weight.to(device)
        tot_loss += float((losses * w).sum())
        tot_w += float(w.sum())
        d = (scores[batch.better.to(device)] - scores[batch.worse.to(device)]).float().cpu()
        decided = batch.target == 1.0
        correct += float(ordered_right(d[decided], batch.identical[decided]).sum())
        n_acc += float(decided.sum())
        margins.append(d[decided])
        probs.append(torch.sigmoid(d[decided]))
    d_all = torch.cat(margins) if margins else torch.zeros(0)
    p_all = torch.cat(probs) if probs else torch.zeros(0)
    return {
        "loss": tot_loss / max(tot_w, 1e-12),
        "accuracy": correct / max(n_acc, 1),
        "margin": float(d_all.mean()) if d_all.numel() else 0.0,
        "calibration_ece": expected_calibration_error(p_all),
        "pairs": int(n_acc),
    }


def expected_calibration_error(p_better: torch.Tensor, bins: int = 10) -> float:
    """ECE of P(better wins) = σ(r_b - r_w), on pairs whose true outcome is 'better wins'. Each pair is
    counted in both orientations (p, outcome 1) and (1 - p, outcome 0), so a perfectly calibrated model
    scores 0 and an over-confident one more."""
    if p_better.numel() == 0:
        return 0.0
    p = torch.cat([p_better, 1 - p_better])
    y = torch.cat([torch.ones_like(p_better), torch.zeros_like(p_better)])
    idx = (p * bins).long().clamp(max=bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += float(sel.float().mean()) * abs(float(p[sel].mean()) - float(y[sel].mean()))
    return ece


# ----------------------------------------------------------------------------- distributed


def dist_info() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun/accelerate."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("LOCAL_RANK") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def micro_chunks(global_batch: list, *, rank: int, world: int, micro: int) -> list[tuple[list, float]]:
    """This process's share of a global batch in microbatches, as (groups, 1.0 = real | 0.0 = filler).

    Under DDP every process must run as many backward passes as the others (each one's gradient
    all-reduce waits for all), so a process whose share is shorter, or empty (a last batch smaller
    than the world), fills in with a zero-weight copy of the batch's first group."""
    local = global_batch[rank::world]
    n = math.ceil(math.ceil(len(global_batch) / world) / micro)  # the longest share's microbatch count
    chunks = [(local[m : m + micro], 1.0) for m in range(0, len(local), micro)]
    return chunks + [([global_batch[0]], 0.0)] * (n - len(chunks))


def all_reduce_sum(values: list[float], world: int) -> list[float]:
    if world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- training


def train_reward(config: RewardConfig, *, on_metrics: Callable[[dict], None] | None = None) -> Path:
    rank, world = dist_info()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    seed_everything(config.seed)
    tok = load_tokenizer(config.model)
    train_set = load_preferences(config.data, tok, ties=config.ties, max_length=config.max_length)
    eval_set = (
        load_preferences(config.eval_data, tok, ties=config.ties, max_length=config.max_length)
        if config.eval_data
        else None
    )
    model = use_fast_kernels_(
        load_reward_model(config.model, tok, device, new_head_seed=config.seed), device, config.precision
    )
    likelihood = None
    if config.likelihood_model:
        likelihood = load_likelihood_feature(config.likelihood_model, tok, device)
        use_fast_kernels_(likelihood.lm, device, config.precision)
    scorer: nn.Module = RewardScorer(model, likelihood)
    own_scorer = scorer
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        scorer = DistributedDataParallel(scorer, device_ids=[device.index] if device.type == "cuda" else None)
    param_groups = [{"params": list(model.parameters()), "lr": config.lr, "weight_decay": config.weight_decay}]
    if likelihood is not None:  # one scalar: its own, larger step (at the backbone's lr it would barely move)
        param_groups.append({"params": [likelihood.weight], "lr": config.likelihood_lr, "weight_decay": 0.0})
    trained = [p for g in param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(param_groups)
    groups = train_set.groups
    batches_per_epoch = math.ceil(len(groups) / config.batch_size)
    total_steps = total_steps_for(epochs=config.epochs, batches_per_epoch=batches_per_epoch, max_steps=config.max_steps)
    scheduler = linear_decay(optimizer, total_steps)  # to 0 over the run (TRL's default schedule)
    micro = config.micro_batch_size or config.batch_size
    pad = tok.pad_token_id

    out_ctx = atomic_output_dir(config.out) if rank == 0 else _NoOutput()
    with out_ctx as tmp:
        log = MetricsLog(tmp / "metrics.jsonl", on_metrics) if rank == 0 else None
        bar = progress(total=total_steps, desc="reward") if rank == 0 else None
        step = 0
        for epoch in range(epochs_for(total_steps, batches_per_epoch)):  # each pass reshuffled
            order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(config.seed + epoch))
            for start in range(0, len(groups), config.batch_size):
                if step >= total_steps:
                    break
                global_batch = [groups[i] for i in order[start : start + config.batch_size].tolist()]
                sums = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # loss·w, correct, decided, margin, score, score²
                n_scores = 0
                chunks = micro_chunks(global_batch, rank=rank, world=world, micro=micro)
                for i, (chunk, real) in enumerate(chunks):
                    batch = collate_groups(chunk, pad)
                    # DDP all-reduces on the last backward only; the others accumulate locally
                    sync = nullcontext() if world == 1 or i == len(chunks) - 1 else scorer.no_sync()
                    with sync:
                        losses, scores = batch_losses(scorer, batch, device, config.precision, config.center_coef)
                        w = batch.pair_weight.to(device) * real
                        # normalised by the GLOBAL group count: the sum over microbatches and processes is the mean
                        loss = (losses * w).sum() / len(global_batch) * world  # DDP averages over processes
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
                if log is not None and (step % config.log_every == 0 or step == total_steps):
                    mean = sums[4] / max(n_scores, 1)
                    weight_metric = (
                        {} if likelihood is None else {"likelihood_weight": float(likelihood.weight.detach())}
                    )
                    log.log(
                        step,
                        total_steps,
                        epoch=epoch + (start + len(global_batch)) / len(groups),
                        loss=sums[0] / len(global_batch),
                        accuracy=sums[1] / max(sums[2], 1),
                        margin=sums[3] / max(sums[2], 1),
                        reward_mean=mean,
                        reward_std=math.sqrt(max(sums[5] / max(n_scores, 1) - mean * mean, 0.0)),
                        grad_norm=float(grad_norm),
                        lr=lr,
                        **weight_metric,
                    )
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()

        final: dict[str, float] = {}
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
            )
            log.log(step, total_steps, **final)
            log.close()
        if rank == 0:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if likelihood is not None:
                save_likelihood_feature(tmp, likelihood)
            save_trainer_config(tmp, "reward", config)
    if world > 1:
        import torch.distributed as dist

        # The DDP wrapper (its reducer and its hold on the process group) goes first, while every rank is still
        # here: left to this frame's teardown, after destroy_process_group, its destructor could wait forever
        # (seen in CI: one rank stuck on returning from this function).
        del scorer
        gc.collect()
        dist.barrier()  # rank 0 has renamed OUT into place before any process returns
        dist.destroy_process_group()
    return Path(config.out)


class _NoOutput:
    """Non-zero ranks write nothing."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


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
