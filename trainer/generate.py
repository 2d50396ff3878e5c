"""`generate` stage: K samples per prompt from any causal LM, batched with a KV cache, written as JSONL.

Input JSONL: {"prompt_id", "prompt": str} or {"prompt_id", "messages": [...]} (rendered by the chat
template with the generation prompt). Output: one line per sample, in input order then sample order:
{"prompt_id", "sample", "text", "finish_reason": "eos"|"length", "num_tokens", "logprob", "temperature",
 "top_k", "top_p", "max_new_tokens", "seed"}.
Each sample's seed is derived from (request seed, prompt_id, sample) and drives that sample alone, so the
same request and seed give the same texts whatever the batch size or the other prompts in the file.
Work is sorted by prompt length before batching (length bucketing: little padding).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.config import UsageError
from trainer.data import DataError, read_jsonl, require_messages
from trainer.outputs import atomic_output_file, progress
from trainer.runtime import autocast, load_causal_lm, load_tokenizer, resolve_device
from trainer.sampling import derive_seed, make_generator, sample_batch
from trainer.sft import model_context


@dataclass(kw_only=True)
class GenerateConfig:
    model: str = field(
        metadata={"help": "Any Hugging Face causal LM directory (with its tokenizer).", "metavar": "DIR"}
    )
    prompts: str = field(metadata={"help": "JSONL with {prompt_id, prompt | messages} lines.", "metavar": "FILE"})
    out: str = field(metadata={"help": "Output JSONL file (must not exist).", "metavar": "FILE"})
    num_samples: int = field(default=1, metadata={"help": "Samples per prompt (K)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely tokens (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0 = off)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Maximum generated tokens per sample."})
    seed: int = field(default=0, metadata={"help": "Request seed; per-sample seeds derive from it."})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda.", "choices": ["auto", "cpu", "cuda"]})
    precision: str = field(default="auto", metadata={"help": "auto|fp32|bf16.", "choices": ["auto", "fp32", "bf16"]})
    batch_size: int = field(default=32, metadata={"help": "Sequences decoded together."})


@dataclass
class PromptRecord:
    line: int
    prompt_id: str | int
    ids: list[int]


def check_sampling(config: GenerateConfig) -> None:
    """The sampling flags' ranges (shared with best-of-n, which samples through this module)."""
    if config.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")
    if config.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if config.temperature < 0:
        raise UsageError("--temperature must be >= 0")
    if config.top_k < 0:
        raise UsageError("--top-k must be >= 0 (0 = off)")
    if not 0 < config.top_p <= 1:
        raise UsageError("--top-p must be in (0, 1] (1.0 = off)")
    if config.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")


def encode_prompt(tok, obj: dict, path: str, line: int) -> list[int]:
    if "messages" in obj:
        if getattr(tok, "chat_template", None) is None:
            raise DataError(path, line, "chat prompt needs a tokenizer with a chat template")
        text = tok.apply_chat_template(require_messages(obj, path, line), tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    elif isinstance(obj.get("prompt"), str):
        ids = tok(obj["prompt"])["input_ids"]
    else:
        raise DataError(path, line, 'expected "prompt" (string) or "messages"')
    if not ids:  # an empty prompt starts from BOS (GPT-2 style: the document separator)
        ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    return list(ids)


def read_prompts(tok, path: str, *, max_prompt_tokens: int) -> list[PromptRecord]:
    records, seen = [], {}
    for line, obj in read_jsonl(path):
        pid = obj.get("prompt_id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise DataError(path, line, '"prompt_id" must be a string or an integer')
        if str(pid) in seen:
            raise DataError(path, line, f"duplicate prompt_id {pid!r} (first at line {seen[str(pid)]})")
        seen[str(pid)] = line
        ids = encode_prompt(tok, obj, path, line)
        if len(ids) > max_prompt_tokens:
            raise DataError(
                path,
                line,
                f"prompt is {len(ids)} tokens; with --max-new-tokens it exceeds the "
                f"model's context (at most {max_prompt_tokens} prompt tokens)",
            )
        records.append(PromptRecord(line, pid, ids))
    return records


def left_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, P] and mask [B, P], padded on the left so every row's next token is at column P."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, P - len(r) :] = torch.tensor(r)
        mask[i, P - len(r) :] = 1
    return ids, mask


def generate_samples(
    model, tok, prompts: list[PromptRecord], config: GenerateConfig, device: torch.device, on_metrics=None
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
            ids, mask = left_pad([prompts[pi].ids for pi, _, _ in chunk], tok.pad_token_id)
            with autocast(device, config.precision):
                out = sample_batch(
                    model,
                    ids.to(device),
                    mask.to(device),
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_k=config.top_k,
                    top_p=config.top_p,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id,
                    generators=[make_generator(seed) for _, _, seed in chunk],
                )
            tokens, lengths = out.tokens.cpu(), out.lengths.cpu()
            logprob = out.logprobs.sum(-1).cpu()  # [B], 0 on padding
            for row, (pi, k, seed) in enumerate(chunk):
                n, finished = int(lengths[row]), bool(out.finished[row])
                text_ids = tokens[row, : n - 1 if finished else n].tolist()  # the EOS is not part of the text
                results[(pi, k)] = {
                    "prompt_id": prompts[pi].prompt_id,
                    "sample": k,
                    "text": tok.decode(text_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
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


def load_sampler(config: GenerateConfig, device: torch.device):
    """(tokenizer, model in eval mode, prompts) for sampling: the prompts encoded and checked to fit the model's
    context with --max-new-tokens (shared with best-of-n)."""
    tok = load_tokenizer(config.model)
    model = load_causal_lm(config.model, device, train=False, tokenizer=tok)
    context = model_context(model)
    if config.max_new_tokens >= context:
        raise UsageError(
            f"--max-new-tokens {config.max_new_tokens} leaves no room for a prompt "
            f"in the model's {context}-token context"
        )
    return tok, model, read_prompts(tok, config.prompts, max_prompt_tokens=context - config.max_new_tokens)


def run_generate(config: GenerateConfig, *, on_metrics=None) -> Path:
    check_sampling(config)
    if not Path(config.prompts).is_file():
        raise UsageError(f"{config.prompts}: no such file")
    if Path(config.out).exists():
        raise UsageError(f"{config.out}: output already exists; choose a new --out")
    device = resolve_device(config.device)
    tok, model, prompts = load_sampler(config, device)
    with torch.inference_mode():
        records = generate_samples(model, tok, prompts, config, device, on_metrics)
    with atomic_output_file(config.out) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return Path(config.out)


from trainer.cli import register_stage  # noqa: E402

register_stage(
    name="generate",
    config_cls=GenerateConfig,
    entry=run_generate,
    help="Sample K completions per prompt (batched, KV cache) into a JSONL file.",
)
