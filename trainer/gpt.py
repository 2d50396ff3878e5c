"""A GPT-2 style causal LM built from scratch (transformers' GPT2LMHeadModel), sized by a few numbers."""

from __future__ import annotations

from transformers import GPT2Config, GPT2LMHeadModel


def gpt2_config(
    *,
    vocab_size: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    context: int,
    dropout: float,
    eos_token_id: int,
    pad_token_id: int,
    bos_token_id: int | None = None,
) -> GPT2Config:
    if n_embd % n_head:
        raise ValueError(f"--n-embd ({n_embd}) must be divisible by --n-head ({n_head})")
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=context,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=eos_token_id if bos_token_id is None else bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=True,
    )


def build_gpt2(config: GPT2Config) -> GPT2LMHeadModel:
    """Fresh weights (GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer))."""
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # class name has no loss-type suffix; say it instead of a warning per run
    return model
