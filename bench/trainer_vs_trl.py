"""Our reward training, PPO and generation against TRL and transformers, interleaved in one run.

Same assets (the TRL anchor's tiny GPT-2, 2,000 + 200 preference pairs, 64 prompts), same thread count,
each measurement in a fresh process, TRL and ours alternating so machine drift hits both alike.

    export RLHF_TRL_ANCHORS=DIR   # the TRL anchor's scripts (setup.sh, bench_rm.py, bench_ppo.py), or --anchors
    export ANCHOR=WORKDIR         # where setup.sh puts its venvs and assets (setup.sh reads it too), or --anchor
    bash "$RLHF_TRL_ANCHORS/setup.sh"                 # once
    .venv/bin/python bench/trainer_vs_trl.py [--rounds 3] [--precision fp32,bf16] [--out bench/out/x.json]

Timed regions, like the anchor scripts: RM = the training loop (TRL: trainer.train()), model loading and
tokenisation excluded on both sides; PPO = the whole PPO loop (TRL: trainer.train()), 256 episodes,
batch 16, 32-token responses, 4 PPO epochs × 1 minibatch, no checkpoints (TRL: save_strategy="no");
generation = sampling 32 tokens for the 64 prompts in batches of 16, ours (trainer.sampling) against
`model.generate(do_sample=True, use_cache=True)`, same temperature 0.7.
MFU = model FLOPs (6·N·T for training, 2·N·T for forwards) / time / this machine's measured matmul peak.

What makes ours faster (all compute the same numbers; bf16 is a separate, reported setting):
  RM:  chosen and rejected in one forward; batches padded to their own longest row; no Trainer/accelerate/
       datasets layers in the loop; torch's fused tanh-GELU for GPT-2's gelu_new (same function).
  PPO: the KV-cache sampler below for rollouts; logits only for the response positions (logits_to_keep);
       the scoring pass's policy and value forwards keep their graph and are the first update's forwards
       (same parameters, same rows: two forwards per step fewer); entropy
       (a statistic) without autograd; fused AdamW and foreach gradient clipping (one kernel over the ~200
       parameter tensors instead of ~10 ops each); no checkpoint writes inside the timed loop (like TRL's
       save_strategy="no"); optionally bf16 (`--precision bf16`: bf16 weights, so bf16 gradients and AdamW
       state; before the memory switches it was autocast over fp32 weights; eager attention under bf16 on CPU).
  Generation: one prefill computing last-position logits only; identical prompts encoded once; each row's
       random numbers drawn up front from its own generator (inverse-CDF, no per-row work per token);
       finished rows dropped from the batch and cache; for GPT-2, decode steps call the blocks' modules
       directly on a KV cache allocated once (no per-step 4-D mask, cache concatenation or output objects).
Figures to trust on a shared machine: the per-own-CPU-second ratios (CPU time this process got), next to
the wall-clock ones; the generation ratio comes with the range over interleaved repetitions (--gen-reps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHORS_ENV = "RLHF_TRL_ANCHORS"  # the TRL anchor's scripts live outside the repository


# ----------------------------------------------------------------------------- workers (fresh processes)


def cpu_snapshot() -> dict:
    """Machine-wide and own CPU time, as the anchor's benchutil records it (the machine is shared)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    t = os.times()
    return {"total": sum(vals[:8]), "idle": vals[3] + vals[4], "own": t.user + t.system}


def cpu_contention(s0: dict, s1: dict) -> dict:
    hz = os.sysconf("SC_CLK_TCK")
    cap = (s1["total"] - s0["total"]) / hz
    busy = cap - (s1["idle"] - s0["idle"]) / hz
    own = s1["own"] - s0["own"]
    return {"capacity_cpu_s": cap, "own_cpu_s": own, "others_frac": max(0.0, busy - own) / cap if cap else None}


def _timed_loop(module) -> dict:
    """Record when the training loop starts (the stage calls `progress(...)` right before it) and when each
    metrics line arrives."""
    marks = {"t0": None, "steps": []}
    orig = module.progress

    def progress(*a, **k):
        marks["t0"] = time.perf_counter()
        marks["cpu0"] = cpu_snapshot()
        return orig(*a, **k)

    module.progress = progress
    return marks


