"""`generate` stage: K samples per prompt from any causal LM, batched with a KV cache, written as JSONL.

Input JSONL: {"prompt_id", "prompt": str} or {"prompt_id", "messages": [...]} (rendered by the chat
template with the generation prompt). Output: one line per sample, in input order then sample order:
{"prompt_id", "sample", "text", "finish_reason": "eos"|"length", "num_tokens", "logprob", "temperature",
 "top_k", "top_p", "max_new_tokens", "seed"}. A prompt too long for the context with --max-new-tokens is skipped
(trainer.context_fit): stderr names its line and it has no output line.
Each sample's seed is derived from (request seed, prompt_id, sample) and drives that sample alone, so the
same request and seed give the same texts whatever the batch size or the other prompts in the file
(trainer.completions, which best-of-n samples through as well).

Active selection (`--select uncertainty|disagreement --reward-model DIR...`): each prompt gets --num-samples x
--oversample candidates, every one scored by each reward model, and only the chosen groups are written
(trainer.active_selection): --num-samples per kept prompt, in groups of --group-size, each line with its `group`
(index within the prompt), `selection` and `selection_score`; --keep-prompts of the file's prompts are kept, a
--random-share of them drawn at random. `sample` stays the candidate's index, so its seed still says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domain.vocabulary import SELECTIONS
from trainer.active_selection import select_groups
from trainer.completions import check_sampling, generate_samples, load_sampler
from trainer.config import UsageError
from trainer.judges import load_judge
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
    select: str = field(
        default="random",
        metadata={
            "help": "Which candidates people see: random (the first samples), uncertainty (the first reward "
            "model's Bradley-Terry probability nearest 0.5) or disagreement (between the reward models).",
            "choices": list(SELECTIONS),
        },
    )
    reward_model: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward model(s) that score the candidates (the current one first).", "metavar": "DIR..."},
    )
    oversample: int = field(default=1, metadata={"help": "Candidates per prompt = --num-samples x this."})
    group_size: int = field(
        default=0, metadata={"help": "Responses per task: 2 for pairs; 0 = --num-samples (one group per prompt)."}
    )
    keep_prompts: int = field(default=0, metadata={"help": "Prompts kept, the most informative (0 = all)."})
    random_share: float = field(
        default=0.0, metadata={"help": "Share of the kept prompts drawn at random, for unbiased evaluation data."}
    )


def _check_selection(config: GenerateConfig) -> None:
    if config.select == "random":
        return
    group = config.group_size or config.num_samples
    if config.num_samples < 2 or group < 2 or config.num_samples % group:
        raise UsageError("--select: --num-samples must be a multiple of --group-size, at least 2")
    if config.oversample < 1 or config.keep_prompts < 0 or not 0 <= config.random_share <= 1:
        raise UsageError("--oversample must be >= 1, --keep-prompts >= 0 and --random-share in [0, 1]")
    needed = 2 if config.select == "disagreement" else 1
    if len(config.reward_model) < needed:
        raise UsageError(
            f"--select {config.select} needs at least {needed} --reward-model, got {len(config.reward_model)}"
        )
    for path in config.reward_model:
        if not Path(path).is_dir():
            raise UsageError(f"--reward-model {path}: no such directory")


def select_records(records: list[dict], prompt_texts: list[str], config: GenerateConfig, device) -> list[dict]:
    """Every candidate scored by each reward model; the chosen groups' samples, prompt by prompt, group by group."""
    n = config.num_samples * config.oversample
    rewards = []  # [M][all candidates]
    for path in config.reward_model:
        judge = load_judge(f"rm:{path}", device, config.precision)
        rewards.append(judge([prompt_texts[i // n] for i in range(len(records))], [r["text"] for r in records]))
        del judge
    all_rewards = torch.tensor(rewards)  # [M, P * n]
    per_prompt = range(len(prompt_texts))
    group = config.group_size or config.num_samples
    chosen = select_groups(
        [all_rewards[:, p * n : (p + 1) * n] for p in per_prompt],
        [[r["text"] for r in records[p * n : (p + 1) * n]] for p in per_prompt],
        criterion=config.select,
        group_size=group,
        n_groups=config.num_samples // group,
        keep_prompts=config.keep_prompts,
        random_share=config.random_share,
        seed=config.seed,
    )
    out = []
    for p in sorted(chosen):
        for g, grp in enumerate(chosen[p]):
            for i in grp.samples:
                out.append({**records[p * n + i], "group": g, "selection": grp.selection, "selection_score": grp.score})
    return out


def run_generate(config: GenerateConfig, *, on_metrics=None) -> Path:
    if config.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")
    check_sampling(config)
    _check_selection(config)
    if not Path(config.prompts).is_file():
        raise UsageError(f"{config.prompts}: no such file")
    if Path(config.out).exists():
        raise UsageError(f"{config.out}: output already exists; choose a new --out")
    device = resolve_device(config.device)
    # prompts too long for the context are skipped (trainer.context_fit): the output has no line for them
    tok, model, prompts, _skipped = load_sampler(config.model, config.prompts, config.max_new_tokens, device)
    selecting = config.select != "random"
    sampling = dataclasses.replace(config, num_samples=config.num_samples * config.oversample) if selecting else config
    with torch.inference_mode():
        records = generate_samples(model, tok, prompts, sampling, device, on_metrics)
    if selecting:
        del model
        # the reward models see the prompt as the policy saw it (chat template applied), as best-of-n's judge does
        prompt_texts = [tok.decode(p.ids, skip_special_tokens=False) for p in prompts]
        with torch.inference_mode():
            records = select_records(records, prompt_texts, config, device)
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
