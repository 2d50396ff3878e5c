"""`generate` stage: K samples per prompt from any causal LM, batched with a KV cache, written as JSONL.

Input JSONL: {"prompt_id", "prompt": str} or {"prompt_id", "messages": [...]} (rendered by the chat
template with the generation prompt). Output: one line per sample, in input order then sample order:
{"prompt_id", "sample", "text", "finish_reason": "eos"|"length", "num_tokens", "logprob", "temperature",
 "top_k", "top_p", "max_new_tokens", "seed"}. A prompt too long for the context with --max-new-tokens is skipped
(trainer.context_fit): stderr names its line and it has no output line.
Each sample's seed is derived from (request seed, prompt_id, sample) and drives that sample alone, so the
same request and seed give the same texts whatever the batch size or the other prompts in the file
(trainer.completions, which best-of-n samples through as well).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.completions import check_sampling, generate_samples, load_sampler
from trainer.config import UsageError
from trainer.outputs import atomic_output_file
from trainer.runtime import resolve_device


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


def run_generate(config: GenerateConfig, *, on_metrics=None) -> Path:
    if config.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")
    check_sampling(config)
    if not Path(config.prompts).is_file():
        raise UsageError(f"{config.prompts}: no such file")
    if Path(config.out).exists():
        raise UsageError(f"{config.out}: output already exists; choose a new --out")
    device = resolve_device(config.device)
    # prompts too long for the context are skipped (trainer.context_fit): the output has no line for them
    tok, model, prompts, _skipped = load_sampler(config.model, config.prompts, config.max_new_tokens, device)
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
