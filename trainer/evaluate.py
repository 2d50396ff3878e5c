"""`python -m trainer evaluate`: numbers to decide whether a round helped. Prints one JSON object.

Parts run according to the flags given:
  --reward-model DIR --data FILE         reward-model accuracy (and loss, margin, calibration) on held-out pairs
  --policy DIR --prompts FILE            samples from the policy: mean length, distinct-1/2, EOS rate
     + --judge rm:DIR | py:mod:function  mean judge score of the policy's responses
     + --baseline DIR                    the same for policy B, and A's win-rate against B under the judge
                                         (ties count half; with its standard error over prompts);
                                         both policies answer with the same per-sample seeds
       + --samples-out FILE              each prompt's answers of A and B side by side, with their judge scores
                                         (JSONL), for the checks that name the suspicious samples
     + --ref DIR                         KL(policy || ref) per response (k1 mean, and k3), at the sampling temperature
     + --tuned-from DIR                  the same KL to the policy this one was tuned from: how far the tuning moved it
Judges are trainer.judges': a `py:` judge is any importable callable `(prompt: str, response: str) -> float`; chat
prompts are given to it rendered by the chat template.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.config import UsageError
from trainer.context_fit import SKIPPED_METRIC, prompt_limit, sequence_limit
from trainer.judges import load_judge
from trainer.logprobs import kl_estimate, response_logprobs
from trainer.masks import pad_sequences
from trainer.outputs import atomic_output_file
from trainer.preference_data import load_preferences
from trainer.prompt_data import load_prompts, prompt_conversations
from trainer.reward_scoring import evaluate_pairs, load_reward_scorer
from trainer.runtime import (
    autocast,
    load_causal_lm,
    load_tokenizer,
    model_dir_context,
    resolve_device,
    seed_everything,
)
from trainer.sampling import derive_seed, make_generator, sample_prompts


@dataclass(kw_only=True)
class EvaluateConfig:
    reward_model: str = field(default="", metadata={"help": "Reward model whose accuracy on --data is measured."})
    data: str = field(default="", metadata={"help": "Held-out preference JSONL (trl, rankings, kto formats)."})
    policy: str = field(default="", metadata={"help": "Policy A (causal LM directory)."})
    baseline: str = field(default="", metadata={"help": "Policy B, for the win-rate of A against B."})
    prompts: str = field(default="", metadata={"help": 'Prompt JSONL {"prompt_id"?, "prompt" | "messages"}.'})
    judge: str = field(default="", metadata={"help": "rm:DIR (a reward model) or py:module:function."})
    ref: str = field(default="", metadata={"help": "Reference policy for KL(policy || ref)."})
    tuned_from: str = field(
        default="", metadata={"help": "The policy --policy was tuned from, for KL(policy || it): how far it moved."}
    )
    num_samples: int = field(default=1, metadata={"help": "Samples per prompt and policy."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_k: int = field(default=0, metadata={"help": "Top-k (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Top-p (1.0 = off)."})
    seed: int = field(default=0, metadata={"help": "Per-sample seeds derive from (seed, prompt_id, sample)."})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda.", "choices": ["auto", "cpu", "cuda"]})
    precision: str = field(default="auto", metadata={"help": "auto|fp32|bf16.", "choices": ["auto", "fp32", "bf16"]})
    batch_size: int = field(default=32, metadata={"help": "Sequences per forward."})
    out: str = field(default="", metadata={"help": "Also write the JSON to this file."})
    samples_out: str = field(
        default="",
        metadata={"help": "With --baseline: write A's and B's answer to each prompt and sample, scored, as JSONL."},
    )


# ----------------------------------------------------------------------------- text statistics


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over whitespace words of all texts (Li et al. 2016)."""
    grams, total = set(), 0
    for t in texts:
        w = t.split()
        for i in range(len(w) - n + 1):
            grams.add(tuple(w[i : i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def win_rate(a: list[float], b: list[float], tol: float = 1e-9, *, per_prompt: int = 1) -> dict:
    """A's win-rate against B, ties counting half, with its standard error.

    The samples come prompt by prompt, `per_prompt` of each; the standard error is over prompts (the mean outcome
    of each prompt, std / sqrt(prompts)), since samples of one prompt are not independent: 4 samples of 200 prompts
    are not 800 independent draws. None with fewer than two prompts."""
    outcomes = [1.0 if x > y + tol else 0.0 if y > x + tol else 0.5 for x, y in zip(a, b)]
    wins, losses = outcomes.count(1.0), outcomes.count(0.0)
    ties = len(outcomes) - wins - losses
    means = [statistics.fmean(outcomes[i : i + per_prompt]) for i in range(0, len(outcomes), per_prompt)]
    standard_error = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else None
    return {
        "win_rate": (wins + 0.5 * ties) / max(len(outcomes), 1),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": len(outcomes),
        "prompts": len(means),
        "standard_error": standard_error,
    }


# ----------------------------------------------------------------------------- sampling


@dataclass
class Samples:
    prompt_ids_of: list[str]  # the prompt_id of each sample
    prompt_texts: list[str]
    texts: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # incl. the EOS when finished
    finished: list[bool]


@torch.no_grad()
def sample_policy(model, tok, prompts: list[tuple[str, list[int]]], cfg: EvaluateConfig, device) -> Samples:
    work = [(pid, ids, k) for pid, ids in prompts for k in range(cfg.num_samples)]
    s = Samples([], [], [], [], [], [])
    for i in range(0, len(work), cfg.batch_size):
        chunk = work[i : i + cfg.batch_size]
        ids, mask = pad_sequences([w[1] for w in chunk], pad_token_id=tok.pad_token_id, side="left")
        gens = [make_generator(derive_seed(cfg.seed, pid, k)) for pid, _, k in chunk]
        out = sample_prompts(model, tok, ids.to(device), mask.to(device), cfg, gens)
        for row, (pid, p_ids, _) in enumerate(chunk):
            n, fin = int(out.lengths[row]), bool(out.finished[row])
            resp = out.tokens[row, :n].tolist()
            s.prompt_ids_of.append(pid)
            s.prompt_ids.append(p_ids)
            s.response_ids.append(resp)
            s.finished.append(fin)
            s.prompt_texts.append(tok.decode(p_ids, skip_special_tokens=False))
            s.texts.append(tok.decode(resp[:-1] if fin else resp, skip_special_tokens=True))  # as generate writes it
    return s


@torch.no_grad()
def kl_to_ref(policy, ref, tok, s: Samples, cfg: EvaluateConfig, device) -> dict:
    """Per-response KL(policy || ref), summed over tokens, on the policy's own samples."""
    temp = cfg.temperature if cfg.temperature > 0 else 1.0
    banned = tok.pad_token_id if tok.pad_token_id != tok.eos_token_id else None
    k1, k3 = [], []
    for i in range(0, len(s.texts), cfg.batch_size):
        p_ids, mask_p = pad_sequences(s.prompt_ids[i : i + cfg.batch_size], pad_token_id=tok.pad_token_id, side="left")
        r_ids, mask_r = pad_sequences(s.response_ids[i : i + cfg.batch_size], pad_token_id=tok.pad_token_id)
        ids = torch.cat([p_ids, r_ids], 1).to(device)
        mask = torch.cat([mask_p, mask_r], 1).to(device)
        P = p_ids.shape[1]
        with autocast(device, cfg.precision):
            lp = response_logprobs(policy, ids, mask, P, temp, banned_token=banned)
            lq = response_logprobs(ref, ids, mask, P, temp, banned_token=banned)
        m = mask_r.to(device).float()
        k1 += (kl_estimate(lp, lq, "k1") * m).sum(1).tolist()
        k3 += (kl_estimate(lp, lq, "k3") * m).sum(1).tolist()
    return {"kl_to_ref": sum(k1) / max(len(k1), 1), "kl_to_ref_k3": sum(k3) / max(len(k3), 1)}


def describe(s: Samples) -> dict:
    n = max(len(s.texts), 1)
    return {
        "mean_length": sum(len(r) for r in s.response_ids) / n,  # tokens, EOS included
        "eos_rate": sum(s.finished) / n,
        "distinct_1": distinct_n(s.texts, 1),
        "distinct_2": distinct_n(s.texts, 2),
        "samples": len(s.texts),
    }


def paired_samples(a: Samples, a_scores: list[float], b: Samples, b_scores: list[float], cfg: EvaluateConfig):
    """A's and B's answer to the same prompt and sample index (the same seed), with their judge scores. A prompt
    only one policy could answer (too long for the other's context) is left out."""

    def rows(s: Samples, scores: list[float]) -> dict[tuple[str, int], dict]:
        out, seen = {}, {}
        for i, pid in enumerate(s.prompt_ids_of):
            k = seen[pid] = seen.get(pid, -1) + 1
            out[(pid, k)] = {
                "text": s.texts[i],
                "tokens": len(s.response_ids[i]),
                "finished": s.finished[i],
                "score": scores[i],
            }
        return out

    after, before = rows(a, a_scores), rows(b, b_scores)
    for (pid, k), answer in after.items():
        if (pid, k) in before:
            yield {
                "prompt_id": pid,
                "sample": k,
                "seed": derive_seed(cfg.seed, pid, k),
                "policy": answer,
                "baseline": before[(pid, k)],
            }


def write_paired_samples(path: str, a: Samples, a_scores, b: Samples, b_scores, cfg: EvaluateConfig) -> None:
    with atomic_output_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in paired_samples(a, a_scores, b, b_scores, cfg):
                fh.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- entry


def _prompt_budget(config: EvaluateConfig) -> int:
    """Prompt tokens that leave --max-new-tokens in every sampled model's context: policy and baseline answer the
    same prompts, so the win-rate compares like with like."""
    contexts = [model_dir_context(p) for p in (config.policy, config.baseline) if p]
    return prompt_limit(min(contexts), config.max_new_tokens)


def _fitting_prompts(config: EvaluateConfig, tok, skipped: list[int] | None = None) -> list[tuple[str, list[int]]]:
    budget = _prompt_budget(config)
    if budget < 1:
        raise UsageError(f"--max-new-tokens {config.max_new_tokens} leaves no room for a prompt in the context")
    return load_prompts(config.prompts, tok, max_prompt_tokens=budget, skipped=skipped)


def run_evaluate(config: EvaluateConfig, *, on_metrics=None) -> dict:
    if not (config.reward_model and config.data) and not (config.policy and config.prompts):
        raise UsageError("nothing to evaluate: give --reward-model with --data, and/or --policy with --prompts")
    if bool(config.reward_model) != bool(config.data):
        raise UsageError("--reward-model and --data go together")
    if (config.baseline or config.judge or config.ref or config.tuned_from) and not (config.policy and config.prompts):
        raise UsageError("--baseline, --judge, --ref and --tuned-from need --policy and --prompts")
    if config.baseline and not config.judge:
        raise UsageError("--baseline needs a --judge (rm:DIR or py:module:function) to compare with")
    if config.samples_out and not config.baseline:
        raise UsageError("--samples-out needs --baseline: it pairs the two policies' answers")
    if config.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")
    device = resolve_device(config.device)
    seed_everything(config.seed)
    result: dict = {}
    skipped = {"pairs": 0, "prompts": 0}  # inputs too long for the models (trainer.context_fit)
    if config.reward_model:
        tok = load_tokenizer(config.reward_model)
        pairs = load_preferences(
            config.data, tok, ties="half", max_length=sequence_limit(model_dir_context(config.reward_model))
        )
        skipped["pairs"] = pairs.skipped_too_long
        scorer = load_reward_scorer(config.reward_model, tok, device)
        result["reward_model"] = evaluate_pairs(
            scorer,
            pairs.groups,
            pad_token_id=tok.pad_token_id,
            device=device,
            precision=config.precision,
            batch_size=config.batch_size,
        )
    if config.policy:
        judge = load_judge(config.judge, device, config.precision) if config.judge else None
        chats = prompt_conversations(config.prompts)  # a reward-model judge renders a chat with its own template
        tok = load_tokenizer(config.policy)
        skipped_lines: list[int] = []
        prompts = _fitting_prompts(config, tok, skipped_lines)
        skipped["prompts"] = len(skipped_lines)
        policy = load_causal_lm(config.policy, device, tokenizer=tok)
        a = sample_policy(policy, tok, prompts, config, device)
        result["policy"] = describe(a)
        if config.ref:
            ref = load_causal_lm(config.ref, device, tokenizer=tok)
            result["policy"].update(kl_to_ref(policy, ref, tok, a, config, device))
            del ref
        if config.tuned_from:
            start = load_causal_lm(config.tuned_from, device, tokenizer=tok)
            moved = kl_to_ref(policy, start, tok, a, config, device)
            result["policy"]["kl_to_tuned_from"] = moved["kl_to_ref"]
            result["policy"]["kl_to_tuned_from_k3"] = moved["kl_to_ref_k3"]
            del start
        del policy
        if judge is not None:
            a_scores = judge(a.prompt_texts, a.texts, [chats.get(pid) for pid in a.prompt_ids_of])
            result["policy"]["judge_mean"] = sum(a_scores) / len(a_scores)
        if config.baseline:
            btok = load_tokenizer(config.baseline)
            baseline = load_causal_lm(config.baseline, device, tokenizer=btok)
            b = sample_policy(baseline, btok, _fitting_prompts(config, btok), config, device)
            del baseline
            result["baseline"] = describe(b)
            b_scores = judge(b.prompt_texts, b.texts, [chats.get(pid) for pid in b.prompt_ids_of])
            result["baseline"]["judge_mean"] = sum(b_scores) / len(b_scores)
            result["win_rate"] = win_rate(a_scores, b_scores, per_prompt=config.num_samples)
            if config.samples_out:
                write_paired_samples(config.samples_out, a, a_scores, b, b_scores, config)
    result[SKIPPED_METRIC] = skipped
    if config.out:
        with atomic_output_file(config.out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _register() -> None:
    from trainer.cli import register_stage

    register_stage(
        name="evaluate",
        config_cls=EvaluateConfig,
        entry=run_evaluate,
        help="RM accuracy on held-out pairs; a policy's length, diversity, KL to a reference, "
        "and its win-rate against a baseline under a judge. Prints JSON.",
    )


_register()
