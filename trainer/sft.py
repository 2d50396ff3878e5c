"""`sft` stage: supervised fine-tuning of any causal LM with loss on completion tokens only.

Data (JSONL, one example a line), TRL conventions:
  {"prompt": str, "completion": str}   text is prompt + completion exactly (the data carries its own
                                       separator); EOS is appended; loss on the completion and EOS.
  {"messages": [{role, content}...]}   rendered by the tokenizer's chat template; loss on assistant turns.
  {"prompt": [msgs], "completion": [msgs]}  conversational prompt/completion; loss on the completion turns.
Assistant spans are found by rendering the conversation prefixes, so any prefix-stable chat template works
(no `{% generation %}` tags needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.adapters import LoraFields, save_model, trainable_model
from trainer.config import TrainConfig, UsageError
from trainer.context_fit import SKIPPED_METRIC, sequence_limit, warn_skipped
from trainer.data import DataError, read_jsonl, require_messages
from trainer.distributed import (
    NoOutput,
    all_reduce_sum,
    ddp,
    dist_info,
    end_process_group,
    fsdp_requested,
    full_state_dict,
    micro_chunks,
    process_device,
    shard,
)
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, progress, save_trainer_config
from trainer.prompt_data import encode_text
from trainer.runtime import (
    adamw,
    autocast,
    checkpoint_activations_,
    clip_and_step,
    cosine_lr,
    drawn_permutations,
    epoch_batches,
    load_causal_lm,
    load_tokenizer,
    model_context,
    resolve_device,
    seed_everything,
    set_lr,
    total_steps_for,
    weight_dtype,
)

IGNORE = -100  # label value ignored by the loss (prompt, chat scaffolding, padding)


@dataclass(kw_only=True)
class SftConfig(LoraFields, TrainConfig):
    model: str = field(
        metadata={"help": "Any Hugging Face causal LM directory (with its tokenizer).", "metavar": "DIR"}
    )
    data: str = field(metadata={"help": "JSONL: {prompt, completion} or chat {messages} lines.", "metavar": "FILE"})
    out: str = field(metadata={"help": "Output model directory (must not exist).", "metavar": "DIR"})
    lr: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    max_length: int = field(
        default=0,
        metadata={"help": "Skip examples longer than this many tokens (0 = the model's context length)."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on matrices."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps before cosine decay."})
    grad_clip: float = field(default=1.0, metadata={"help": "Clip the global gradient norm (0 = off)."})
    fsdp: bool = field(
        default=False,
        metadata={
            "help": "Under torchrun / accelerate launch: shard the parameters, gradients and optimizer state across "
            "the processes (FSDP2, one unit a transformer block) instead of a whole copy on each (DDP), for a model "
            "larger than one device. On by itself under `accelerate launch` with an FSDP config."
        },
    )


def encode_prompt_completion(tok, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of `prompt + completion + EOS`; labels are IGNORE on every prompt-only token."""
    enc = encode_text(tok, prompt + completion, return_offsets_mapping=True)  # BOS etc. as the tokenizer adds them
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if ids and ids[-1] == tok.eos_token_id and tuple(offsets[-1]) == (0, 0):
        ids, offsets = ids[:-1], offsets[:-1]  # tokenizer appends EOS itself: keep exactly one, learned
    # a token that contains any completion character is learned (offsets are character spans)
    labels = [t if end > len(prompt) else IGNORE for t, (_, end) in zip(ids, offsets)]
    ids.append(tok.eos_token_id)
    labels.append(tok.eos_token_id)
    return ids, labels


def _render(tok, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_messages(tok, messages: list[dict], learn_from: int = 0) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a chat rendered by the template; labels only on assistant turns at index >= learn_from."""
    full = _render(tok, messages)
    spans = []  # character spans of the assistant turns to learn
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < learn_from:
            continue
        start = len(_render(tok, messages[:i], add_generation_prompt=True)) if i else 0
        upto = _render(tok, messages[: i + 1])
        if not full.startswith(upto) or start > len(upto):
            raise UsageError("the tokenizer's chat template is not prefix-stable; cannot locate assistant turns")
        spans.append((start, len(upto)))
    if not spans:
        raise ValueError("no assistant turn to learn from")
    enc = encode_text(tok, full, return_offsets_mapping=True)  # BOS once: the template's, or the tokenizer's
    ids = list(enc["input_ids"])
    labels = [
        t if any(s < e_span and e > s_span for s_span, e_span in spans) else IGNORE
        for t, (s, e) in zip(ids, enc["offset_mapping"])
    ]
    return ids, labels


def encode_record(tok, obj: dict, path: str, line: int) -> tuple[list[int], list[int]]:
    try:
        if "messages" in obj:
            return encode_messages(tok, require_messages(obj, path, line))
        if "prompt" in obj and "completion" in obj:
            prompt, completion = obj["prompt"], obj["completion"]
            if isinstance(prompt, str) and isinstance(completion, str):
                return encode_prompt_completion(tok, prompt, completion)
            if isinstance(prompt, list) and isinstance(completion, list):
                p = require_messages(obj, path, line, "prompt")
                c = require_messages(obj, path, line, "completion")
                return encode_messages(tok, p + c, learn_from=len(p))
            raise DataError(path, line, '"prompt" and "completion" must both be strings or both message lists')
    except ValueError as e:
        raise DataError(path, line, str(e)) from None
    raise DataError(path, line, 'expected {"prompt", "completion"} or {"messages"}')


def load_examples(
    tok, path: str, max_length: int, skipped: list[int] | None = None
) -> list[tuple[list[int], list[int]]]:
    """The examples that fit max_length; longer ones are skipped, never cut (trainer.context_fit: a cut example
    would teach stopping mid-answer with no EOS), their lines put into `skipped`."""
    chat_ok = getattr(tok, "chat_template", None) is not None
    examples = []
    skipped = [] if skipped is None else skipped
    for line, obj in read_jsonl(path):
        if not chat_ok and ("messages" in obj or isinstance(obj.get("prompt"), list)):
            raise DataError(path, line, "chat data needs a tokenizer with a chat template")
        ids, labels = encode_record(tok, obj, path, line)
        if len(ids) > max_length:
            skipped.append(line)
            continue
        examples.append((ids, labels))
    warn_skipped(path, "example(s)", skipped, max_length)
    if not examples:
        raise UsageError(f"{path}: no training examples")
    return examples


def collate(examples: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids [b, T], attention_mask [b, T], labels [b, T] (IGNORE on pad)."""
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def completion_token_count(examples: list[tuple[list[int], list[int]]]) -> int:
    """Tokens the loss is taken over: labels != IGNORE after the one-token shift (the first is never predicted)."""
    return sum(sum(t != IGNORE for t in labels[1:]) for _, labels in examples)


def summed_token_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy summed over the batch's completion tokens (the caller divides by the global token count, so
    the loss does not depend on how a global batch is shared among processes)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE, reduction="sum"
    )


