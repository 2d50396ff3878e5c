import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from trainer.sampling import GPT2Decoder, _forward_params, candidates, derive_seed, make_generator, sample_batch

PROMPTS = ["question: what is 3 plus", "the cat", "question: what is 12 plus 5? answer:", "big red dog sat on the"]


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval(), AutoTokenizer.from_pretrained(tiny_lm_dir)


def left_pad(tok, texts):
    rows = [tok(t)["input_ids"] for t in texts]
    P = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (P - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def greedy_without_cache(model, prompt_ids, max_new_tokens, eos):
    """Reference: full forward of the unpadded sequence at every step."""
    x = torch.tensor([prompt_ids])
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(x).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == eos:
                break
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    return out


def run(model, tok, texts, eos, **kw):
    ids, mask = left_pad(tok, texts)
    args = dict(max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    return sample_batch(model, ids, mask, **{**args, **kw})


def real(out, row):
    return out.tokens[row, : int(out.lengths[row])].tolist()


def test_kv_cache_greedy_equals_no_cache_greedy_and_stops_at_eos(lm):
    model, tok = lm
    free = run(model, tok, PROMPTS, eos=-1)  # never stops: reference token streams
    # make EOS a token that row 0 emits mid-way so rows finish at different steps (exercises row dropping)
    eos = free.tokens[0, 4].item()
    out = run(model, tok, PROMPTS, eos=eos)
    for row, text in enumerate(PROMPTS):
        expected = greedy_without_cache(model, tok(text)["input_ids"], 12, eos)
        assert real(out, row) == expected
        n = int(out.lengths[row])
        assert bool(out.finished[row]) == (expected[-1] == eos)
        assert out.tokens[row, n:].eq(tok.pad_token_id).all()  # PAD after the first EOS
        assert out.logprobs[row, n:].eq(0).all()
    assert out.finished[0] and int(out.lengths[0]) <= 5


def test_all_rows_finished_stops_early(lm):
    model, tok = lm
    first = run(model, tok, PROMPTS[:1], eos=-1).tokens[0, 0].item()
    out = run(model, tok, PROMPTS[:1], eos=first)
    assert out.lengths.tolist() == [1] and out.finished.tolist() == [True]


def test_logprobs_are_those_of_the_sampled_tokens_at_the_sampling_temperature(lm):
    model, tok = lm
    temperature = 0.7
    gens = [make_generator(derive_seed(5, i, 0)) for i in range(len(PROMPTS))]
    out = run(model, tok, PROMPTS, eos=tok.eos_token_id, temperature=temperature, generators=gens)
    for row, text in enumerate(PROMPTS):
        prompt = tok(text)["input_ids"]
        gen = real(out, row)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + gen])).logits[0]  # [P+T, V]
        logits[:, tok.pad_token_id] = float("-inf")  # PAD is filtered out like any other banned token
        logp = (logits[len(prompt) - 1 : -1] / temperature).log_softmax(-1)  # position t-1 predicts token t
        expected = logp.gather(-1, torch.tensor(gen)[:, None]).squeeze(-1)
        torch.testing.assert_close(out.logprobs[row, : len(gen)], expected, atol=1e-4, rtol=1e-4)


def test_a_row_depends_only_on_its_own_seed(lm):
    model, tok = lm
    seed = derive_seed(0, "a", 0)
    alone = run(model, tok, PROMPTS[2:3], eos=tok.eos_token_id, temperature=1.0, generators=[make_generator(seed)])
    mixed = run(
        model,
        tok,
        [PROMPTS[0], PROMPTS[3], PROMPTS[2], PROMPTS[1]],
        eos=tok.eos_token_id,
        temperature=1.0,
        generators=[make_generator(s) for s in (11, 12, seed, 13)],
    )
    assert real(mixed, 2) == real(alone, 0)
    torch.testing.assert_close(mixed.logprobs[2], alone.logprobs[0], atol=1e-5, rtol=1e-5)
    other_seed = run(
        model, tok, PROMPTS[2:3], eos=tok.eos_token_id, temperature=1.0, generators=[make_generator(seed + 1)]
    )
    assert real(other_seed, 0) != real(alone, 0)


