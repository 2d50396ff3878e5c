"""`python -m trainer plan`: the memory each stage of a round needs on a GPU, whether it fits, and what makes it fit.

Bytes are counted the way the stages hold them (per GPU; with --gpus G each process holds a whole copy of the models
and takes 1/G of the batch, as data-parallel training does):

  weights      parameters × 4 bytes (fp32 and auto: fp32 weights) or 2 (bf16: trainer.runtime.weight_dtype)
  gradients    trainable parameters × their dtype's bytes (a gradient has its parameter's dtype)
  optimizer    AdamW's two moments per trainable parameter, in the parameter's dtype
  copies       frozen models the stage holds beside the trained ones: DPO's reference; PPO's reference and reward
               model (its value model trains, so it counts in the three lines above). With LoRA the reference is the
               base model with the adapter switched off: no copy. DPO with --precompute-ref-logprobs frees it before
               training.
  activations  what autograd keeps for the backward, per layer and token 11·d + 2·I elements at the activation
               dtype's width (4·I for a gated MLP such as Llama's SwiGLU), after Korthikanti et al. 2022 ("Reducing
               activation recomputation": 34·d bytes in 16 bits with a 4d MLP) and measured on GPT-2 and Llama
               (attention by SDPA keeps no T² scores); plus the logits and their log-softmax in fp32
               (b·T·V·(e + 8) bytes). With --gradient-checkpointing a layer keeps only its input (b·T·d) and one
               layer at a time is recomputed. Sampling (PPO's rollout, best-of-n) holds a KV cache instead:
               2 · layers · b · T · kv_dim elements.
  LoRA         --lora-r R: R·(in + out) trainable parameters for every projection of the decoder layers (attention
               and MLP; peft keeps them in fp32), plus the reward/value head; the base stays frozen.

"Fits" leaves room for what the allocator does not count: the CUDA context and fragmentation (HEADROOM_GIB plus
HEADROOM_FRACTION of the estimate). The estimate is checked against measured tensors on CPU
(tests/trainer/test_memory_plan.py) and, when a GPU was lent, against torch.cuda.max_memory_allocated
(docs/results.md).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from trainer.config import UsageError

GIB = 2**30
HEADROOM_GIB = 1.0  # CUDA context, cuBLAS workspaces
HEADROOM_FRACTION = 0.10  # allocator fragmentation
DEFAULT_SEQUENCE = 512  # tokens per sequence when a stage does not bound it
ROUND_STAGES = ("sft", "reward", "ppo", "dpo", "best-of-n")
SUGGESTED_LORA_R = 16
ADAM_MOMENTS = 2


@dataclass(kw_only=True)
class PlanConfig:
    model: str = field(
        default="", metadata={"help": "A Hugging Face model directory (its config.json is enough).", "metavar": "DIR"}
    )
    params: str = field(
        default="",
        metadata={
            "help": "Or a parameter count: 1500000000, 1_500_000_000, 1.5B, 8b, 500M (a GPT-like shape with "
            "d = 64 × layers is assumed).",
            "metavar": "N",
        },
    )
    gpus: int = field(default=1, metadata={"help": "GPUs (data-parallel processes), each with --gpu-memory."})
    gpu_memory: float = field(
        default=0.0, metadata={"help": "Memory of one GPU in GB (0 = print the sizes, judge no fit).", "metavar": "GB"}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0 = full fine-tuning)."})
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto|fp32|bf16, as the training stages take it on a GPU: auto = fp32 weights under bf16 "
            "autocast, bf16 = bf16 weights, gradients and AdamW state.",
            "choices": ["auto", "fp32", "bf16"],
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Plan with --gradient-checkpointing."})
    batch_size: int = field(
        default=8, metadata={"help": "Examples per forward: SFT examples, preference pairs, PPO prompts."}
    )
    max_length: int = field(
        default=DEFAULT_SEQUENCE,
        metadata={"help": "Tokens per sequence (prompt + response), at most the model's context."},
    )
    stages: list[str] = field(
        default_factory=list,
        metadata={
            "help": "The stages to plan (empty = all: sft reward ppo dpo best-of-n). A round trains reward and "
            "then ppo, or dpo, or best-of-n and sft (rejection sampling).",
            "metavar": "STAGE...",
        },
    )
    json: bool = field(default=False, metadata={"help": "Print the plan as one JSON object."})


# ----------------------------------------------------------------------------- the model's shape

COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
# digits (underscores between them, as Python writes 1_500_000_000), an optional fraction, an optional K/M/B/T
_COUNT = re.compile(r"(\d+(?:_\d+)*)(?:\.(\d+))?([kmbt]?)")


def parse_param_count(text: str | int) -> int:
    """A parameter count as people write it: 1500000000, 1_500_000_000, 1.5B, 8b, 500M, 70k. Exact (no float
    rounding: 1.1B is 1_100_000_000); a count that is not a whole number of parameters is refused."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    refused = UsageError(
        f"--params expects a parameter count such as 1500000000, 1_500_000_000, 1.5B or 500M, got {text!r}"
    )
    m = _COUNT.fullmatch(str(text).strip().lower())
    if m is None:
        raise refused
    whole, fraction, suffix = m.group(1).replace("_", ""), m.group(2) or "", m.group(3)
    scale = COUNT_SUFFIXES[suffix]
    digits = int(whole + fraction) * scale
    if digits % 10 ** len(fraction):
        raise refused  # 1.5 parameters, 1.0000000005B
    return digits // 10 ** len(fraction)


