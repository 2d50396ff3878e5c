"""`pretrain` stage: a GPT-2 style causal LM trained from scratch on text or JSONL {"text"}.

Documents are tokenized, each followed by EOS, concatenated into one stream and cut into blocks of
`--context` tokens (nanoGPT packing). Text files: one document a line. JSONL: one {"text"} a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.config import TrainConfig, UsageError
from trainer.data import read_jsonl, read_text_lines, require_str
from trainer.gpt import build_gpt2, gpt2_config
from trainer.outputs import MetricsLog, atomic_output_dir, peak_memory, progress, save_trainer_config
from trainer.runtime import (
    adamw,
    autocast,
    checkpoint_activations_,
    clip_and_step,
    cosine_lr,
    drawn_permutations,
    epoch_batches,
    load_tokenizer,
    resolve_device,
    seed_everything,
    set_lr,
    total_steps_for,
    weight_dtype,
)


@dataclass(kw_only=True)
class PretrainConfig(TrainConfig):
    tokenizer: str = field(metadata={"help": "Tokenizer directory (from `trainer tokenizer`).", "metavar": "DIR"})
    data: list[str] = field(
        metadata={"help": 'Text files (one document a line) or JSONL {"text"} files.', "metavar": "FILE..."}
    )
    out: str = field(metadata={"help": "Output model directory (must not exist).", "metavar": "DIR"})
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks."})
    n_head: int = field(default=4, metadata={"help": "Attention heads."})
    n_embd: int = field(default=256, metadata={"help": "Embedding width."})
    context: int = field(default=256, metadata={"help": "Context length in tokens (block size)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout in the model (0 is usual for pretraining)."})
    lr: float = field(default=6e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear warmup steps before cosine decay."})
    grad_clip: float = field(default=1.0, metadata={"help": "Clip the global gradient norm (0 = off)."})


def read_documents(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if path.endswith(".jsonl"):
            for line, obj in read_jsonl(path):
                yield require_str(obj, "text", path, line)
        else:
            for _, text in read_text_lines(path):
                yield text


def pack_blocks(docs: list[str], tokenizer, context: int) -> torch.Tensor:
    """[N, context] token blocks from the EOS-joined token stream (a short corpus gives one shorter block)."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = [t for doc in ids for t in (*doc, tokenizer.eos_token_id)]
    if len(stream) < 2:
        raise UsageError("too little data to train on")
    n = len(stream) // context
    if n == 0:
        return torch.tensor([stream], dtype=torch.long)
    return torch.tensor(stream[: n * context], dtype=torch.long).view(n, context)


def train_pretrain(config: PretrainConfig, *, on_metrics=None) -> Path:
    for p in config.data:
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such file")
    device = resolve_device(config.device)
    tok = load_tokenizer(config.tokenizer)
    docs = list(read_documents(config.data))  # validates every line before any output exists
    blocks = pack_blocks(docs, tok, config.context)  # [N, C]
    try:
        model_config = gpt2_config(
            vocab_size=len(tok),
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            context=config.context,
            dropout=config.dropout,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None

    seed_everything(config.seed)
    model = build_gpt2(model_config).to(device, weight_dtype(config.precision))
    model.train()
    checkpoint_activations_(model, config.gradient_checkpointing)
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed)
    n = blocks.shape[0]
    batches_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = total_steps_for(epochs=config.epochs, batches_per_epoch=batches_per_epoch, max_steps=config.max_steps)

    with atomic_output_dir(config.out) as tmp:
        save_trainer_config(tmp, "pretrain", config)
        with MetricsLog(tmp / "metrics.jsonl", on_metrics) as log, progress(total=total, desc="pretrain") as bar:
            step, tokens_seen = 0, 0
            for epoch, index in epoch_batches(n, config.batch_size, total, drawn_permutations(n, shuffle)):
                x = blocks[index].to(device)  # [b, C]
                lr = cosine_lr(step, total, peak=config.lr, warmup_steps=config.warmup_steps)
                set_lr(optimizer, lr)
                with autocast(device, config.precision):
                    loss = model(input_ids=x, labels=x, use_cache=False).loss  # next-token CE; the model shifts labels
                loss.backward()
                grad_norm = clip_and_step(optimizer, model, config.grad_clip)
                step += 1
                tokens_seen += x.numel()
                log.log(
                    step,
                    total,
                    loss=loss.item(),
                    lr=lr,
                    grad_norm=grad_norm,
                    epoch=epoch,
                    tokens=tokens_seen,
                    **(peak_memory(device) if step == total else {}),
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        tok.model_max_length = config.context
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return Path(config.out)


from trainer.cli import register_stage  # noqa: E402

register_stage(
    name="pretrain",
    config_cls=PretrainConfig,
    entry=train_pretrain,
    help='Train a GPT-2 style causal LM from scratch on text or JSONL {"text"}.',
)