@pytest.mark.parametrize("filters", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_1_and_tiny_top_p_are_greedy(lm, filters):
    model, tok = lm
    greedy = run(model, tok, PROMPTS, eos=tok.eos_token_id)
    sampled = run(
        model,
        tok,
        PROMPTS,
        eos=tok.eos_token_id,
        temperature=1.0,
        generators=[make_generator(i) for i in range(len(PROMPTS))],
        **filters,
    )
    assert sampled.tokens.tolist() == greedy.tokens.tolist()
    assert torch.allclose(sampled.logprobs, torch.zeros_like(sampled.logprobs))  # one candidate: log 1


def test_pad_is_never_sampled(lm):
    model, tok = lm
    first = run(model, tok, PROMPTS, eos=-1).tokens[:, 0]
    # pretend the greedy choice is the PAD token: it must be skipped
    out = run(model, tok, PROMPTS, eos=-1, pad_token_id=int(first[0]))
    assert out.tokens[0, 0] != first[0]


def test_candidates_top_p_keeps_the_smallest_prefix_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    logp, idx = candidates(logits, 1.0, 0, 0.8)
    assert idx.tolist() == [[0, 1, 2, 3]]
    assert logp[0, 0].item() == pytest.approx(math.log(0.5 / 0.8), abs=1e-6)
    assert logp[0, 1].item() == pytest.approx(math.log(0.3 / 0.8), abs=1e-6)
    assert torch.isinf(logp[0, 2:]).all()
    logp, idx = candidates(logits, 1.0, 3, 1.0)
    assert idx.tolist() == [[0, 1, 2]]
    assert logp.exp().sum().item() == pytest.approx(1.0)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "p1", 0) == derive_seed(0, "p1", 0)
    seeds = {derive_seed(s, p, k) for s in (0, 1) for p in ("p1", "p2") for k in (0, 1)}
    assert len(seeds) == 8
    assert all(0 <= s < 2**63 for s in seeds)


def test_repeated_prompts_share_one_prefill_and_match_separate_rows(lm):
    model, tok = lm
    texts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0], PROMPTS[1]]
    seeds = [21, 22, 23, 24, 25]
    together = run(
        model, tok, texts, eos=tok.eos_token_id, temperature=1.0, generators=[make_generator(s) for s in seeds]
    )
    for row, (text, seed) in enumerate(zip(texts, seeds)):
        alone = run(model, tok, [text], eos=tok.eos_token_id, temperature=1.0, generators=[make_generator(seed)])
        assert real(together, row) == real(alone, 0)
        torch.testing.assert_close(together.logprobs[row], alone.logprobs[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_gpt2_decoder_gives_the_tokens_and_logprobs_of_the_hf_forward(lm, monkeypatch, temperature):
    """The block-by-block GPT-2 decode path against the model's own forward with its DynamicCache."""
    model, tok = lm
    free = run(model, tok, PROMPTS, eos=-1)
    eos = free.tokens[1, 3].item()  # rows finish at different steps: exercises dropping rows from the cache
    kw = dict(eos=eos, temperature=temperature, max_new_tokens=20)
    steps = []
    orig_step = GPT2Decoder.step
    monkeypatch.setattr(GPT2Decoder, "step", lambda self, *a: steps.append(1) or orig_step(self, *a))
    fast = run(model, tok, PROMPTS, generators=[make_generator(s) for s in range(4)], **kw)
    assert steps, "the GPT-2 decode path was not used"
    monkeypatch.setattr(GPT2Decoder, "supports", staticmethod(lambda model, cache: False))
    slow = run(model, tok, PROMPTS, generators=[make_generator(s) for s in range(4)], **kw)
    assert fast.tokens.tolist() == slow.tokens.tolist()
    assert fast.lengths.tolist() == slow.lengths.tolist()
    torch.testing.assert_close(fast.logprobs, slow.logprobs, atol=1e-5, rtol=1e-5)
    # and the next-token logits themselves, one step after a prefill
    ids, mask = left_pad(tok, PROMPTS)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        cache_kw = "cache" if "cache" in _forward_params(model) else "past_key_values"
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache})
        nxt = free.tokens[:, 0]
        step_mask = torch.cat([mask, torch.ones(4, 1, dtype=mask.dtype)], 1)
        expected = model(
            input_ids=torch.cat([ids, nxt[:, None]], 1),
            attention_mask=step_mask,
            position_ids=torch.cat([pos, pos[:, -1:] + 1], 1),
        ).logits[:, -1]
        got = GPT2Decoder(model, cache, ids.shape[1], 1).step(nxt, pos[:, -1] + 1, step_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