@dataclass(frozen=True)
class Architecture:
    name: str
    params: int  # the causal LM's parameters (tied embeddings counted once)
    reward_params: int  # the same backbone with a one-output score head instead of the LM head
    layers: int
    hidden: int  # d
    intermediate: int  # I, the MLP's inner width
    gated_mlp: bool  # SwiGLU-style (gate and up projections): twice the MLP activations
    heads: int
    kv_dim: int  # width of K (= of V) per token and layer
    vocab: int
    lora_per_rank: int  # trainable LoRA parameters per unit of rank: Σ (in + out) over the layers' projections
    context: int


def architecture_from_dir(path: str | Path) -> Architecture:
    """Counted exactly: the model is built from its config on the meta device (no weights, no memory). A peft
    adapter directory stands for its base model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.modeling_layers import GradientCheckpointingLayer

    from trainer.runtime import config_context

    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file() and not (Path(path) / "config.json").is_file():
        try:  # a peft adapter directory: the shape is its base model's
            path = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        except (ValueError, KeyError) as e:
            raise UsageError(f"{adapter}: no base model named: {e}") from None
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot load model config: {e}") from None
    rm_cfg = copy.deepcopy(cfg)
    rm_cfg.num_labels = 1
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(cfg)
        rm = AutoModelForSequenceClassification.from_config(rm_cfg)
    lora_per_rank, gated = 0, False
    for layer in lm.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            for name, module in layer.named_modules():
                if type(module).__name__ in ("Linear", "Conv1D"):  # Conv1D: GPT-2's projections
                    lora_per_rank += sum(module.weight.shape)
                    gated = gated or "gate" in name
    text = cfg.get_text_config()
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    return Architecture(
        name=(cfg.architectures or [type(lm).__name__])[0],
        params=sum(p.numel() for p in lm.parameters()),
        reward_params=sum(p.numel() for p in rm.parameters()),
        layers=text.num_hidden_layers,
        hidden=hidden,
        intermediate=intermediate,
        gated_mlp=gated,
        heads=heads,
        kv_dim=kv_heads * head_dim,
        vocab=text.vocab_size,
        lora_per_rank=lora_per_rank,
        context=config_context(text),
    )


def architecture_from_params(n: int) -> Architecture:
    """A GPT-like shape for n parameters: 12·L·d² in the layers with d = 64·L (GPT-2 small's aspect ratio), a 4d MLP,
    64-wide heads, and a 32k vocabulary for the logits whose embeddings, tied to the LM head, are inside n (so the
    reward model is n plus its one-output head)."""
    if n <= 0:
        raise UsageError("--params must be a positive parameter count")
    layers = max(1, round((n / (12 * 64**2)) ** (1 / 3)))
    hidden = max(64, round(math.sqrt(n / (12 * layers)) / 64) * 64)
    vocab = 32000
    return Architecture(
        name=f"{n / 1e9:.2f}B-parameter model (assumed shape)",
        params=n,
        reward_params=n + hidden,
        layers=layers,
        hidden=hidden,
        intermediate=4 * hidden,
        gated_mlp=False,
        heads=hidden // 64,
        kv_dim=hidden,
        vocab=vocab,
        lora_per_rank=layers * 16 * hidden,  # GPT-2's projections: (d + 3d) + (d + d) + (d + 4d) + (4d + d)
        context=2048,
    )


# ----------------------------------------------------------------------------- one stage


@dataclass(frozen=True)
class Settings:
    """What changes a stage's memory: the CLI flags of a training stage (and the plan's shape of the batch)."""

    precision: str = "auto"
    gradient_checkpointing: bool = False
    lora_r: int = 0
    batch_size: int = 8  # examples per forward
    max_length: int = DEFAULT_SEQUENCE
    gpus: int = 1
    precompute_ref_logprobs: bool = False  # DPO


@dataclass(frozen=True)
class Need:
    """Bytes one GPU holds at a stage's peak."""

    weights: int
    gradients: int
    optimizer: int
    copies: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.copies + self.activations


