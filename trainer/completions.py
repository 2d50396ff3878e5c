"""Sampling K completions for each prompt of a file, as output records: what `generate` writes and best-of-n
scores.

Each sample's seed is derived from (request seed, prompt_id, sample) and drives that sample alone, so the same
request and seed give the same texts whatever the batch size or the other prompts in the file. Work is sorted by
prompt length before batching (length bucketing: little padding). The ranges of the sampling settings are
domain.sampling's, the ones the service checks too.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch

from domain.sampling import sampling_problem
from trainer.config import UsageError
from trainer.context_fit import prompt_limit
from trainer.masks import pad_sequences
from trainer.outputs import progress
from trainer.prompt_data import PromptRecord, read_prompts
from trainer.runtime import load_causal_lm, load_tokenizer, model_context
from trainer.sampling import derive_seed, make_generator, sample_prompts


class SamplingSettings(Protocol):
    """The fields of a stage config that sampling reads (generate's and best-of-n's configs have them)."""

    num_samples: int
    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int
    seed: int
    precision: str
    batch_size: int


def check_sampling(config: SamplingSettings) -> None:
    """The sampling flags' ranges (domain.sampling) and the batch size."""
    problem = sampling_problem(
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        flag="--",
    )
    if problem:
        raise UsageError(problem)
    if config.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")


def load_sampler(model_path: str, prompts_path: str, max_new_tokens: int, device: torch.device):
    """(tokenizer, model in eval mode, prompts, skipped lines) for sampling: the prompts encoded, those that leave
    less than --max-new-tokens of the model's context skipped (trainer.context_fit)."""
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path, device, train=False, tokenizer=tok)
    context = model_context(model)
    if max_new_tokens >= context:
        raise UsageError(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's {context}-token context"
        )
    skipped: list[int] = []
    prompts = read_prompts(tok, prompts_path, max_prompt_tokens=prompt_limit(context, max_new_tokens), skipped=skipped)
    return tok, model, prompts, skipped


def generate_samples(
    model, tok, prompts: list[PromptRecord], config: SamplingSettings, device: torch.device, on_metrics=None
) -> list[dict]:
    """All samples as output records, ordered by prompt then sample index."""
    work = [
        (pi, k, derive_seed(config.seed, p.prompt_id, k))
        for pi, p in enumerate(prompts)
        for k in range(config.num_samples)
    ]
    work.sort(key=lambda w: len(prompts[w[0]].ids))  # length buckets (stable: ties keep input order)
    results: dict[tuple[int, int], dict] = {}
    n_batches = (len(work) + config.batch_size - 1) // config.batch_size
    started, generated = time.perf_counter(), 0
    with progress(total=len(work), desc="generate") as bar:
        for b in range(n_batches):
            chunk = work[b * config.batch_size : (b + 1) * config.batch_size]
            ids, mask = pad_sequences(
                [prompts[pi].ids for pi, _, _ in chunk], pad_token_id=tok.pad_token_id, side="left"
            )
            generators = [make_generator(seed) for _, _, seed in chunk]
            out = sample_prompts(model, tok, ids.to(device), mask.to(device), config, generators)
            tokens, lengths = out.tokens.cpu(), out.lengths.cpu()
            logprob = out.logprobs.sum(-1).cpu()  # [B], 0 on padding
            for row, (pi, k, seed) in enumerate(chunk):
                n, finished = int(lengths[row]), bool(out.finished[row])
                text_ids = tokens[row, : n - 1 if finished else n].tolist()  # the EOS is not part of the text
                # annotators read it: no special token (a chat template's turn markers, BOS) ever shows
                results[(pi, k)] = {
                    "prompt_id": prompts[pi].prompt_id,
                    "sample": k,
                    "text": tok.decode(text_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
                    "finish_reason": "eos" if finished else "length",
                    "num_tokens": n,
                    "logprob": float(logprob[row]),
                    "temperature": config.temperature,
                    "top_k": config.top_k,
                    "top_p": config.top_p,
                    "max_new_tokens": config.max_new_tokens,
                    "seed": seed,
                }
            generated += int(lengths.sum())
            bar.update(len(chunk))
            if on_metrics is not None:
                on_metrics(
                    {
                        "step": b + 1,
                        "total_steps": n_batches,
                        "samples": len(results),
                        "tokens_per_sec": generated / max(1e-9, time.perf_counter() - started),
                    }
                )
    return [results[(pi, k)] for pi in range(len(prompts)) for k in range(config.num_samples)]
