"""LoRA against full fine-tuning on the small world's model: reward-model and PPO steps/s and memory, in one run.

    .venv/bin/python bench/lora_memory.py [--lora-r 8] [--reward-steps 30] [--ppo-steps 6] [--rounds 2]
                                          [--model DIR] [--device cpu|cuda] [--out bench/out/lora.json]

The model: the small world's architecture (GPT-2, 4 layers, d=96, 4 heads, 128-token context, the world's
1024-token BPE vocabulary), random weights unless --model names a built one (speed and memory do not depend on the
weights). Data: the world's SFT answers as preference pairs (chosen: the answer, rejected: another prompt's) and its
train prompts. Each measurement runs in a fresh process, full and LoRA alternating, so drift hits both alike.

Figures per stage and mode:
- steps/s: optimizer steps over the training loop's time (from the first to the last metrics line: loading excluded),
  by the wall clock and per CPU-second this process got (the one to trust on a shared machine);
- state MB: the bytes of the tensors the stage holds: every distinct weight (PPO: policy, reference, value, reward;
  the LoRA reference is the policy's weights, no copy), plus a gradient and AdamW's two moments per trained weight;
- peak MB: CUDA max allocated on a GPU; on CPU the rise of the process's peak RSS over its RSS before the stage,
  which at this size is mostly activations and allocator slack, so state MB is the figure that scales to real models.
Ratios are LoRA / full.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so each stage's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def state_bytes(modules, trained) -> int:
    """Distinct weights held, plus gradient + two AdamW moments for each trained one."""
    seen, total = set(), 0
    for module in modules:
        for p in module.parameters():
            key = p.data_ptr()
            if key not in seen:
                seen.add(key)
                total += p.numel() * p.element_size()
    total += 3 * sum(p.numel() * p.element_size() for p in trained)
    return total


def peak_since(base: int, cuda: bool) -> int:
    import torch

    return (torch.cuda.max_memory_allocated() if cuda else rss_kb("VmHWM") * 1024) - base


# ----------------------------------------------------------------------------- worker (a fresh process)


def worker(spec: dict) -> dict:
    import torch

    from trainer.adapters import reference_model, trainable_model
    from trainer.config import load_config
    from trainer.ppo import PPOConfig, train_ppo
    from trainer.reward_model import RewardConfig, head_modules, train_reward
    from trainer.reward_scoring import load_reward_model
    from trainer.runtime import load_causal_lm, load_tokenizer

    cuda = spec["device"] == "cuda"
    from peft import LoraConfig, get_peft_model

    # peft imports most of its modules lazily, on first use: wrap and save once before the baseline, in both modes,
    # so the measured rise is the stage's tensors and not Python modules
    warm = get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(r=1, target_modules=["0"]))
    warm.save_pretrained(str(Path(spec["tmp"]) / f"warm-{os.getpid()}"))  # saving imports the model-card code

    times: list[tuple[float, float]] = []  # (wall, this process's CPU) at each metrics line
    on_metrics = lambda line: times.append((time.perf_counter(), time.process_time()))  # noqa: E731
    lora = {"lora_r": spec["lora_r"]} if spec["lora_r"] else {}
    common = {"device": spec["device"], "seed": 0, "precision": "fp32", **lora}
    out = Path(spec["tmp"]) / f"{spec['stage']}-{spec['lora_r']}-{os.getpid()}"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = rss_kb("VmRSS") * 1024
    tok = load_tokenizer(spec["model"])
    if spec["stage"] == "reward":
        cfg = load_config(
            RewardConfig,
            overrides={"model": spec["model"], "data": spec["pairs"], "out": str(out), "batch_size": 16,
                       "max_steps": spec["steps"], "early_stopping_patience": 0, **common},
        )  # fmt: skip
        train_reward(cfg, on_metrics=on_metrics)
        peak = peak_since(base, cuda)
        model, _ = trainable_model(
            spec["model"], cfg, lambda p: load_reward_model(p, tok), task="SEQ_CLS", modules_to_save=head_modules
        )
        held = [model]
        trained = [p for p in model.parameters() if p.requires_grad]
    else:
        cfg = load_config(
            PPOConfig,
            overrides={"policy": spec["model"], "reward_model": spec["rm"], "prompts": spec["prompts"],
                       "out": str(out), "batch_size": 16, "max_new_tokens": 32, "max_steps": spec["steps"],
                       "checkpoint_every": 0, **common},
        )  # fmt: skip
        train_ppo(cfg, on_metrics=on_metrics)
        peak = peak_since(base, cuda)
        load = lambda p: load_causal_lm(p, tokenizer=tok)  # noqa: E731
        policy, peft_model = trainable_model(spec["model"], cfg, load, task="CAUSAL_LM")
        ref = reference_model(cfg, spec["model"], peft_model, load)
        reward = load_reward_model(spec["rm"], tok)
        value, _ = trainable_model(spec["rm"], cfg, lambda p: load_reward_model(p, tok), task="SEQ_CLS",
                                   modules_to_save=["score"])  # fmt: skip
        held = [policy, ref, reward, value]
        trained = [p for m in (policy, value) for p in m.parameters() if p.requires_grad]
    steps = len(times) - 1  # metrics lines after the first step's
    return {
        "steps_per_s": steps / (times[-1][0] - times[0][0]) if steps > 0 else 0.0,
        # per CPU-second this process got: the figure to trust on a shared machine
        "steps_per_cpu_s": steps / (times[-1][1] - times[0][1]) if steps > 0 else 0.0,
        "state_mb": state_bytes(held, trained) / 2**20,
        "peak_mb": peak / 2**20,
        "trained_params": sum(p.numel() for p in trained),
    }


# ----------------------------------------------------------------------------- assets


def build_assets(root: Path, model_dir: str | None, shape: dict, seed: int = 0) -> dict:
    from trainer.gpt import build_gpt2, gpt2_config
    from trainer.reward_model import RewardConfig, train_reward
    from trainer.tokenizer import TokenizerConfig, train_tokenizer
    from trainer.world.build import SIZES, build_world

    size = SIZES["small"]
    files = build_world("small", root / "world", seed=seed)
    rows = [json.loads(x) for x in files.sft.read_text().splitlines()]
    rng = random.Random(seed)
    pairs = []
    for row in rows[:512]:
        other = rng.choice(rows)
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": other["completion"]})
    pair_file = root / "pairs.jsonl"
    pair_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    if model_dir is None:
        import torch

        tok_dir = train_tokenizer(
            TokenizerConfig(input=[str(files.pretrain)], vocab_size=size.vocab_size, out=str(root / "tokenizer"))
        )
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        torch.manual_seed(seed)
        cfg = gpt2_config(
            vocab_size=len(tok), n_layer=shape["n_layer"] or size.n_layer, n_head=size.n_head,
            n_embd=shape["n_embd"] or size.n_embd, context=size.context, dropout=0.0, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        model_dir = str(root / "model")
        build_gpt2(cfg).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    # the frozen reward model PPO scores with: a whole one, as a round's first reward model would be
    rm = train_reward(RewardConfig(model=model_dir, data=str(pair_file), out=str(root / "rm"), max_steps=2,
                                   device="cpu", early_stopping_patience=0))  # fmt: skip
    return {"model": model_dir, "pairs": str(pair_file), "prompts": str(files.prompts_train), "rm": str(rm)}


def run_worker(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--reward-steps", type=int, default=30)
    ap.add_argument("--ppo-steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2, help="Interleaved repetitions; the median is reported.")
    ap.add_argument("--model", default=None, help="A built small-world model directory (default: random weights).")
    ap.add_argument("--n-layer", type=int, default=0, help="Layers instead of the small world's 4 (random weights).")
    ap.add_argument("--n-embd", type=int, default=0, help="Width instead of the small world's 96 (random weights).")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=None, help="Write the figures as JSON here too.")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        assets = build_assets(Path(tmp), args.model, {"n_layer": args.n_layer, "n_embd": args.n_embd})
        results: dict[str, dict[str, list[dict]]] = {}
        for _ in range(args.rounds):
            for stage, steps in (("reward", args.reward_steps), ("ppo", args.ppo_steps)):
                for r in (0, args.lora_r):
                    spec = {**assets, "stage": stage, "steps": steps, "lora_r": r, "device": args.device, "tmp": tmp}
                    results.setdefault(stage, {}).setdefault("lora" if r else "full", []).append(run_worker(spec))
    report: dict[str, dict] = {
        "device": args.device,
        "lora_r": args.lora_r,
        "n_layer": args.n_layer,
        "n_embd": args.n_embd,
    }
    for stage, modes in results.items():
        med = {mode: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for mode, runs in modes.items()}
        keys = ("steps_per_s", "steps_per_cpu_s", "state_mb", "peak_mb")
        ratio = {k: med["lora"][k] / med["full"][k] for k in keys if med["full"][k]}
        report[stage] = {**med, "lora/full": ratio}
        for mode, v in med.items():
            print(
                f"{stage:>6} {mode:>4}: {v['steps_per_s']:.2f} steps/s ({v['steps_per_cpu_s']:.2f} per CPU-s), "
                f"state {v['state_mb']:.2f} MB, peak {v['peak_mb']:.1f} MB, {v['trained_params']:.0f} trained"
            )
        print(f"{'':>6}  LoRA/full: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    if not any(a.startswith("--worker") for a in sys.argv):
        print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