def _weight_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def _activation_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2  # auto: bf16 autocast on a GPU


def trained_model(arch: Architecture, params: int, s: Settings, *, head: int = 0) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes of a model that trains: whole, or its LoRA adapter (+ a head)."""
    wb = _weight_bytes(s.precision)
    if s.lora_r <= 0:
        return params * wb, params * wb, ADAM_MOMENTS * params * wb
    adapter = s.lora_r * arch.lora_per_rank + head
    return params * wb + adapter * 4, adapter * 4, ADAM_MOMENTS * adapter * 4  # peft keeps adapters in fp32


def activations(arch: Architecture, s: Settings, *, sequences: int, logits: bool) -> int:
    """Bytes autograd keeps for the backward of `sequences` sequences of max_length tokens."""
    e = _activation_bytes(s.precision)
    tokens = sequences * s.max_length
    per_layer = tokens * (11 * arch.hidden + (4 if arch.gated_mlp else 2) * arch.intermediate) * e
    if s.gradient_checkpointing:
        layers = arch.layers * tokens * arch.hidden * e + per_layer  # inputs kept, one layer recomputed at a time
    else:
        layers = arch.layers * per_layer
    head = tokens * arch.vocab * (e + 8) if logits else tokens * arch.hidden * 4
    return layers + head


def kv_cache(arch: Architecture, s: Settings, *, sequences: int) -> int:
    return 2 * arch.layers * sequences * s.max_length * arch.kv_dim * _weight_bytes(s.precision)


def stage_need(arch: Architecture, stage: str, s: Settings) -> Need:
    """Bytes one GPU holds at the peak of `stage` (one of ROUND_STAGES)."""
    per_gpu = max(1, math.ceil(s.batch_size / max(1, s.gpus)))
    wb = _weight_bytes(s.precision)
    if stage == "sft":
        w, g, o = trained_model(arch, arch.params, s)
        return Need(w, g, o, 0, activations(arch, s, sequences=per_gpu, logits=True))
    if stage == "reward":  # both responses of a pair in one forward
        w, g, o = trained_model(arch, arch.reward_params, s, head=arch.hidden)
        return Need(w, g, o, 0, activations(arch, s, sequences=2 * per_gpu, logits=False))
    if stage == "dpo":
        w, g, o = trained_model(arch, arch.params, s)
        ref = 0 if s.lora_r > 0 or s.precompute_ref_logprobs else arch.params * wb
        return Need(w, g, o, ref, activations(arch, s, sequences=2 * per_gpu, logits=True))
    if stage == "ppo":  # policy and value train; reference and reward model frozen
        pw, pg, po = trained_model(arch, arch.params, s)
        vw, vg, vo = trained_model(arch, arch.reward_params, s, head=arch.hidden)
        ref = 0 if s.lora_r > 0 else arch.params * wb
        frozen = ref + arch.reward_params * wb
        update = activations(arch, s, sequences=per_gpu, logits=True)
        update += activations(arch, s, sequences=per_gpu, logits=False)
        rollout = kv_cache(arch, s, sequences=per_gpu)
        return Need(pw + vw, pg + vg, po + vo, frozen, max(update, rollout))
    if stage == "best-of-n":  # sampling with the KV cache, then the judge; its SFT is the sft stage
        w = arch.params * wb
        judge = arch.reward_params * wb
        return Need(w, 0, 0, judge, kv_cache(arch, s, sequences=per_gpu) + per_gpu * arch.vocab * 4)
    raise ValueError(f"unknown stage {stage!r}")


def stage_settings(stage: str, flags: dict, *, context: int, gpus: int = 1) -> Settings:
    """What a stage's own flags (its config's fields, as a round gives them) mean for its memory. Sequences are as
    long as the stage's --max-length allows, else DEFAULT_SEQUENCE, never past the model's context; a forward takes
    --micro-batch-size examples when set; best-of-n decodes --batch-size sequences of prompt + --max-new-tokens."""
    length = int(flags.get("max_length") or 0) or DEFAULT_SEQUENCE
    if stage in ("ppo", "best-of-n"):
        length = DEFAULT_SEQUENCE + int(flags.get("max_new_tokens") or 0)
    return Settings(
        precision=str(flags.get("precision", "auto")),
        gradient_checkpointing=bool(flags.get("gradient_checkpointing", False)),
        lora_r=int(flags.get("lora_r") or 0),
        batch_size=int(flags.get("micro_batch_size") or 0) or int(flags.get("batch_size") or 8),
        max_length=min(length, context),
        gpus=gpus,
        precompute_ref_logprobs=bool(flags.get("precompute_ref_logprobs", False)),
    )


def fits(need: Need, gpu_memory_gb: float) -> bool:
    return need.total * (1 + HEADROOM_FRACTION) + HEADROOM_GIB * GIB <= gpu_memory_gb * GIB


# ----------------------------------------------------------------------------- what makes it fit


def flags_of(s: Settings, base: Settings) -> str:
    """The flags that turn `base` into `s` (what a user adds)."""
    out = []
    if s.lora_r != base.lora_r:
        out.append(f"--lora-r {s.lora_r}")
    if s.precision != base.precision:
        out.append(f"--precision {s.precision}")
    if s.gradient_checkpointing and not base.gradient_checkpointing:
        out.append("--gradient-checkpointing")
    if s.precompute_ref_logprobs and not base.precompute_ref_logprobs:
        out.append("--precompute-ref-logprobs")
    return " ".join(out)


def candidates(base: Settings, stage: str) -> list[Settings]:
    """Settings to try, fewest and cheapest changes first; never undoing one the user chose."""
    out = [base]
    levers = [{"gradient_checkpointing": True}, {"precision": "bf16"}]
    if stage == "dpo":
        levers.insert(0, {"precompute_ref_logprobs": True})
    if base.lora_r <= 0:
        levers.append({"lora_r": SUGGESTED_LORA_R})
    for n in range(1, len(levers) + 1):
        for combo in itertools.combinations(levers, n):
            s = replace(base, **{k: v for lever in combo for k, v in lever.items()})
            if s not in out:
                out.append(s)
    return out


def fitting_settings(arch: Architecture, stage: str, base: Settings, gpu_memory_gb: float) -> Settings | None:
    for s in candidates(base, stage):
        if fits(stage_need(arch, stage, s), gpu_memory_gb):
            return s
    return None


@dataclass
class StagePlan:
    stage: str
    need: Need
    fits: bool | None  # None: no --gpu-memory given
    fits_with: str | None  # the flags to add, "" when it fits as it is, None when nothing tried fits


def plan_stages(
    arch: Architecture, settings: dict[str, Settings], gpu_memory_gb: float
) -> tuple[list[StagePlan], bool | None]:
    """Each stage's plan under its own settings; and whether all of them fit (None: no GPU memory to judge by)."""
    plans = []
    for stage, s in settings.items():
        need = stage_need(arch, stage, s)
        if gpu_memory_gb <= 0:
            plans.append(StagePlan(stage, need, None, None))
            continue
        ok = fits(need, gpu_memory_gb)
        found = s if ok else fitting_settings(arch, stage, s, gpu_memory_gb)
        plans.append(StagePlan(stage, need, ok, None if found is None else flags_of(found, s)))
    verdict = None if gpu_memory_gb <= 0 else all(p.fits for p in plans)
    return plans, verdict