def train_sft(config: SftConfig, *, on_metrics=None) -> Path:
    if not Path(config.data).is_file():
        raise UsageError(f"{config.data}: no such file")
    rank, world = dist_info()
    device = process_device(resolve_device(config.device), world)
    tok = load_tokenizer(config.model)
    seed_everything(config.seed)
    # with --lora-r: the base frozen, an adapter trained (peft_model saves it); else every weight
    dtype = weight_dtype(config.precision)
    model, peft_model = trainable_model(
        config.model,
        config,
        lambda p: load_causal_lm(p, device, train=True, tokenizer=tok, dtype=dtype),
        task="CAUSAL_LM",
    )
    checkpoint_activations_(model, config.gradient_checkpointing)
    max_length = sequence_limit(model_context(model), config.max_length)
    skipped: list[int] = []
    examples = load_examples(tok, config.data, max_length, skipped)
    sharded = world > 1 and fsdp_requested(config.fsdp)
    if sharded and peft_model is not None:
        raise UsageError("--fsdp shards a model trained in full; a LoRA adapter is small enough to copy (drop one)")
    # one process: the model itself; sharded, the model is its own wrapper (FSDP2 works in place)
    trained = shard(model) if sharded else ddp(model, device, world)

    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed)
    n = len(examples)
    batches_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = total_steps_for(epochs=config.epochs, batches_per_epoch=batches_per_epoch, max_steps=config.max_steps)

    with atomic_output_dir(config.out) if rank == 0 else NoOutput() as tmp:
        log = MetricsLog(tmp / "metrics.jsonl", on_metrics) if rank == 0 else None
        bar = progress(total=total, desc="sft") if rank == 0 else None
        step = 0
        for epoch, index in epoch_batches(n, config.batch_size, total, drawn_permutations(n, shuffle)):
            global_batch = [examples[j] for j in index.tolist()]
            tokens = max(completion_token_count(global_batch), 1)
            lr = cosine_lr(step, total, peak=config.lr, warmup_steps=config.warmup_steps)
            set_lr(optimizer, lr)
            # each process its share of the batch in one forward; a share left empty by a short last batch runs a
            # zero-weight filler so that every process meets the gradient all-reduce
            [(share, real)] = micro_chunks(global_batch, rank=rank, world=world, micro=math.ceil(len(index) / world))
            batch = {k: v.to(device) for k, v in collate(share, tok.pad_token_id).items()}
            with autocast(device, config.precision):
                loss_sum = summed_token_loss(trained, batch) * real
            # the mean over the GLOBAL batch's completion tokens; DDP averages over processes, hence × world
            (loss_sum / tokens * world).backward()
            grad_norm = clip_and_step(optimizer, model, config.grad_clip)
            [loss_total] = all_reduce_sum([float(loss_sum.detach())], world)
            step += 1
            if log is not None:
                log.log(
                    step,
                    total,
                    loss=loss_total / tokens,
                    lr=lr,
                    grad_norm=grad_norm,
                    epoch=epoch,
                    completion_tokens=sum(sum(t != IGNORE for t in lab) for _, lab in global_batch),
                    **{SKIPPED_METRIC: len(skipped)},
                    **(peak_memory(device) if step == total else {}),
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss_total / tokens:.3f}")
        whole = full_state_dict(model) if sharded else None  # every process takes part in gathering it
        if log is not None:
            bar.close()
            log.close()
            save_trainer_config(tmp, "sft", config)
            model.eval()
            if whole is not None:
                model.save_pretrained(str(tmp), state_dict=whole)
            else:
                save_model(model, peft_model, tmp)
            tok.save_pretrained(str(tmp))
    del trained  # the DDP wrapper goes before the process group (trainer.distributed.end_process_group)
    end_process_group(world)
    return Path(config.out)


from trainer.cli import register_stage  # noqa: E402

register_stage(
    name="sft",
    config_cls=SftConfig,
    entry=train_sft,
    help="Supervised fine-tuning with loss on completion / assistant tokens only.",
)