def worker_rm(args) -> dict:
    import torch

    from trainer import reward_model as rm

    marks = _timed_loop(rm)
    A = Path(args.anchor) / "assets"
    out = Path(tempfile.mkdtemp()) / "rm"
    cfg = rm.RewardConfig(
        model=str(A / "tiny-gpt2"),
        data=str(A / "pref.jsonl"),
        eval_data=str(A / "pref_eval.jsonl"),
        out=str(out),
        batch_size=16,
        epochs=1,
        lr=args.rm_lr,
        precision=args.precision,
        max_length=128,
        seed=42,
        device="cpu",
    )

    def on_metrics(line):
        if "loss" in line:
            marks["steps"].append((time.perf_counter(), line))
            marks["cpu1"] = cpu_snapshot()

    rm.train_reward(cfg, on_metrics=on_metrics)
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    t_train = marks["steps"][-1][0] - marks["t0"]
    n_pairs = final["train_pairs"]
    from trainer.preference_data import load_preferences
    from trainer.reward_scoring import load_reward_model
    from trainer.runtime import load_tokenizer

    data = load_preferences(A / "pref.jsonl", load_tokenizer(A / "tiny-gpt2"), max_length=128)
    tokens = sum(len(s) for g in data.groups for s in g.sequences)
    n_params = sum(p.numel() for p in load_reward_model(out, load_tokenizer(out)).parameters())
    cpu = cpu_contention(marks["cpu0"], marks["cpu1"])
    return {
        "pairs_per_s": n_pairs / t_train,
        "t_train_s": t_train,
        "n_pairs": n_pairs,
        "cpu_during_train": cpu,
        "pairs_per_own_cpu_s": n_pairs / cpu["own_cpu_s"],
        "heldout_accuracy": final["eval_accuracy"],
        "tokens": tokens,
        "n_params": n_params,
        "flops": 6 * n_params * tokens,
        "threads": torch.get_num_threads(),
        "precision": args.precision,
    }


