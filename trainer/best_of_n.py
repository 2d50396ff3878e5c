"""`best-of-n` stage: rejection sampling (Llama 2 §3.2.3; the "best-of-n" of Nakano et al. 2021, distilled).

N samples per prompt from the policy, scored by a judge (a reward model, or any python scorer); the best
finished sample of each prompt becomes an SFT example. `python -m trainer sft` on the output then moves the
policy towards its own best answers: a cheap, stable alternative (or warm-up) to PPO that needs no value model,
and whose step size is bounded by what the policy can already sample.

Output directory:
  best.jsonl       SFT data, one line per prompt: {"prompt", "completion"} (or {"messages"} ending in the
                   assistant's answer) + prompt_id, sample, reward, reward_mean (of the prompt's N samples)
  samples.jsonl    every sample with its reward (generate's fields + "reward"), to inspect what was rejected
  metrics.jsonl    rs/* figures, reward_length_corr, skipped_too_long (prompts that leave less than
                   --max-new-tokens of the context: trainer.context_fit) and memory/peak_mb; trainer_config.json
Truncated samples (no EOS) never win: an SFT target that stops mid-sentence teaches the policy to do so.
A prompt none of whose samples finished gives no example.

Under torchrun (WORLD_SIZE > 1) each process samples and judges its share of the prompts (prompts[rank::world]);
rank 0 gathers the samples in prompt order and writes. Per-sample seeds derive from (seed, prompt_id, sample), so
the samples are one process's whatever the share.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.completions import check_sampling, generate_samples, load_sampler
from trainer.config import UsageError
from trainer.context_fit import SKIPPED_METRIC
from trainer.data import read_jsonl
from trainer.distributed import NoOutput, dist_info, end_process_group, gather_groups, process_device
from trainer.judges import load_judge
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, save_trainer_config
from trainer.runtime import resolve_device


@dataclass(kw_only=True)
class BestOfNConfig:
    policy: str = field(metadata={"help": "Causal LM to sample from (with its tokenizer).", "metavar": "DIR"})
    judge: str = field(
        metadata={
            "help": "What picks the best sample: rm:DIR (a reward model) or "
            "py:module:function (prompt, response) -> float.",
            "metavar": "SPEC",
        }
    )
    prompts: str = field(metadata={"help": "JSONL with {prompt_id, prompt | messages} lines.", "metavar": "FILE"})
    out: str = field(metadata={"help": "Output directory (must not exist).", "metavar": "DIR"})
    num_samples: int = field(default=8, metadata={"help": "Samples per prompt (N)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (> 0)."})
    top_k: int = field(default=0, metadata={"help": "Top-k (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Top-p (1.0 = off)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Maximum generated tokens per sample."})
    seed: int = field(default=0, metadata={"help": "Request seed; per-sample seeds derive from it."})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda.", "choices": ["auto", "cpu", "cuda"]})
    precision: str = field(default="auto", metadata={"help": "auto|fp32|bf16.", "choices": ["auto", "fp32", "bf16"]})
    batch_size: int = field(default=32, metadata={"help": "Sequences decoded together."})


def _check_config(config: BestOfNConfig) -> None:
    check_sampling(config)  # the ranges every sampler shares (domain.sampling), and the batch size
    if config.num_samples < 2:
        raise UsageError("--num-samples must be at least 2: the best of one sample is no selection")
    if config.temperature <= 0:
        raise UsageError("--temperature must be > 0: greedy decoding gives N copies of one answer")
    if not Path(config.policy).is_dir():
        raise UsageError(f"{config.policy}: no such model directory")
    if config.judge.startswith("rm:") and not Path(config.judge[3:]).is_dir():
        raise UsageError(f"--judge {config.judge}: no such reward-model directory")
    if not Path(config.prompts).is_file():
        raise UsageError(f"{config.prompts}: no such file")
    if Path(config.out).exists():
        raise UsageError(f"{config.out}: output already exists; choose a new --out")


def sft_example(prompt: dict, text: str) -> dict:
    """The prompt's record with the answer, in the SFT stage's format (the prompt's own: text or chat)."""
    if "messages" in prompt:
        return {"messages": [*prompt["messages"], {"role": "assistant", "content": text}]}
    return {"prompt": prompt["prompt"], "completion": text}


def pick_best(samples: list[dict]) -> dict | None:
    """The highest-reward finished sample (the first on ties), or None when none finished."""
    finished = [s for s in samples if s["finish_reason"] == "eos"]
    return max(finished, key=lambda s: s["reward"]) if finished else None


def reward_length_corr(records: list[dict]) -> float:
    """Pearson correlation of reward and length over all samples (PPO's name for it): near 1, the judge pays for
    length and the picks will grow (the round report warns). 0 when either does not vary."""
    rewards, lengths = [r["reward"] for r in records], [r["num_tokens"] for r in records]
    if len(set(rewards)) < 2 or len(set(lengths)) < 2:
        return 0.0
    return statistics.correlation(rewards, lengths)


def select_best(prompts: list, objects: dict[int, dict], records: list[dict], n: int) -> tuple[list[dict], dict]:
    """One SFT example per prompt with a finished sample (records: prompt by prompt, n each, with "reward"),
    and the rs/* figures of the selection."""
    best_rows, means, best_rewards, gains, lengths = [], [], [], [], []
    for pi, prompt in enumerate(prompts):
        group = records[pi * n : (pi + 1) * n]
        mean = statistics.fmean(s["reward"] for s in group)
        means.append(mean)
        best = pick_best(group)
        if best is None:
            continue
        best_rewards.append(best["reward"])
        gains.append(best["reward"] - mean)
        lengths.append(best["num_tokens"])
        best_rows.append(
            {
                "prompt_id": prompt.prompt_id,
                **sft_example(objects[prompt.line], best["text"]),
                "sample": best["sample"],
                "reward": best["reward"],
                "reward_mean": mean,
            }
        )
    if not best_rows:
        return [], {}
    return best_rows, {
        "rs/reward_mean": statistics.fmean(means),
        "rs/reward_best": statistics.fmean(best_rewards),
        "rs/reward_gain": statistics.fmean(gains),
        "rs/length_best": statistics.fmean(lengths),
        "rs/eos_rate": sum(r["finish_reason"] == "eos" for r in records) / len(records),
        "rs/prompts_kept": len(best_rows),
        "rs/prompts": len(prompts),
        "reward_length_corr": reward_length_corr(records),
    }


def run_best_of_n(config: BestOfNConfig, *, on_metrics=None) -> Path:
    _check_config(config)
    rank, world = dist_info()
    device = process_device(resolve_device(config.device), world)
    tok, model, prompts, skipped = load_sampler(config.policy, config.prompts, config.max_new_tokens, device)
    objects = {line: obj for line, obj in read_jsonl(config.prompts)}
    judge = load_judge(config.judge, device, config.precision)
    N = config.num_samples
    mine = prompts[rank::world]  # this process's share
    with atomic_output_dir(config.out) if rank == 0 else NoOutput() as tmp:
        log = MetricsLog(tmp / "metrics.jsonl", on_metrics) if rank == 0 else None

        # one progress line per decoded batch of rank 0 (the worker's progress bar), one more once all are scored
        def batch_done(m: dict) -> None:
            if log is not None:
                log.log(m["step"], m["total_steps"] + 1, samples=m["samples"])

        with torch.inference_mode():
            records = generate_samples(model, tok, mine, config, device, batch_done)  # prompt by prompt
        del model
        # the judge sees the prompt as the policy saw it (chat template applied), as `evaluate` does
        texts = {p.line: tok.decode(p.ids, skip_special_tokens=False) for p in mine}
        lines = [mine[i // N].line for i in range(len(records))]
        rewards = judge(
            [texts[line] for line in lines],
            [r["text"] for r in records],
            [objects[line].get("messages") for line in lines],  # a reward model renders a chat with its template
        ) if records else []  # fmt: skip
        for rec, reward in zip(records, rewards):
            rec["reward"] = reward
        records = gather_groups(records, world, N)  # every process: all prompts' samples, prompt by prompt
        best_rows, figures = select_best(prompts, objects, records, N)
        if not best_rows:  # on every process, so that none waits for the others at the end
            raise UsageError(
                f"no sample of any prompt ended with EOS within --max-new-tokens "
                f"{config.max_new_tokens}: nothing to learn from; raise --max-new-tokens"
            )
        if log is not None:
            save_trainer_config(tmp, "best-of-n", config)
            steps = (len(records) + config.batch_size - 1) // config.batch_size + 1
            log.log(
                steps, steps, samples=len(records), **figures, **{SKIPPED_METRIC: len(skipped)}, **peak_memory(device)
            )
            log.close()
            for name, rows in (("best.jsonl", best_rows), ("samples.jsonl", records)):
                with open(tmp / name, "w", encoding="utf-8") as fh:
                    for row in rows:
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    end_process_group(world)
    return Path(config.out)


from trainer.cli import register_stage  # noqa: E402

register_stage(
    name="best-of-n",
    config_cls=BestOfNConfig,
    entry=run_best_of_n,
    help="Rejection sampling: the judge's (reward model's) best of N samples per prompt, as SFT data.",
)
