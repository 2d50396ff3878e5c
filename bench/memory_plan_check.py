"""`trainer plan`'s estimate of an SFT step against what one step really holds, for random-weight GPT-2 and Llama
models built from a config (no download).

For each model × precision × gradient checkpointing: one step (forward, the completion log-probs as the trainer
scores them, backward, AdamW) on a batch of random tokens, measured as
  state   bytes of the parameters, their gradients and AdamW's moments after the step (exact on any device);
  peak    on CUDA torch.cuda.max_memory_allocated over the step (what the plan's total predicts); on CPU, where
          no allocator counts, state + the bytes autograd saved in the forward (each storage once);
and set beside trainer.memory_plan.stage_need(arch, "sft", ...). The plan must stay within 2x of the measured peak.

    .venv/bin/python bench/memory_plan_check.py                          # CPU: small shapes, about a minute
    .venv/bin/python bench/memory_plan_check.py --device cuda --scale 8  # a lent GPU: 8x wider models
Results: a markdown table on stdout (docs/results.md), and JSON in bench/out/memory_plan_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.memory_plan import GIB, Settings, architecture_from_dir, stage_need  # noqa: E402
from trainer.runtime import checkpoint_activations_  # noqa: E402


def shapes(scale: int) -> dict:
    from transformers import GPT2Config, LlamaConfig

    d = 64 * scale
    return {
        "gpt2": GPT2Config(
            n_embd=d,
            n_layer=4,
            n_head=max(1, d // 64),
            vocab_size=2048,
            n_positions=1024,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "llama": LlamaConfig(
            hidden_size=d,
            intermediate_size=int(2.6875 * d),
            num_hidden_layers=4,
            num_attention_heads=max(1, d // 64),
            num_key_value_heads=max(1, d // 128),
            vocab_size=2048,
            max_position_embeddings=1024,
        ),
    }


def one_step(path: Path, device: torch.device, precision: str, gc: bool, batch: int, length: int) -> dict:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    checkpoint_activations_(model, gc)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "auto")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        logits = model(input_ids=ids, use_cache=False).logits
        loss = -torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, ids[:, 1:, None]).mean()
    loss.backward()
    optimizer.step()
    state = sum(p.untyped_storage().nbytes() for p in model.parameters())
    state += sum(p.grad.untyped_storage().nbytes() for p in model.parameters())
    state += sum(v.untyped_storage().nbytes() for s in optimizer.state.values() for v in s.values() if v.dim())
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = state + sum(saved.values())
    return {"state": state, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=int, default=2, help="hidden size = 64 × scale")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--out", default="bench/out/memory_plan_check.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in shapes(args.scale).items():
            path = Path(tmp) / name
            torch.manual_seed(0)
            from transformers import AutoModelForCausalLM

            AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
            arch = architecture_from_dir(path)
            precisions = ("fp32", "bf16") if device.type == "cpu" else ("fp32", "auto", "bf16")
            for precision in precisions:
                for gc in (False, True):
                    got = one_step(path, device, precision, gc, args.batch, args.length)
                    s = Settings(
                        precision=precision, gradient_checkpointing=gc, batch_size=args.batch, max_length=args.length
                    )
                    need = stage_need(arch, "sft", s)
                    plan_state = need.weights + need.gradients + need.optimizer
                    rows.append(
                        {
                            "model": f"{name} {arch.params / 1e6:.1f}M",
                            "precision": precision,
                            "checkpointing": gc,
                            "state_measured": got["state"],
                            "state_planned": plan_state,
                            "peak_measured": got["peak"],
                            "peak_planned": need.total,
                        }
                    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": str(device), "args": vars(args), "rows": rows}, indent=2))
    mib = 2**20 if rows and rows[0]["peak_measured"] < GIB else GIB
    unit = "MiB" if mib == 2**20 else "GiB"
    print(
        f"| model | precision | checkpointing | state measured / planned ({unit}) | peak measured / planned ({unit}) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['precision']} | {'yes' if r['checkpointing'] else 'no'} | "
            f"{r['state_measured'] / mib:.1f} / {r['state_planned'] / mib:.1f} | "
            f"{r['peak_measured'] / mib:.1f} / {r['peak_planned'] / mib:.1f} "
            f"(×{r['peak_planned'] / r['peak_measured']:.2f}) |"
        )


if __name__ == "__main__":
    main()