def worker_ppo(args) -> dict:
    import torch

    from trainer import ppo

    marks = _timed_loop(ppo)
    A = Path(args.anchor) / "assets"
    out = Path(tempfile.mkdtemp()) / "policy"
    cfg = ppo.PPOConfig(
        policy=str(A / "tiny-gpt2"),
        reward_model=str(A / "tiny-rm"),
        prompts=str(A / "prompts.jsonl"),
        out=str(out),
        batch_size=16,
        epochs=max(1, args.ppo_episodes // 64),
        max_new_tokens=32,
        ppo_epochs=4,
        num_minibatches=1,
        lr=3e-6,
        kl_coef=0.05,
        temperature=0.7,
        seed=42,
        precision=args.precision,
        checkpoint_every=0,
        device="cpu",
    )

    def on_metrics(line):
        marks["steps"].append((time.perf_counter(), line))
        marks["cpu1"] = cpu_snapshot()

    ppo.train_ppo(cfg, on_metrics=on_metrics)
    t_train = marks["steps"][-1][0] - marks["t0"]
    lines = [s[1] for s in marks["steps"]]
    episodes = lines[-1]["episode"]
    gen_tokens = sum(x["gen_len"] * 16 for x in lines)
    cpu = cpu_contention(marks["cpu0"], marks["cpu1"])
    return {
        "episodes_per_s": episodes / t_train,
        "t_train_s": t_train,
        "episodes": episodes,
        "cpu_during_train": cpu,
        "episodes_per_own_cpu_s": episodes / cpu["own_cpu_s"],
        "gen_tokens": gen_tokens,
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "first": {k: lines[0][k] for k in ("objective/scores", "objective/kl", "loss/value_avg")},
        "last": {k: lines[-1][k] for k in ("objective/scores", "objective/kl", "loss/value_avg")},
    }


def worker_gen(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.masks import pad_sequences
    from trainer.runtime import load_tokenizer
    from trainer.sampling import make_generator, sample_batch

    A = Path(args.anchor) / "assets"
    tok = load_tokenizer(A / "tiny-gpt2")
    model = AutoModelForCausalLM.from_pretrained(A / "tiny-gpt2").eval()
    prompts = [tok(json.loads(x)["prompt"])["input_ids"] for x in (A / "prompts.jsonl").read_text().splitlines()]
    batches = [pad_sequences(prompts[i : i + 16], pad_token_id=tok.pad_token_id, side="left") for i in range(0, 64, 16)]
    eos = tok.eos_token_id

    def count(resp: torch.Tensor) -> int:  # sampled tokens per row: through the first EOS
        is_eos = resp == eos
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(resp[:, 0], resp.shape[1]))
        return int(first.sum())

    def ours() -> int:
        n = 0
        for b, (ids, mask) in enumerate(batches):
            out = sample_batch(
                model,
                ids,
                mask,
                max_new_tokens=32,
                temperature=0.7,
                top_k=0,
                top_p=1.0,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
                generators=[make_generator(1000 * b + i) for i in range(ids.shape[0])],
            )
            n += int(out.lengths.sum())
        return n

    def hf() -> int:
        n = 0
        for ids, mask in batches:
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=0.7,
                top_k=0,
                top_p=1.0,
                max_new_tokens=32,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
            )
            n += count(out[:, ids.shape[1] :])
        return n

    res = {"ours": [], "hf": []}
    cpu = {"ours": [], "hf": []}  # tokens per own CPU second (robust when the machine is shared)
    with torch.inference_mode():
        ours(), hf()  # warm-up
        for _ in range(args.gen_reps):
            for name, fn in (("ours", ours), ("hf", hf)):
                t, c = time.perf_counter(), time.process_time()
                n = fn()
                res[name].append(n / (time.perf_counter() - t))
                cpu[name].append(n / (time.process_time() - c))
    n_params = sum(p.numel() for p in model.parameters())
    ratios = [o / h for o, h in zip(res["ours"], res["hf"])]  # each rep's pair ran back to back
    cpu_ratios = [o / h for o, h in zip(cpu["ours"], cpu["hf"])]
    return {
        "ours_tokens_per_s": statistics.median(res["ours"]),
        "hf_tokens_per_s": statistics.median(res["hf"]),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_per_own_cpu_s_median": statistics.median(cpu_ratios),
        "ratio_per_own_cpu_s_min": min(cpu_ratios),
        "ratio_per_own_cpu_s_max": max(cpu_ratios),
        "samples": res,
        "samples_per_own_cpu_s": cpu,
        "n_params": n_params,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- driver


def run_json(cmd: list[str], env: dict, out_path: Path | None = None) -> dict:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-4000:]}")
    if out_path is not None:
        return json.loads(out_path.read_text())
    return json.loads(r.stdout.strip().splitlines()[-1])


def matmul_peak(dtype_name: str, seconds: float = 1.0) -> float:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0)


