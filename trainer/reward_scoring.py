"""Scoring with a reward model: loading one as it scores, and judging its scores on preference pairs.

A reward model is a `save_pretrained` *ForSequenceClassification (num_labels=1, pad_token_id set), so
`AutoModelForSequenceClassification` loads it as it is. Its score is read at the last real token (the EOS) with
positions counted over real tokens, so left and right padding give the same score (HF's pooling finds the last
non-PAD token, but GPT-2 gives a left-padded row shifted positions unless position_ids are passed).

Likelihood feature: a reward model trained with `--likelihood-model DIR` adds w · (mean log-probability of the
response's tokens under that frozen causal LM) to the head's score; its directory then also holds
`likelihood_feature.json` (the LM's path and w). `load_reward_scorer` applies it, and so does everything here that
scores with a reward model (PPO, evaluate, the `rm:` judge); HF's classifier alone gives the head's part only.

Used by the reward, PPO and evaluate stages, the `rm:` judge, and PPO's value model (the head at every position).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from trainer.adapters import is_adapter_dir, load_merged
from trainer.config import UsageError
from trainer.logprobs import completion_logprobs
from trainer.masks import gather_at, last_token_index, masked_mean, position_ids_from_mask
from trainer.preference_data import GroupBatch, PreferenceGroup, collate_groups
from trainer.preference_loss import bradley_terry_loss
from trainer.runtime import autocast, check_same_tokenizer, load_causal_lm, load_tokenizer

LIKELIHOOD_FILE = "likelihood_feature.json"


def head_init_(linear: nn.Linear, generator: torch.Generator | None = None) -> None:
    """N(0, 1/sqrt(d+1)) (Stiennon et al. 2020; "N implementation details of RLHF"), bias 0."""
    d = linear.weight.shape[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) / math.sqrt(d + 1))
        if linear.bias is not None:
            linear.bias.zero_()


def load_reward_model(path: str | Path, tokenizer, device: torch.device | str = "cpu", *, new_head_seed: int = 0):
    """*ForSequenceClassification(num_labels=1) from a causal LM or a reward-model directory, either of them whole or
    a peft adapter directory.

    From a causal LM the backbone weights are reused and the head is freshly initialised (seeded)."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{p}: not a model directory")
    if is_adapter_dir(p):  # its base (a causal LM or a reward model) with the adapter (and its head) merged in
        model = load_merged(p, lambda base: load_reward_model(base, tokenizer, "cpu", new_head_seed=new_head_seed))
        return model.to(device).eval()
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
        logprobs, response = completion_logprobs(self.lm, input_ids, attention_mask, prompt_lengths)  # [B, T-1]
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


# ----------------------------------------------------------------------------- scores of preference pairs


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
    margins, probs = [], []
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
