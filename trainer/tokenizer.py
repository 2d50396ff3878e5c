"""`tokenizer` stage: train a byte-level BPE tokenizer (`tokenizers`) with a dedicated PAD and a chat template.

Special tokens: EOS `<|endoftext|>` (ends documents and every chat turn), PAD `<|pad|>` (never EOS, so
masks built from PAD never hide the real EOS), `<|im_start|>` (opens a chat turn). The result is a
`PreTrainedTokenizerFast` directory that `AutoTokenizer.from_pretrained` loads offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import UsageError
from trainer.data import DataError, read_jsonl, read_text_lines
from trainer.outputs import atomic_output_dir, save_trainer_config

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
TURN_START = "<|im_start|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, TURN_START]

# ChatML-like: `<|im_start|>ROLE\nCONTENT<|endoftext|>` per turn. The assistant turn ends in EOS, so a model
# answering after the generation prompt stops by emitting EOS. {% generation %} marks assistant tokens for
# `return_assistant_tokens_mask`; SFT does not rely on it (it works with any prefix-stable template).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(kw_only=True)
class TokenizerConfig:
    input: list[str] = field(
        metadata={
            "help": "Text files (one document a line) or JSONL files ({text} | {prompt, completion} | {messages}).",
            "metavar": "FILE...",
        }
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size including special tokens."})
    out: str = field(metadata={"help": "Output tokenizer directory (must not exist).", "metavar": "DIR"})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})


def texts_of_record(obj: dict, path: str, line: int) -> list[str]:
    """The strings of one JSONL record that a tokenizer should learn from."""
    found: list[str] = []
    for key in ("text", "prompt", "completion", "chosen", "rejected"):
        v = obj.get(key)
        if isinstance(v, str):
            found.append(v)
        elif isinstance(v, list):
            found.extend(m["content"] for m in v if isinstance(m, dict) and isinstance(m.get("content"), str))
    msgs = obj.get("messages")
    if isinstance(msgs, list):
        found.extend(m["content"] for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), str))
    if not found:
        raise DataError(path, line, 'no text found (expected "text", "prompt"/"completion" or "messages")')
    return found


def iter_corpus(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if path.endswith(".jsonl"):
            for line, obj in read_jsonl(path):
                yield from texts_of_record(obj, path, line)
        else:
            for _, text in read_text_lines(path):
                yield text


def build_tokenizer(texts: Iterator[str], vocab_size: int, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[TURN_START],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def train_tokenizer(config: TokenizerConfig, *, on_metrics=None) -> Path:
    if not config.input:
        raise UsageError("missing required option --input")
    min_size = 256 + len(SPECIAL_TOKENS)
    if config.vocab_size < min_size:
        raise UsageError(f"--vocab-size must be at least {min_size} (256 bytes + special tokens)")
    for p in config.input:
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such file")
    # Validate all data before training so a bad line fails fast and nothing is written.
    n_texts = sum(1 for _ in iter_corpus(config.input))
    if n_texts == 0:
        raise UsageError(f"{', '.join(config.input)}: no text to train on")
    tok = build_tokenizer(iter_corpus(config.input), config.vocab_size, config.min_frequency)
    with atomic_output_dir(config.out) as tmp:
        # chat template inside tokenizer_config.json (not only chat_template.jinja) so older loaders see it
        tok.save_pretrained(str(tmp), save_jinja_files=False)
        save_trainer_config(tmp, "tokenizer", config)
    if on_metrics is not None:
        on_metrics({"step": 1, "total_steps": 1, "vocab_size": len(tok), "texts": n_texts})
    return Path(config.out)


from trainer.cli import register_stage  # noqa: E402  (cli imports stage modules; register after definitions)

register_stage(
    name="tokenizer",
    config_cls=TokenizerConfig,
    entry=train_tokenizer,
    help="Train a byte-level BPE tokenizer with PAD != EOS and a chat template.",
)
