"""Tiny Hugging Face model directories for app tests (seconds to build, nothing downloaded): a byte-level BPE
tokenizer from the trainer's tokenizer stage, and randomly initialised 1-layer GPT-2 policy / reward models."""

from __future__ import annotations

from pathlib import Path

CORPUS = [f"question: what is {a} plus {b}? answer: {a + b}" for a in range(12) for b in range(12)]


def build_tokenizer(root: Path) -> Path:
    from trainer.tokenizer import TokenizerConfig, train_tokenizer

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return train_tokenizer(TokenizerConfig(input=[str(corpus)], vocab_size=300, out=str(root / "tokenizer")))


def build_model(root: Path, tokenizer_dir: Path, *, kind: str, name: str) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    model = GPT2LMHeadModel(config) if kind == "policy" else GPT2ForSequenceClassification(config)
    out = root / name
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