def misfit_message(arch: Architecture, plans: list[StagePlan], gpu_memory_gb: float, gpus: int) -> str:
    """One line naming each stage that does not fit, its need, and what makes it fit."""
    parts = []
    for p in plans:
        if p.fits is False:
            cure = f"fits with {p.fits_with}" if p.fits_with else "nothing tried makes it fit: more GPUs or memory"
            parts.append(f"{p.stage} needs {p.need.total / GIB:.1f} GiB ({cure})")
    where = f"{gpus} GPU(s) of {gpu_memory_gb:g} GB" if gpus > 1 else f"one GPU of {gpu_memory_gb:g} GB"
    return f"{arch.name} does not fit on {where}: " + "; ".join(parts)


# ----------------------------------------------------------------------------- the command


def run_plan(config: PlanConfig, *, on_metrics=None) -> dict | None:
    if bool(config.model) == bool(config.params):
        raise UsageError("give one of --model DIR or --params N")
    if config.gpus < 1 or config.batch_size < 1 or config.max_length < 1 or config.lora_r < 0:
        raise UsageError("--gpus, --batch-size and --max-length must be at least 1, --lora-r at least 0")
    if config.gpu_memory < 0:
        raise UsageError("--gpu-memory must be 0 (no fit judged) or a size in GB")
    unknown = [s for s in config.stages if s not in ROUND_STAGES]
    if unknown:
        raise UsageError(f"--stages takes {' '.join(ROUND_STAGES)}, got {' '.join(unknown)}")
    stages = [s for s in ROUND_STAGES if s in config.stages] if config.stages else list(ROUND_STAGES)
    if config.model:
        arch = architecture_from_dir(config.model)
    else:
        arch = architecture_from_params(parse_param_count(config.params))
    base = Settings(
        precision=config.precision,
        gradient_checkpointing=config.gradient_checkpointing,
        lora_r=config.lora_r,
        batch_size=config.batch_size,
        max_length=min(config.max_length, arch.context),
        gpus=config.gpus,
    )
    plans, verdict = plan_stages(arch, dict.fromkeys(stages, base), config.gpu_memory)
    round_with = None
    if verdict is False:
        round_with = next(
            (
                flags_of(s, base)
                for s in candidates(base, "dpo" if "dpo" in stages else "sft")  # dpo: one more lever
                if all(fits(stage_need(arch, p.stage, s), config.gpu_memory) for p in plans)
            ),
            None,
        )
    report = {
        "architecture": asdict(arch),
        "settings": asdict(base),
        "gpu_memory_gb": config.gpu_memory,
        "stages": {
            p.stage: {**asdict(p.need), "total": p.need.total, "fits": p.fits, "fits_with": p.fits_with} for p in plans
        },
        "fits": verdict,
        "round_fits_with": round_with,
    }
    if config.json:
        return report
    print(render(arch, base, plans, verdict, round_with, config.gpu_memory))
    return None


