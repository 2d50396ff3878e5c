"""LoRA adapters through peft: the flags, wrapping a model, the reference as the same weights with the adapter
switched off, saving, and loading an adapter directory as the model it stands for.

An adapter directory is what `PeftModel.save_pretrained` writes (`adapter_config.json`, `adapter_model.safetensors`)
plus the tokenizer and `trainer_config.json`; `base_model_name_or_path` names the base directory by its absolute
path, so `peft.AutoPeftModelForCausalLM.from_pretrained(DIR)` loads it from anywhere on the machine (a relative
path is read against the adapter directory by this module, for whoever moves both).

Rules the stages share:
- `--lora-r 0` (the default) trains every weight, as before. A starting model that is an adapter directory is then
  loaded merged (base + adapter) and the output is a whole model.
- `--lora-r R` freezes the base and trains a new adapter on the architecture's projections (default: every Linear /
  Conv1D inside the transformer blocks, never the embeddings or the LM head). A starting model that is itself an
  adapter directory keeps training that adapter (its own rank and targets), so the output's base stays a directory
  on disk.
- A reward model's score head trains in full with the adapter (peft `modules_to_save`), and so does its final norm
  when it has a bias (the score-centering shift lives there; trainer.reward_model.shift_scores_).
- PPO/DPO under LoRA: the reference is the policy's own weights with the adapter disabled (no second copy), or,
  when the policy started from an adapter, that adapter's starting weights loaded as a second, frozen adapter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import UsageError

ADAPTER_CONFIG = "adapter_config.json"
REFERENCE_ADAPTER = "reference"  # the frozen copy of a starting adapter (PPO/DPO from an adapter policy)
TRAINED_ADAPTER = "default"  # peft's name for the adapter a model is wrapped with


@dataclass(kw_only=True)
class LoraFields:
    """The LoRA flags of every stage that trains a model (sft, reward, ppo, dpo)."""

    lora_r: int = field(
        default=0,
        metadata={"help": "LoRA rank: train a peft adapter of this rank on a frozen base (0 = train every weight)."},
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha: the adapter's update is scaled alpha/r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's input."})
    lora_target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Module names the adapter wraps (empty = every Linear/Conv1D inside the transformer blocks: "
            "c_attn,c_proj,c_fc on GPT-2; q_proj..down_proj on Llama, Qwen2, Mistral)."
        },
    )


def lora_enabled(config: Any) -> bool:
    return int(getattr(config, "lora_r", 0) or 0) > 0


def check_lora(config: Any) -> None:
    if config.lora_r < 0:
        raise UsageError("--lora-r must be >= 0 (0 = off)")
    if config.lora_r and config.lora_alpha <= 0:
        raise UsageError("--lora-alpha must be > 0")
    if not 0.0 <= config.lora_dropout < 1.0:
        raise UsageError("--lora-dropout must be in [0, 1)")


# ----------------------------------------------------------------------------- adapter directories


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    file = Path(path) / ADAPTER_CONFIG
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{file}: not a peft adapter config: {e}") from None
    if not isinstance(spec, dict) or not spec.get("base_model_name_or_path"):
        raise UsageError(f"{file}: names no base model (base_model_name_or_path)")
    return spec


def adapter_base(path: str | Path) -> Path:
    """The base model directory of an adapter directory (a relative path is read against the adapter's own)."""
    base = Path(read_adapter_config(path)["base_model_name_or_path"]).expanduser()
    base = base if base.is_absolute() else (Path(path) / base)
    if not base.is_dir():
        raise UsageError(f"{path}: its base model {base} is missing")
    return base.resolve()


def model_config_dir(path: str | Path) -> Path:
    """The directory whose config.json describes the model at `path` (an adapter's base, followed down)."""
    p = Path(path)
    while is_adapter_dir(p):
        p = adapter_base(p)
    return p


def load_merged(path: str | Path, load_base: Callable[[Path], nn.Module]) -> nn.Module:
    """An adapter directory as the plain model it stands for: its base (loaded by `load_base`, itself possibly an
    adapter) with the adapter merged in."""
    from peft import PeftModel

    base = load_base(adapter_base(path))
    try:
        model = PeftModel.from_pretrained(base, str(path), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UsageError(f"{path}: cannot load adapter: {e}") from None
    return model.merge_and_unload()


# ----------------------------------------------------------------------------- wrapping for training


def default_target_modules(model: nn.Module) -> list[str]:
    """The names of every Linear / Conv1D inside the transformer blocks (a module path with a layer index), which
    leaves out the embeddings, the LM head and a score head."""
    names: set[str] = set()
    for name, module in model.named_modules():
        if not (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
            continue
        parts = name.split(".")
        if any(p.isdigit() for p in parts[:-1]):
            names.add(parts[-1])
    if not names:
        raise UsageError("found no Linear or Conv1D layer inside the transformer blocks: set --lora-target-modules")
    return sorted(names)


def target_modules(config: Any, model: nn.Module) -> list[str]:
    given = [n.strip() for item in config.lora_target_modules for n in str(item).split(",") if n.strip()]
    if not given:
        return default_target_modules(model)
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [n for n in given if n not in present]
    if missing:
        raise UsageError(f"--lora-target-modules: the model has no module named {', '.join(missing)}")
    return given


def add_lora(model: nn.Module, config: Any, *, task: str, modules_to_save: list[str] | None = None):
    """A new trainable adapter on `model` (the base frozen): a peft PeftModel. task: CAUSAL_LM or SEQ_CLS."""
    from peft import LoraConfig, get_peft_model

    check_lora(config)
    targets = target_modules(config, model)
    # GPT-2's Conv1D stores its weight transposed (in × out); peft must be told
    conv1d = any(type(m).__name__ == "Conv1D" and n.split(".")[-1] in targets for n, m in model.named_modules())
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,
        task_type=task,
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, lora)


def continue_adapter(
    base: nn.Module, path: str | Path, *, task: str, modules_to_save: list[str] | None = None
) -> nn.Module:
    """The adapter of directory `path` on `base`, trainable (a run that starts from an adapter keeps training it)."""
    from peft import LoraConfig, PeftModel

    lora = LoraConfig.from_pretrained(str(path))
    lora.task_type = task
    lora.inference_mode = False
    if modules_to_save:
        lora.modules_to_save = sorted(set(lora.modules_to_save or []) | set(modules_to_save))
    try:
        return PeftModel.from_pretrained(base, str(path), config=lora, is_trainable=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UsageError(f"{path}: cannot load adapter: {e}") from None


def trainable_model(
    path: str | Path, config: Any, load: Callable[[Path], nn.Module], *, task: str, modules_to_save=None
) -> tuple[nn.Module, Any]:
    """(the model the stage runs forwards through, the peft model or None) for a stage that trains from `path`.

    Without LoRA: `load(path)` (an adapter directory comes merged). With LoRA: an adapter, new or continued; the
    first element is then the wrapped transformers model itself (peft injects its layers in place), so the stage's
    code and HF's own forward signatures stay as they are."""
    if not lora_enabled(config):
        return load(Path(path)), None
    check_lora(config)
    if is_adapter_dir(path):
        base = load(adapter_base(path))
        saved = modules_to_save(base) if callable(modules_to_save) else modules_to_save
        peft_model = continue_adapter(base, path, task=task, modules_to_save=saved)
    else:
        base = load(Path(path))
        saved = modules_to_save(base) if callable(modules_to_save) else modules_to_save
        peft_model = add_lora(base, config, task=task, modules_to_save=saved)
    return peft_model.get_base_model(), peft_model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_model(model: nn.Module, peft_model: Any, out: Path) -> None:
    """save_pretrained of the trained adapter (with LoRA) or of the whole model."""
    if peft_model is None:
        model.save_pretrained(str(out))
        return
    spec = peft_model.peft_config[TRAINED_ADAPTER]
    base = spec.base_model_name_or_path
    if base and not Path(base).is_absolute():
        # peft records the path the base was loaded from as given: a relative --model (./my-model) would be read
        # against the adapter directory later, where there is no such base
        spec.base_model_name_or_path = str(Path(base).resolve())
    peft_model.save_pretrained(str(out), selected_adapters=[TRAINED_ADAPTER])


# ----------------------------------------------------------------------------- the reference under LoRA


class AdapterSwitched(nn.Module):
    """Forwards of a peft model's wrapped transformers model with its trained adapter off (the base) or with the
    frozen reference adapter on instead. Holds no parameters of its own: the same tensors as the policy."""

    def __init__(self, peft_model: Any, *, reference_adapter: bool):
        super().__init__()
        # kept out of nn.Module's registry: the policy's parameters must not appear a second time here
        object.__setattr__(self, "_peft", peft_model)
        self.reference_adapter = reference_adapter

    @property
    def config(self):
        return self._peft.get_base_model().config

    @contextlib.contextmanager
    def switched(self):
        if not self.reference_adapter:
            with self._peft.disable_adapter():
                yield
            return
        self._peft.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            self._peft.set_adapter(TRAINED_ADAPTER)  # trainable again; the reference adapter frozen again

    def forward(self, *args, logits_to_keep: int = 0, **kwargs):
        from trainer.logprobs import _accepts_logits_to_keep

        inner = self._peft.get_base_model()
        if logits_to_keep and _accepts_logits_to_keep(inner):
            kwargs["logits_to_keep"] = logits_to_keep
        with torch.no_grad(), self.switched():
            return inner(*args, **kwargs)


def reference_model(config: Any, policy_path: str, peft_model: Any, load: Callable[[Path], nn.Module]) -> nn.Module:
    """The frozen reference of PPO/DPO. --ref empty or the policy itself, or (under LoRA) the policy adapter's base:
    the policy's own weights with its adapter switched; any other --ref: that model, loaded."""
    ref_path = config.ref or policy_path
    same_as_policy = Path(ref_path).resolve() == Path(policy_path).resolve()
    if peft_model is not None:
        policy_is_adapter = is_adapter_dir(policy_path)
        if same_as_policy and policy_is_adapter:
            peft_model.load_adapter(str(policy_path), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            peft_model.set_adapter(TRAINED_ADAPTER)
            return AdapterSwitched(peft_model, reference_adapter=True)
        if same_as_policy or (policy_is_adapter and Path(ref_path).resolve() == adapter_base(policy_path)):
            return AdapterSwitched(peft_model, reference_adapter=False)
    return load(Path(ref_path)).requires_grad_(False)


def trained_copy(module: nn.Module) -> nn.Module:
    """The module itself, or, for a module peft trains in full (`modules_to_save`), the adapter's trained copy."""
    copies = getattr(module, "modules_to_save", None)
    if isinstance(copies, nn.ModuleDict) and TRAINED_ADAPTER in copies:
        return copies[TRAINED_ADAPTER]
    return module