def ppo_flops_per_episode(n_params: int, prompt_tokens: float, response_tokens: float, ppo_epochs: int = 4) -> float:
    """Generation (2N per token) + scoring forwards of policy, ref, value, RM (4 × 2N(P+R)) +
    ppo_epochs × (policy + value) training (2 × 6N(P+R)). The same nominal work for TRL and ours (model FLOPs):
    ours reuses the scoring pass's policy and value forwards as the first update's, so its MFU counts two
    forwards per step it did not compute again."""
    T = prompt_tokens + response_tokens
    return 2 * n_params * T + 4 * 2 * n_params * T + ppo_epochs * 2 * 6 * n_params * T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--anchors",
        default=os.environ.get(ANCHORS_ENV, ""),
        help=f"the TRL anchor's scripts: setup.sh, bench_rm.py, bench_ppo.py (default: ${ANCHORS_ENV})",
    )
    ap.add_argument(
        "--anchor",
        default=os.environ.get("ANCHOR", ""),
        help="the directory the anchor's setup.sh filled with its venvs and assets (default: $ANCHOR, as setup.sh)",
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--precision", default="fp32,bf16", help="our precisions to run, comma-separated")
    ap.add_argument("--rm-lr", type=float, default=1e-4, help="our RM learning rate (TRL RewardConfig default 1e-4)")
    ap.add_argument("--gen-reps", type=int, default=7)
    ap.add_argument("--ppo-episodes", type=int, default=256, help="a multiple of the 64 prompts (TRL anchor: 256)")
    ap.add_argument("--trl-rm-result", default="", help="reuse a bench_rm.py JSON instead of running TRL's RM")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", default="rm,ppo,gen")
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "trainer_vs_trl.json"))
    ap.add_argument("--worker", choices=["rm", "ppo", "gen"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps({"rm": worker_rm, "ppo": worker_ppo, "gen": worker_gen}[args.worker](args)))
        return

    if not args.anchors:
        raise SystemExit(f"where are the TRL anchor's scripts? Pass --anchors DIR or set {ANCHORS_ENV}")
    anchor_scripts = Path(args.anchors)
    if not (anchor_scripts / "bench_rm.py").is_file() or not (anchor_scripts / "bench_ppo.py").is_file():
        raise SystemExit(f"{anchor_scripts}: no bench_rm.py and bench_ppo.py here (--anchors / {ANCHORS_ENV})")
    if not args.anchor:
        raise SystemExit("where did the anchor's setup.sh put its venvs and assets? Pass --anchor DIR or set ANCHOR")
    A = Path(args.anchor)
    if not (A / "venv" / "bin" / "python").exists() or not (A / "assets" / "pref.jsonl").exists():
        raise SystemExit(f"{A}: run `ANCHOR={A} bash {anchor_scripts}/setup.sh` first")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO),
    }
    me = [sys.executable, str(Path(__file__).resolve())]
    precisions = [p for p in args.precision.split(",") if p]
    only = set(args.only.split(","))
    runs: dict[str, list] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}

    def run_anchor(python: Path, script: str, out: Path, *extra: str) -> dict:
        """One of the TRL anchor's scripts, fp32 without gradient checkpointing, on the shared assets."""
        cmd = [str(python), str(anchor_scripts / script), "--out", str(out), "--precision", "fp32", "--grad-ckpt", "0"]
        return run_json([*cmd, "--assets", str(A / "assets"), *extra], env, out)

    def run_ours(worker: str, precision: str, *extra: str) -> dict:
        return run_json([*me, "--worker", worker, "--precision", precision, "--anchor", str(A), *extra], env)

    for r in range(args.rounds):
        if "rm" in only or "ppo" in only:
            if args.trl_rm_result and r == 0:
                runs.setdefault("trl_rm", []).append(json.loads(Path(args.trl_rm_result).read_text()))
            elif "rm" in only or not (A / "assets" / "tiny-rm").exists():
                o = tmp / f"trl_rm_{r}.json"
                save = ["--save-rm", str(A / "assets" / "tiny-rm")] if not (A / "assets" / "tiny-rm").exists() else []
                runs.setdefault("trl_rm", []).append(run_anchor(A / "venv/bin/python", "bench_rm.py", o, *save))
            if "rm" in only:
                for p in precisions:
                    runs.setdefault(f"ours_rm_{p}", []).append(run_ours("rm", p, "--rm-lr", str(args.rm_lr)))
        if "ppo" in only:
            o = tmp / f"trl_ppo_{r}.json"
            runs.setdefault("trl_ppo", []).append(
                run_anchor(A / "venv-ppo/bin/python", "bench_ppo.py", o, "--episodes", str(args.ppo_episodes))
            )
            for p in precisions:
                runs.setdefault(f"ours_ppo_{p}", []).append(
                    run_ours("ppo", p, "--ppo-episodes", str(args.ppo_episodes))
                )
        if "gen" in only:
            runs.setdefault("gen", []).append(
                run_json([*me, "--worker", "gen", "--anchor", str(A), "--gen-reps", str(args.gen_reps)], env)
            )

    med = lambda key, field: statistics.median(x[field] for x in runs[key])  # noqa: E731
    summary: dict = {
        "threads": args.threads,
        "rounds": args.rounds,
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
    }
    info = json.loads((A / "assets" / "assets_info.json").read_text())
    if "trl_rm" in runs and any(k.startswith("ours_rm_") for k in runs):
        trl = {
            "pairs_per_s": med("trl_rm", "pairs_per_s"),
            "heldout_accuracy": statistics.median(x["heldout_eval"]["eval_accuracy"] for x in runs["trl_rm"]),
            "mfu_fp32": med("trl_rm", "achieved_gflops_6NT") * 1e9 / peaks["fp32"],
            "pairs_per_own_cpu_s": statistics.median(
                x["n_pairs_after_filter"] / x["cpu_during_train"]["own_cpu_s"] for x in runs["trl_rm"]
            ),
            "others_frac": statistics.median(x["cpu_during_train"]["others_frac"] for x in runs["trl_rm"]),
        }
        summary["rm"] = {"trl_1.16": trl}
        for p in precisions:
            k = f"ours_rm_{p}"
            ours = {
                "pairs_per_s": med(k, "pairs_per_s"),
                "heldout_accuracy": med(k, "heldout_accuracy"),
                "mfu": statistics.median(x["flops"] / x["t_train_s"] for x in runs[k]) / peaks[p],
            }
            ours["pairs_per_own_cpu_s"] = med(k, "pairs_per_own_cpu_s")
            ours["others_frac"] = statistics.median(x["cpu_during_train"]["others_frac"] for x in runs[k])
            ours["speedup_vs_trl"] = ours["pairs_per_s"] / trl["pairs_per_s"]
            ours["speedup_vs_trl_per_own_cpu_s"] = ours["pairs_per_own_cpu_s"] / trl["pairs_per_own_cpu_s"]
            ours["accuracy_minus_trl"] = ours["heldout_accuracy"] - trl["heldout_accuracy"]
            summary["rm"][f"ours_{p}"] = ours
    if "trl_ppo" in runs:
        fl = ppo_flops_per_episode(info["n_params"], info["prompt_tokens_mean"], 32)
        trl_eps = med("trl_ppo", "episodes_per_s")
        trl_cpu = statistics.median(x["episodes"] / x["cpu_during_train"]["own_cpu_s"] for x in runs["trl_ppo"])
        summary["ppo"] = {
            "trl_1.12": {
                "episodes_per_s": trl_eps,
                "mfu_fp32_est": trl_eps * fl / peaks["fp32"],
                "episodes_per_own_cpu_s": trl_cpu,
                "first": runs["trl_ppo"][-1].get("log_first"),
                "last": runs["trl_ppo"][-1].get("log_last"),
                "others_frac": statistics.median(x["cpu_during_train"]["others_frac"] for x in runs["trl_ppo"]),
            }
        }
        for p in precisions:
            k = f"ours_ppo_{p}"
            eps = med(k, "episodes_per_s")
            summary["ppo"][f"ours_{p}"] = {
                "episodes_per_s": eps,
                "speedup_vs_trl": eps / trl_eps,
                "speedup_vs_trl_per_own_cpu_s": med(k, "episodes_per_own_cpu_s") / trl_cpu,
                "others_frac": statistics.median(x["cpu_during_train"]["others_frac"] for x in runs[k]),
                "mfu_est": eps * fl / peaks[p],
                "first": runs[k][-1]["first"],
                "last": runs[k][-1]["last"],
            }
    if "gen" in runs:
        o, h = med("gen", "ours_tokens_per_s"), med("gen", "hf_tokens_per_s")
        n = runs["gen"][0]["n_params"]
        pooled = lambda f: [r for x in runs["gen"] for r in ([x[f]] if not isinstance(x[f], list) else x[f])]  # noqa: E731
        summary["generation"] = {
            "ours_tokens_per_s": o,
            "hf_generate_tokens_per_s": h,
            "ratio": o / h,
            "paired_ratio_median": statistics.median(pooled("ratio_median")),
            "paired_ratio_range": [min(pooled("ratio_min")), max(pooled("ratio_max"))],
            "per_own_cpu_s_ratio_median": statistics.median(pooled("ratio_per_own_cpu_s_median")),
            "per_own_cpu_s_ratio_range": [
                min(pooled("ratio_per_own_cpu_s_min")),
                max(pooled("ratio_per_own_cpu_s_max")),
            ],
            "mfu_ours": o * 2 * n / peaks["fp32"],
            "mfu_hf": h * 2 * n / peaks["fp32"],
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
