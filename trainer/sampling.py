"""Batched sampling with a KV cache, shared by `generate`, best-of-n, `evaluate` and PPO rollouts.

Speed comes from: one prefill over the left-padded prompts that computes logits for the last position
only; one forward per new token over the cached keys/values; all random numbers of a row drawn up front
from that row's own generator (no per-row Python work per token); finished rows dropped from the batch
and the cache as they finish; top-k sampling done on the k candidates only. For GPT-2 the decode steps
skip the Hugging Face forward: `GPT2Decoder` calls the blocks' own modules on the one new position per
row with a KV cache allocated once (no per-step mask building, cache concatenation or output objects;
for a small model those cost more than the arithmetic). Other architectures use the HF forward.

A row's tokens depend only on its prompt and its generator: each token is drawn by inverse-CDF sampling
with that row's t-th uniform, so batch composition and batch order do not change what a row says.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from trainer.runtime import autocast


@dataclass
class SampleOutput:
    tokens: torch.LongTensor  # [B, T] generated ids, PAD after the first EOS (EOS itself kept)
    logprobs: torch.FloatTensor  # [B, T] log-prob of each sampled token (temperature-scaled, filtered); 0 on pad
    lengths: torch.LongTensor  # [B] number of real generated tokens (incl. EOS)
    finished: torch.BoolTensor  # [B] True if EOS was produced


def derive_seed(seed: int, prompt_id: str | int, sample: int) -> int:
    """Seed of one sample from (request seed, prompt_id, sample index): stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def candidates(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Candidate log-probs [b, K] and their token ids [b, K] (None = identity over the vocabulary).

    Applies temperature, then top-k (k=0: off), then top-p (1.0: off); removed tokens get -inf.
    """
    logits = logits.float()  # [b, V]
    if temperature != 1.0:
        logits = logits / temperature
    idx = None
    V = logits.shape[-1]
    if 0 < top_k < V:
        logits, idx = logits.topk(top_k, dim=-1)  # [b, k], sorted descending
    if top_p < 1.0:
        if idx is None:
            logits, idx = logits.sort(dim=-1, descending=True)  # [b, V]
        probs = logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (the first token always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.log_softmax(-1), idx


def pick_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor | None, *, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids [b], their log-probs [b]). temperature 0 = greedy (log-prob under the unscaled dist)."""
    if temperature == 0:
        logp = logits.float().log_softmax(-1)  # [b, V]
        tok = logp.argmax(-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    logp, idx = candidates(logits, temperature, top_k, top_p)  # [b, K]
    cdf = logp.exp().cumsum(-1)  # [b, K]
    x = uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]  # [b]
    # first position whose cdf exceeds x: never a zero-probability candidate
    pos = torch.searchsorted(cdf, x[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)  # [b, 1]
    lp = logp.gather(-1, pos).squeeze(-1)
    tok = pos.squeeze(-1) if idx is None else idx.gather(-1, pos).squeeze(-1)
    return tok, lp


def _forward_params(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _select_rows(cache, index: torch.Tensor) -> bool:
    """Keep (or repeat) cache rows in `index` order; False if this model's cache cannot do it."""
    try:
        cache.batch_select_indices(index)
    except (NotImplementedError, AttributeError, ValueError):
        return False
    return True


class HFDecoder:
    """Decode steps through the model's own forward and its DynamicCache (any causal LM)."""

    def __init__(self, model, cache, cache_kw: str):
        self.model, self.cache, self.cache_kw = model, cache, cache_kw

    def select(self, index: torch.Tensor) -> bool:
        return _select_rows(self.cache, index)

    def step(self, tok: torch.Tensor, pos: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """tok [b], pos [b], attn_mask [b, S] (S = cached positions + 1) -> next-token logits [b, V]."""
        out = self.model(
            input_ids=tok[:, None],
            attention_mask=attn_mask,
            position_ids=pos[:, None],
            use_cache=True,
            **{self.cache_kw: self.cache},
        )
        return out.logits[:, -1, :]


class GPT2Decoder:
    """Decode steps of a GPT2LMHeadModel, block by block, on a KV cache allocated once for all steps.

    Computes what GPT2Model.forward computes for one new token per row (same modules, same order, same
    scaling), but writes each step's keys/values into place instead of concatenating, and builds no 4-D
    mask: the attention mask is the [b, S] padding mask as a boolean, broadcast over heads."""

    def __init__(self, model, cache, prompt_width: int, max_new_tokens: int):
        self.model = model
        tr = model.transformer
        H, hd = tr.h[0].attn.num_heads, tr.h[0].attn.head_dim
        keys0 = cache.layers[0].keys  # [b, H, P, hd] from the HF prefill (its dtype: bf16 under autocast)
        b = keys0.shape[0]
        S = prompt_width + max_new_tokens
        self.k = [keys0.new_empty(b, H, S, hd) for _ in tr.h]  # per layer [b, H, P+T, hd]
        self.v = [keys0.new_empty(b, H, S, hd) for _ in tr.h]
        for i, layer in enumerate(cache.layers[: len(tr.h)]):
            self.k[i][:, :, :prompt_width] = layer.keys
            self.v[i][:, :, :prompt_width] = layer.values

    @staticmethod
    def supports(model, cache) -> bool:
        cfg = model.config
        return (
            type(model).__name__ == "GPT2LMHeadModel"
            and not model.training
            and not getattr(cfg, "add_cross_attention", False)
            and not getattr(cfg, "reorder_and_upcast_attn", False)
            and getattr(cfg, "_attn_implementation", "eager") in ("eager", "sdpa")
            and len(getattr(cache, "layers", ())) == len(model.transformer.h)
            and all(getattr(layer, "keys", None) is not None for layer in cache.layers)
        )

    def select(self, index: torch.Tensor) -> bool:
        self.k = [k[index] for k in self.k]
        self.v = [v[index] for v in self.v]
        return True

    def step(self, tok: torch.Tensor, pos: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """tok [b], pos [b], attn_mask [b, S] (S = cached positions + 1) -> next-token logits [b, V]."""
        tr = self.model.transformer
        b, S = attn_mask.shape
        x = tr.wte(tok) + tr.wpe(pos)  # [b, d]
        d = x.shape[-1]
        allowed = attn_mask.bool()[:, None, None, :]  # [b, 1, 1, S]: real tokens only
        for i, block in enumerate(tr.h):
            attn = block.attn
            qkv = attn.c_attn(block.ln_1(x)).view(b, 3, attn.num_heads, attn.head_dim)  # [b, 3, H, hd]
            self.k[i][:, :, S - 1] = qkv[:, 1]
            self.v[i][:, :, S - 1] = qkv[:, 2]
            q = qkv[:, 0, :, None, :].to(self.k[i].dtype)  # [b, H, 1, hd]
            a = F.scaled_dot_product_attention(
                q, self.k[i][:, :, :S], self.v[i][:, :, :S], attn_mask=allowed, scale=attn.scaling
            )  # [b, H, 1, hd]
            x = x + attn.c_proj(a.reshape(b, d))
            x = x + block.mlp(block.ln_2(x))
        return self.model.lm_head(tr.ln_f(x))  # [b, V]


@torch.no_grad()
def sample_batch(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_token_id: int,
    pad_token_id: int,
    generators: list[torch.Generator] | None = None,
) -> SampleOutput:
    """Sample up to max_new_tokens per row from LEFT-padded prompts; stops when every row has emitted EOS.

    generators: one per row; a row's text then depends only on its own seed. None: torch's global RNG.
    The PAD token is never sampled: it is filtered out like a top-k reject (logprobs are under that filter).
    Identical prompt rows (K samples of one prompt) are encoded once and their cache shared.
    """
    device = prompt_ids.device
    B, P = prompt_ids.shape
    T = max_new_tokens
    tokens = torch.full((B, T), pad_token_id, dtype=torch.long, device=device)  # [B, T]
    logprobs = torch.zeros(B, T, dtype=torch.float32, device=device)  # [B, T]
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # [B]
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # [B]
    if B == 0 or T == 0:
        return SampleOutput(tokens, logprobs, lengths, finished)

    if temperature == 0:
        uniforms = None
    elif generators is None:
        uniforms = torch.rand(B, T)  # [B, T]
    else:
        if len(generators) != B:
            raise ValueError(f"need one generator per row: {len(generators)} for {B} rows")
        uniforms = torch.stack([torch.rand(T, generator=g, device=g.device).cpu() for g in generators])  # [B, T]
    if uniforms is not None:
        uniforms = uniforms.to(device)

    prompt_mask = prompt_mask.to(device=device, dtype=torch.long)
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, T)], dim=1)  # [B, P+T]; column P+t valid once fed
    position_ids = (prompt_mask.cumsum(-1) - 1).clamp_(min=0)  # [B, P], left padding -> real tokens from 0
    params = _forward_params(model)
    # transformers 5 renamed `past_key_values` to `cache`; we own the cache object and pass it by either name
    cache = DynamicCache(config=model.config)
    cache_kw = "cache" if "cache" in params else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # prefill: last position's logits only

    # Prefill each distinct prompt once, then give every row its copy of the cache.
    rows = prompt_ids.masked_fill(prompt_mask == 0, -1)  # pad content must not split equal prompts
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
    share = uniq.shape[0] < B
    if share:  # first row of each distinct prompt
        pre = torch.full((uniq.shape[0],), B, dtype=torch.long, device=device).scatter_reduce_(
            0, inverse, torch.arange(B, device=device), reduce="amin"
        )
    else:
        pre = slice(None)
    out = model(
        input_ids=prompt_ids[pre],
        attention_mask=prompt_mask[pre],
        position_ids=position_ids[pre],
        use_cache=True,
        **{cache_kw: cache},
        **extra,
    )
    logits = out.logits[:, -1, :]  # [u, V]
    if share:
        if _select_rows(cache, inverse):
            logits = logits[inverse]  # [B, V]
        else:  # cache cannot be re-indexed: encode every row
            cache = DynamicCache(config=model.config)
            out = model(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                position_ids=position_ids,
                use_cache=True,
                **{cache_kw: cache},
                **extra,
            )
            logits = out.logits[:, -1, :]
    next_pos = position_ids[:, -1] + 1  # [b]
    decoder = (
        GPT2Decoder(model, cache, P, T) if GPT2Decoder.supports(model, cache) else HFDecoder(model, cache, cache_kw)
    )
    rows_of = torch.arange(B, device=device)  # working row -> row of the full batch
    alive = torch.ones(B, dtype=torch.bool, device=device)  # working rows that have not emitted EOS
    ban_pad = pad_token_id != eos_token_id and 0 <= pad_token_id < logits.shape[-1]
    can_drop = True

    for t in range(T):
        if ban_pad:
            logits[:, pad_token_id] = float("-inf")
        u = None if uniforms is None else uniforms[rows_of, t]
        tok, lp = pick_tokens(logits, u, temperature=temperature, top_k=top_k, top_p=top_p)  # [b], [b]
        tok = tok.masked_fill(~alive, pad_token_id)  # finished rows still in the batch emit PAD
        tokens[rows_of, t] = tok
        logprobs[rows_of, t] = lp.masked_fill(~alive, 0.0)
        lengths[rows_of] += alive.long()
        done = alive & (tok == eos_token_id)  # [b]
        finished[rows_of] |= done
        alive &= ~done
        n_alive = int(alive.sum())
        if n_alive == 0 or t == T - 1:
            break
        b = alive.numel()
        if can_drop and (b - n_alive) * 4 >= b:
            # A quarter of the batch is finished: drop those rows from the batch and the cache, so later steps
            # cost only what live rows need (dropping one row at a time would cost more than it saves).
            keep = alive.nonzero().squeeze(-1)  # [b']
            if decoder.select(keep):
                rows_of, tok, mask, next_pos, alive = rows_of[keep], tok[keep], mask[keep], next_pos[keep], alive[keep]
            else:
                can_drop = False
        logits = decoder.step(tok, next_pos, mask[:, : P + t + 1])  # [b, V]
        next_pos = next_pos + 1
    return SampleOutput(tokens, logprobs, lengths, finished)


def sample_prompts(
    model, tok, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, settings, generators: list[torch.Generator]
) -> SampleOutput:
    """`sample_batch` with a stage's sampling settings (any config with temperature, top_k, top_p, max_new_tokens and
    precision) and the tokenizer's EOS and PAD, under bf16 autocast when the precision asks for it."""
    with autocast(prompt_ids.device, settings.precision):
        return sample_batch(
            model,
            prompt_ids,
            prompt_mask,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            generators=generators,
        )
