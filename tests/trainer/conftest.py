"""Session-scoped tiny assets for trainer tests: a byte-level BPE tokenizer and a GPT-2 LM pretrained for a
few seconds on generated text. Built once per session through the real stages; tests must not modify them.

    tiny_corpus_file   text file, one short document a line (a few hundred lines)
    tiny_tokenizer_dir tokenizer stage output (vocab 400, PAD != EOS, chat template)
    tiny_lm_dir        pretrain stage output (n_layer=2, n_head=2, n_embd=32, context=64); emits EOS after a line
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: tiny models gain nothing from more, and on a shared 2-core machine a second spinning
# thread slows training ~10x. Child processes (`python -m trainer` in CLI tests) inherit the env var.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

WORDS = ["cat", "dog", "bird", "sat", "ran", "flew", "on", "the", "mat", "log", "tree", "red", "big", "small"]


def make_corpus_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if i % 2:
            lines.append(f"question: what is {a} plus {b}? answer: {a + b}")
        else:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + ".")
    return lines


@pytest.fixture(scope="session")
def tiny_corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_corpus_lines(400)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_corpus_file) -> Path:
    from trainer.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    return train_tokenizer(TokenizerConfig(input=[str(tiny_corpus_file)], vocab_size=400, out=str(out)))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, tiny_corpus_file, tiny_tokenizer_dir) -> Path:
    from trainer.pretrain import PretrainConfig, train_pretrain

    out = tmp_path_factory.mktemp("lm") / "lm"
    cfg = PretrainConfig(
        tokenizer=str(tiny_tokenizer_dir),
        data=[str(tiny_corpus_file)],
        out=str(out),
        n_layer=2,
        n_head=2,
        n_embd=32,
        context=64,
        batch_size=16,
        lr=3e-3,
        max_steps=80,
        warmup_steps=5,
        device="cpu",
        seed=0,
    )
    return train_pretrain(cfg)