def render(
    arch: Architecture,
    s: Settings,
    plans: list[StagePlan],
    verdict: bool | None,
    round_with: str | None,
    gpu_memory_gb: float,
) -> str:
    lines = [
        f"{arch.name}: {arch.params / 1e6:.1f}M parameters, {arch.layers} layers, hidden {arch.hidden}, "
        f"vocab {arch.vocab}",
        f"batch {s.batch_size} × {s.max_length} tokens on {s.gpus} GPU(s), precision {s.precision}"
        f"{', LoRA r=' + str(s.lora_r) if s.lora_r else ''}"
        f"{', gradient checkpointing' if s.gradient_checkpointing else ''}",
        "",
        f"{'stage':<10} {'weights':>8} {'grads':>8} {'optim':>8} {'copies':>8} {'activ':>8} {'total':>8}  GiB per GPU",
    ]
    for p in plans:
        n = p.need
        cells = " ".join(f"{v / GIB:>8.2f}" for v in (n.weights, n.gradients, n.optimizer, n.copies, n.activations))
        verdict_text = ""
        if p.fits is True:
            verdict_text = "fits"
        elif p.fits is False:
            verdict_text = f"fits with {p.fits_with}" if p.fits_with else "does not fit"
        lines.append(f"{p.stage:<10} {cells} {n.total / GIB:>8.2f}  {verdict_text}")
    lines.append("")
    if verdict is None:
        lines.append("give --gpu-memory GB to judge the fit")
    elif verdict:
        lines.append(f"every stage fits on {gpu_memory_gb:g} GB")
    elif round_with:
        lines.append(f"the round fits with: {round_with}")
    else:
        lines.append("no setting tried makes every stage fit: more GPUs (sharded training) or larger ones")
    lines.append(
        f"(fit leaves {HEADROOM_GIB:g} GiB + {HEADROOM_FRACTION:.0%} for the CUDA context and fragmentation; "
        "best-of-n's SFT is the sft line)"
    )
    return "\n".join(lines)


def _register() -> None:
    from trainer.cli import register_stage

    register_stage(
        name="plan",
        config_cls=PlanConfig,
        entry=run_plan,
        help="The GPU memory each stage of a round needs (weights, gradients, AdamW, copies, activations), "
        "whether it fits, and the flags that make it fit.",
    )


_register()
