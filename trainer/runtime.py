"""Device, precision, seeding, loading of tokenizers / causal LMs from any Hugging Face directory, and the
optimizer and learning-rate schedules the stages share."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from trainer.adapters import is_adapter_dir, load_merged, model_config_dir
from trainer.config import UsageError
from trainer.distributed import whole_value

# Models are loaded from local directories only; nothing is downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def quiet_when_not_a_terminal() -> None:
    """transformers draws its own progress bars (saving shards...); keep stderr clean for the worker's logs."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


quiet_when_not_a_terminal()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto|cpu|cuda, got {name!r}")
    return torch.device(name)


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype the weights are loaded in: bf16 keeps them in bf16 (not only autocast), otherwise fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def uses_bf16(device: torch.device, precision: str) -> bool:
    if precision == "bf16":
        return True
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return False


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (or auto on a bf16-capable GPU). Under auto the weights and optimizer stay fp32;
    under bf16 they are bf16 already (weight_dtype) and autocast keeps the few fp32 tensors (a new head) in step."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{p}: not a {what} directory")
    return p


def load_tokenizer(path: str | Path):
    """AutoTokenizer from a local directory; one without a PAD token pads with its EOS.

    The vocabulary never grows (no added PAD, no resized embeddings: a model keeps its shapes, and its outputs load
    where it came from). Padding is safe with PAD == EOS because every mask here comes from the attention mask and
    every response end from the first EOS, never from PAD ids (trainer.masks).
    """
    from transformers import AutoTokenizer

    p = _check_dir(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load tokenizer: {e}") from None
    if tok.eos_token is None:
        raise UsageError(f"{p}: tokenizer has no EOS token")
    turn_end = chat_turn_end(tok)
    if turn_end and turn_end != tok.eos_token and tok.convert_tokens_to_ids(turn_end) in generation_stop_ids(p):
        # The chat template ends an answer with a token the model's own generation config stops at, but the tokenizer
        # names another EOS (Llama 3 Instruct as first published: EOS <|end_of_text|>, turns end in <|eot_id|>).
        # The end of a turn is what a chat model says when it is done: EOS it is, as its later tokenizers have it.
        tok.eos_token = turn_end
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def chat_turn_end(tok) -> str | None:
    """The special token the chat template writes right after an assistant's answer; None without a template."""
    if getattr(tok, "chat_template", None) is None:
        return None
    answer = "rlhf-answer-7f3"
    try:
        text = tok.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}], tokenize=False
        )
    except Exception:  # a template may refuse any conversation (jinja2 errors, raise_exception): no turn end
        return None
    rest = text[text.rfind(answer) + len(answer) :] if answer in text else ""
    specials = sorted({a.content for a in tok.added_tokens_decoder.values() if a.special}, key=len, reverse=True)
    return next((t for t in specials if rest.startswith(t)), None)


