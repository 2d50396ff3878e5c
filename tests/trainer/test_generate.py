import json

import pytest

from trainer.data import DataError
from trainer.generate import GenerateConfig, run_generate
from trainer.sampling import derive_seed

FIELDS = [
    "prompt_id",
    "sample",
    "text",
    "finish_reason",
    "num_tokens",
    "logprob",
    "temperature",
    "top_k",
    "top_p",
    "max_new_tokens",
    "seed",
]


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PROMPTS = [
    {"prompt_id": "p1", "prompt": "question: what is 3 plus 4? answer:"},
    {"prompt_id": 2, "messages": [{"role": "user", "content": "what is 1 plus 1?"}]},
    {"prompt_id": "p3", "prompt": "the big red cat sat on"},
    {"prompt_id": "p4", "prompt": ""},
]


def generate(model, prompts, out, **kw):
    cfg = GenerateConfig(
        **{
            **dict(
                model=str(model),
                prompts=str(prompts),
                out=str(out),
                num_samples=3,
                max_new_tokens=10,
                temperature=1.0,
                seed=7,
                device="cpu",
                batch_size=4,
            ),
            **kw,
        }
    )
    run_generate(cfg)
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_output_lines_fields_order_and_seeds(tmp_path, tiny_lm_dir):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    rows = generate(tiny_lm_dir, prompts, tmp_path / "out.jsonl", top_k=0, top_p=1.0)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(p["prompt_id"], k) for p in PROMPTS for k in range(3)]
    for r in rows:
        assert list(r) == FIELDS
        assert r["seed"] == derive_seed(7, r["prompt_id"], r["sample"])
        assert (r["temperature"], r["top_k"], r["top_p"], r["max_new_tokens"]) == (1.0, 0, 1.0, 10)
        assert 1 <= r["num_tokens"] <= 10 and r["logprob"] < 0
        if r["finish_reason"] == "length":
            assert r["num_tokens"] == 10
        else:
            assert r["finish_reason"] == "eos"
        assert "<|endoftext|>" not in r["text"] and "<|pad|>" not in r["text"]
    assert any(r["finish_reason"] == "eos" for r in rows)  # the tiny LM learned to end its lines
    assert len({r["text"] for r in rows}) > 3  # samples differ


def test_same_request_same_texts_whatever_the_batching_or_other_prompts(tmp_path, tiny_lm_dir):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    a = generate(tiny_lm_dir, prompts, tmp_path / "a.jsonl")
    b = generate(tiny_lm_dir, prompts, tmp_path / "b.jsonl", batch_size=5)
    assert [r["text"] for r in a] == [r["text"] for r in b]
    only_p3 = write_prompts(tmp_path / "p3.jsonl", [PROMPTS[2]])
    c = generate(tiny_lm_dir, only_p3, tmp_path / "c.jsonl", batch_size=1)
    assert [r["text"] for r in c] == [r["text"] for r in a if r["prompt_id"] == "p3"]
    d = generate(tiny_lm_dir, prompts, tmp_path / "d.jsonl", seed=8)
    assert [r["text"] for r in d] != [r["text"] for r in a]


def test_greedy_samples_are_identical(tmp_path, tiny_lm_dir):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    rows = generate(tiny_lm_dir, prompts, tmp_path / "g.jsonl", temperature=0.0)
    assert len({r["text"] for r in rows}) == 1


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "x"}, '"prompt_id" must be'),
        ({"prompt_id": "a", "text": "x"}, 'expected "prompt"'),
        ({"prompt_id": "p1", "prompt": "again"}, "duplicate prompt_id"),
    ],
)
def test_bad_prompt_line_names_file_and_line(tmp_path, tiny_lm_dir, row, message):
    prompts = write_prompts(tmp_path / "p.jsonl", [PROMPTS[0], row])
    with pytest.raises(DataError) as err:
        generate(tiny_lm_dir, prompts, tmp_path / "out.jsonl")
    assert str(err.value).startswith(f"{prompts}:2:") and message in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory, tiny_lm_dir):
    """A reward model with a seeded random head on the tiny LM: untrained, but it scores texts differently."""
    from trainer.reward_scoring import load_reward_model
    from trainer.runtime import load_tokenizer

    out = tmp_path_factory.mktemp("rm") / "rm"
    tok = load_tokenizer(tiny_lm_dir)
    load_reward_model(tiny_lm_dir, tok, new_head_seed=1).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_uncertainty_keeps_the_pairs_whose_bradley_terry_probability_is_nearest_half(
    tmp_path, tiny_lm_dir, tiny_rm_dir
):
    import torch

    from trainer.judges import load_judge

    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:3])
    kw = dict(num_samples=2, max_new_tokens=8, temperature=1.2)
    # the same seeds give the same candidates: the unselected run with 4x the samples is the candidate pool
    pool = generate(tiny_lm_dir, prompts, tmp_path / "pool.jsonl", **{**kw, "num_samples": 8})
    rows = generate(
        tiny_lm_dir,
        prompts,
        tmp_path / "sel.jsonl",
        **kw,
        select="uncertainty",
        reward_model=[str(tiny_rm_dir)],
        oversample=4,
        group_size=2,
        keep_prompts=2,
    )
    judge = load_judge(f"rm:{tiny_rm_dir}", "cpu", "fp32")
    assert len({r["prompt_id"] for r in rows}) == 2 and len(rows) == 4
    distance = {}  # |p - 0.5| of each prompt's best pair of distinct texts, from the pool
    for pid in {r["prompt_id"] for r in pool}:
        cands = [r for r in pool if r["prompt_id"] == pid]
        prompt_text = next(p.get("prompt") for p in PROMPTS if p["prompt_id"] == pid)
        if prompt_text is None:
            continue  # chat prompt: checked by the counts above
        r = judge([prompt_text] * len(cands), [c["text"] for c in cands])
        d = {
            (a["sample"], b["sample"]): abs(torch.sigmoid(torch.tensor(r[i] - r[j])).item() - 0.5)
            for i, a in enumerate(cands)
            for j, b in enumerate(cands)
            if i < j and a["text"] != b["text"]
        }
        distance[pid] = min(d.values())
        kept = [x for x in rows if x["prompt_id"] == pid]
        if kept:
            pair = tuple(sorted(x["sample"] for x in kept))
            assert d[pair] == pytest.approx(distance[pid], abs=1e-5)
            assert all(x["selection"] == "uncertainty" and x["group"] == 0 for x in kept)
            assert kept[0]["selection_score"] == pytest.approx(1 - 2 * distance[pid], abs=1e-4)
            assert [x["text"] for x in kept] == [c["text"] for c in cands if c["sample"] in pair]


def test_disagreement_needs_two_reward_models(tmp_path, tiny_lm_dir, tiny_rm_dir):
    from trainer.config import UsageError

    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    with pytest.raises(UsageError, match="disagreement needs at least 2 --reward-model, got 1"):
        generate(
            tiny_lm_dir,
            prompts,
            tmp_path / "o.jsonl",
            num_samples=2,
            select="disagreement",
            reward_model=[str(tiny_rm_dir)],
        )
