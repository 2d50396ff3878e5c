"""Scoring with a reward model: loading one as it scores, and judging its scores on preference pairs.

A reward model is a `save_pretrained` *ForSequenceClassification (num_labels=1; pad_token_id set unless PAD is EOS),
so `AutoModelForSequenceClassification` loads it as it is. Its score is read at the last real token (the EOS) with
positions counted over real tokens, so left and right padding give the same score (HF's pooling finds the last
non-PAD token, but GPT-2 gives a left-padded row shifted positions unless position_ids are passed).

Likelihood feature: a reward model trained with `--likelihood-model DIR` adds w · (mean log-probability of the
response's tokens under that frozen causal LM) to the head's score; its directory then also holds
`likelihood_feature.json` (the LM's path, relative to the reward model's directory, and w). `load_reward_scorer`
applies it, and so does everything here that scores with a reward model (PPO, evaluate, the `rm:` judge); HF's
classifier alone gives the head's part only. The model card (`README.md`, `model_card`) says both in code.

Used by the reward, PPO and evaluate stages, the `rm:` judge, and PPO's value model (the head at every position).
"""

from __future__ import annotations

import json
import math
import os
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


def load_reward_model(
    path: str | Path,
    tokenizer,
    device: torch.device | str = "cpu",
    *,
    new_head_seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """*ForSequenceClassification(num_labels=1) from a causal LM or a reward-model directory, either of them whole or
    a peft adapter directory, in `dtype` (fp32 unless --precision bf16: trainer.runtime.weight_dtype).

    From a causal LM the backbone weights are reused and the head is freshly initialised (seeded)."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{p}: not a model directory")
    if is_adapter_dir(p):  # its base (a causal LM or a reward model) with the adapter (and its head) merged in
        model = load_merged(
            p, lambda base: load_reward_model(base, tokenizer, "cpu", new_head_seed=new_head_seed, dtype=dtype)
        )
        return model.to(device).eval()
    try:
        cfg = AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load model config: {e}") from None
    is_reward_model = any(a.endswith("ForSequenceClassification") for a in (cfg.architectures or []))
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "score.weight newly initialised" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=dtype)
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load as a sequence classifier: {e}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not is_reward_model:
        head_init_(model.score, torch.Generator().manual_seed(new_head_seed))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    # HF's classifier pools at the last token that is not PAD. With PAD == EOS (a tokenizer without a PAD of its own)
    # that is the token before the EOS, where this model never scores: then no PAD id is saved, so transformers alone
    # scores an unpadded sequence at its last token and refuses a padded batch rather than misread it. RewardScorer
    # reads the attention mask and needs neither.
    pad_is_eos = tokenizer.pad_token_id == tokenizer.eos_token_id
    model.config.pad_token_id = None if pad_is_eos else tokenizer.pad_token_id
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


def load_likelihood_feature(
    model_path: str | Path, tokenizer, device, weight: float = 0.0, *, dtype: torch.dtype = torch.float32
) -> LikelihoodFeature:
    check_same_tokenizer(
        tokenizer, load_tokenizer(model_path), f"likelihood model {model_path}", against="the reward model"
    )
    lm = load_causal_lm(model_path, device, tokenizer=tokenizer, dtype=dtype)  # eval mode: dropout off
    return LikelihoodFeature(lm, str(Path(model_path).resolve()), weight).to(device)


def save_likelihood_feature(directory: Path, feature: LikelihoodFeature, *, final_dir: str | Path) -> None:
    """likelihood_feature.json in `directory` (the output being written, renamed to `final_dir` when whole). The
    language model is named by its path relative to `final_dir`: a round's reward model and its SFT model both live
    in the data dir, so moving or copying the data dir keeps the pair together."""
    (directory / LIKELIHOOD_FILE).write_text(
        json.dumps(
            {
                "model": os.path.relpath(feature.model_path, Path(final_dir).resolve()),
                "weight": float(feature.weight.detach()),
                "feature": "mean log-probability of the response tokens (EOS included) under model, temperature 1",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


def load_reward_scorer(
    path: str | Path, tokenizer, device: torch.device | str = "cpu", *, dtype: torch.dtype = torch.float32
) -> RewardScorer:
    """A trained reward model as it scores: the classifier, plus its likelihood feature when it has one."""
    model = load_reward_model(path, tokenizer, device, dtype=dtype)
    spec_file = Path(path) / LIKELIHOOD_FILE
    if not spec_file.is_file():
        return RewardScorer(model)
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        model_path, weight = Path(path) / spec["model"], float(spec["weight"])  # relative to the reward model's dir
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{spec_file}: not a likelihood feature file: {e}") from None
    if not model_path.is_dir():
        raise UsageError(f"{spec_file}: its likelihood model {model_path} is missing")
    return RewardScorer(model, load_likelihood_feature(model_path, tokenizer, device, weight, dtype=dtype))


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


# ----------------------------------------------------------------------------- the model card

CARD_CODE = '''import json, os

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

REWARD_DIR = "."  # this directory
tok = AutoTokenizer.from_pretrained(REWARD_DIR)
rm = AutoModelForSequenceClassification.from_pretrained(REWARD_DIR).eval()


def ids_of(text):
    # BOS once: the one the chat template wrote, else the one the tokenizer adds
    wrote_bos = bool(tok.bos_token) and text.startswith(tok.bos_token)
    return tok(text, add_special_tokens=not wrote_bos)["input_ids"]


def encode(prompt, response):
    """prompt + response + EOS as in training -> (token ids, prompt tokens). A chat prompt is a list of messages."""
    if isinstance(prompt, list):
        prompt_text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        if tok.eos_token in text:  # the sequence ends at the EOS that closes the answer (ChatML adds a newline)
            end = text.rindex(tok.eos_token) + len(tok.eos_token)
            text = text[:end] if not text[end:].strip() else text
    else:
        prompt_text, text = prompt, prompt + response
    ids = ids_of(text)
    if ids[-1] != tok.eos_token_id:
        ids.append(tok.eos_token_id)
    return ids, min(len(ids_of(prompt_text)), len(ids) - 1)


@torch.no_grad()
def head_score(prompt, response):
    ids, _ = encode(prompt, response)
    return rm(torch.tensor([ids])).logits[0, 0].item()  # one unpadded sequence: read at its last token, the EOS
'''

CARD_LIKELIHOOD_CODE = '''

spec = json.load(open(os.path.join(REWARD_DIR, "likelihood_feature.json")))
lm = AutoModelForCausalLM.from_pretrained(os.path.join(REWARD_DIR, spec["model"])).eval()


@torch.no_grad()
def score(prompt, response):
    """The reward: the head's score + w * the language model's mean log-probability of the response (EOS included)."""
    ids, n_prompt = encode(prompt, response)
    x = torch.tensor([ids])
    logp = lm(x).logits[0, :-1].float().log_softmax(-1).gather(-1, x[0, 1:, None])[:, 0]  # token t given t-1
    return head_score(prompt, response) + spec["weight"] * logp[max(n_prompt, 1) - 1 :].mean().item()
'''


def model_card(architecture: str, *, likelihood: dict | None, centred: bool) -> str:
    """README.md of a reward model directory: what its score is and how to compute it with transformers alone."""
    lines = [
        "# Reward model",
        "",
        f"A `{architecture}` with one output, trained with `python -m trainer reward` on preference labels "
        "(Bradley–Terry; settings in `trainer_config.json`). It gives one number for a prompt and a response: higher "
        "is preferred. Only differences between scores of the same prompt carry meaning"
        + ("; the training data's preferred responses average about 0." if centred else "."),
        "",
        "The score is read at the EOS token that ends `prompt + response + EOS`, the text rendered as in training: a "
        "chat prompt through the tokenizer's own chat template (with BOS once, the template's or the tokenizer's), a "
        "text prompt as `prompt + response`. Score one sequence at a time, as the code below does: transformers then "
        "reads the score at the last token. (When the tokenizer pads with its EOS, `config.pad_token_id` is unset, "
        "so transformers refuses a padded batch rather than read the token before the EOS.)",
        "",
    ]
    if likelihood is None:
        lines += [
            "The classifier's output is the whole score: `AutoModelForSequenceClassification` alone gives the reward.",
        ]
    else:
        lines += [
            "**The classifier alone gives only part of the reward.** The reward is the head's score plus "
            f"w · (mean log-probability of the response's tokens, EOS included, under the language model at "
            f"`{likelihood['model']}`, relative to this directory), w = {likelihood['weight']:.6g}, as "
            "`likelihood_feature.json` records. The head-only score (`head_score` below) is what the backbone and "
            "head learned beyond that likelihood: it ranks responses as the labels did only together with the "
            "likelihood term, so never compare a head-only score with a full one, nor use it as the reward.",
            "",
            "Keep the language model beside this directory (the path is relative, so moving the whole data "
            "directory keeps the pair working).",
        ]
    lines += [
        "",
        "## Scoring with transformers alone",
        "",
        "```python",
        CARD_CODE.rstrip() + (CARD_LIKELIHOOD_CODE.rstrip() if likelihood is not None else "\n\n\nscore = head_score"),
        "```",
        "",
        "In this project: `trainer.reward_scoring.load_reward_scorer(DIR, tokenizer)`, or the judge `rm:DIR`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(directory: Path, architecture: str, *, centred: bool) -> None:
    spec_file = directory / LIKELIHOOD_FILE
    likelihood = json.loads(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else None
    card = model_card(architecture, likelihood=likelihood, centred=centred)
    (directory / "README.md").write_text(card, encoding="utf-8")