def generation_stop_ids(path: Path) -> list[int]:
    """The ids the directory's generation_config.json stops at (eos_token_id: one id or a list); [] without one."""
    try:
        stops = json.loads((path / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        return []
    return [stops] if isinstance(stops, int) else [s for s in stops or [] if isinstance(s, int)]


def check_same_tokenizer(tok, other, what: str, *, against: str) -> None:
    """Two models scored on one sequence of token ids must share the vocabulary."""
    if tok.get_vocab() != other.get_vocab() or tok.eos_token_id != other.eos_token_id:
        raise UsageError(f"{what} uses a different tokenizer than {against} (token ids would not match; trl#1979)")


def load_causal_lm(
    path: str | Path,
    device: torch.device | str = "cpu",
    *,
    train: bool = False,
    tokenizer=None,
    dtype: torch.dtype = torch.float32,
):
    """AutoModelForCausalLM in `dtype` (fp32 unless --precision bf16: weight_dtype) on `device`, in train() or
    eval() mode.

    With `tokenizer`, the model's pad/eos ids are set from it (a generation config that already stops at several
    ids, Llama 3's end of text and end of turn, keeps them), and embeddings are resized only if the tokenizer has
    more tokens than the model (a tokenizer given tokens its model never had; load_tokenizer adds none). A peft
    adapter directory (adapter_config.json) loads as its base with the adapter merged in, so every stage takes
    adapter and whole models alike (trainer.adapters).
    """
    from transformers import AutoModelForCausalLM

    p = _check_dir(path, "model")
    if is_adapter_dir(p):
        model = load_merged(p, lambda base: load_causal_lm(base, "cpu", tokenizer=tokenizer, dtype=dtype))
        model.to(device)
        model.train(train)
        return model
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
    except (OSError, ValueError) as e:
        raise UsageError(f"{p}: cannot load causal LM: {e}") from None
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"  # e.g. GPT2LMHeadModel: the name carries no loss type; avoid a warning
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.pad_token_id = tokenizer.pad_token_id
            stops = generation.eos_token_id
            if not (isinstance(stops, list) and tokenizer.eos_token_id in stops):
                generation.eos_token_id = tokenizer.eos_token_id
    model.to(device)
    model.train(train)
    return model


def model_context(model) -> int:
    """The longest sequence the model takes (its position embeddings), 2048 when its config does not say."""
    return config_context(model.config)


def model_dir_context(path: str | Path) -> int:
    """model_context of a model directory, read from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    try:
        return config_context(AutoConfig.from_pretrained(str(model_config_dir(path))))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot load model config: {e}") from None


def config_context(cfg) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def use_fast_kernels_(model: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    """Same function, faster kernels. GPT-2's `gelu_new` is a Python formula of five element-wise ops; torch's
    fused tanh-GELU computes the same function (within 3e-7) at a quarter of the cost. Under bf16 autocast on
    CPU, SDPA's flash-attention backward is slower than eager attention at these lengths, so eager is used."""
    for module in model.modules():
        if type(getattr(module, "act", None)).__name__ in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh"):
            module.act = torch.nn.GELU(approximate="tanh")
    if device.type == "cpu" and uses_bf16(device, precision) and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):
            pass  # the architecture has no eager path: keep its default
    return model


def checkpoint_activations_(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """--gradient-checkpointing: each decoder layer keeps only its input in the forward and is run again in the
    backward (transformers' activation checkpointing, non-reentrant), so activations cost one hidden state per
    layer instead of a dozen. transformers checkpoints only layers in training mode with gradients on; the stages
    keep their models in eval mode (dropout off), so the layers alone are flagged as training here (their dropout
    submodules stay off). Under no_grad (sampling with the KV cache, reference and reward passes) layers run as
    they are, cache included."""
    if not enabled:
        return model
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UsageError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True  # the layer itself only: not its dropout children
    return model


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8):
    """AdamW with decay on matrices only (nanoGPT): biases, LayerNorms and 1-D params are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def cosine_lr(step: int, total_steps: int, *, peak: float, warmup_steps: int, min_ratio: float = 0.1) -> float:
    """Linear warmup to `peak`, then cosine decay to `min_ratio * peak` at `total_steps` (step is 0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, enabled: bool = True):
    """Scheduler: LR × (1 - step / total_steps) after each optimizer step, 0 at the end (TRL's default);
    constant when not `enabled`."""
    total = max(total_steps, 1)
    factor = (lambda s: 1.0 - s / total) if enabled else (lambda s: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps_for(*, epochs: int, batches_per_epoch: int, max_steps: int) -> int:
    """--max-steps, when set, replaces epochs (as in transformers' Trainer); otherwise epochs × batches."""
    if max_steps > 0:
        return max_steps
    return max(1, epochs) * max(1, batches_per_epoch)


def epoch_batches(
    n: int, batch_size: int, total_steps: int, permutation: Callable[[int], torch.Tensor]
) -> Iterator[tuple[float, torch.Tensor]]:
    """The index batches of a run of `total_steps` steps over n examples, each pass in the order
    `permutation(pass)` gives, each with the epoch it reaches (1.5 = half way through the second pass). With
    --max-steps past the data's end the data cycles, reshuffled."""
    step, epoch = 0, 0
    while step < total_steps:
        order = permutation(epoch)
        for start in range(0, n, batch_size):
            if step >= total_steps:
                return
            index = order[start : start + batch_size]
            step += 1
            yield epoch + (start + len(index)) / n, index
        epoch += 1


def seeded_permutations(n: int, seed: int) -> Callable[[int], torch.Tensor]:
    """epoch_batches' order for a pass: a permutation of n seeded by (seed, pass), so any pass can be rebuilt."""
    return lambda epoch: torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def drawn_permutations(n: int, generator: torch.Generator) -> Callable[[int], torch.Tensor]:
    """epoch_batches' order for a pass: the next permutation of n drawn from one generator."""
    return lambda epoch: torch.randperm(n, generator=generator)


def clip_and_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module, grad_clip: float) -> float:
    """Clip the global gradient norm to `grad_clip` (0 = off), take the optimizer step, clear the gradients.
    -> the gradient norm before clipping (0.0 when off)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else torch.tensor(0.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return whole_value(grad_norm)  # of sharded (FSDP) parameters: a DTensor
