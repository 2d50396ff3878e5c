"""Tiny tokenizer, causal LM and synthetic preference data for the RM/PPO/DPO/evaluate tests.

Built locally in well under a second; nothing is downloaded. The synthetic preference: words come from a
"good" and a "bad" half of a small vocabulary; the preferred response has more good words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD = [f"g{c}" for c in "abcdefghij"]
BAD = [f"b{c}" for c in "abcdefghij"]
NEUTRAL = [f"n{c}" for c in "abcdefgh"]
WORDS = GOOD + BAD + NEUTRAL
EOS, PAD = "<|endoftext|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
    "<|endoftext|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(out: Path):
    """Byte-level BPE where every synthetic word (with its leading space) is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(300)]
    corpus += ["<|user|> <|assistant|> <|system|>"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, min_frequency=2, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD, model_max_length=256
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def build_tiny_lm(out: Path, *, n_layer: int = 2, n_embd: int = 32, seed: int = 0, dropout: float = 0.1) -> Path:
    """GPT-2 with 2 layers, d=32 (dropout on in the config: RL code must switch it off itself)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out)
    tok = build_tokenizer(out)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def synthetic_pair(rng: random.Random, n_words: int = 8, good_frac: float = 0.8) -> dict:
    prompt = " ".join(rng.choice(NEUTRAL) for _ in range(4))

    def resp(main, other):
        return " " + " ".join(rng.choice(main if rng.random() < good_frac else other) for _ in range(n_words))

    return {"prompt": prompt, "chosen": resp(GOOD, BAD), "rejected": resp(BAD, GOOD)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def good_word_reward(prompt: str, response: str) -> float:
    """A judge for `--judge py:`: fraction of good words in the response."""
    words = response.split()
    return sum(w in GOOD for w in words) / max(len(words), 1)
