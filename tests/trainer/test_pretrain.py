import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import run_metrics
from trainer.data import DataError
from trainer.pretrain import PretrainConfig, train_pretrain


def read_metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_output_is_a_complete_hf_directory_and_loss_decreases(tiny_lm_dir):
    names = {p.name for p in tiny_lm_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "trainer_config.json",
        "metrics.jsonl",
    } <= names
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert model.config.n_layer == 2 and model.config.n_embd == 32 and model.config.n_positions == 64
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    metrics = read_metrics(tiny_lm_dir)
    assert [m["step"] for m in metrics] == list(range(1, 81))
    assert all(m["total_steps"] == 80 for m in metrics)
    first, last = metrics[0]["loss"], sum(m["loss"] for m in metrics[-5:]) / 5
    assert first > 5.0 and last < first - 1.5  # from ~ln(vocab) to clearly learned
    cfg = json.loads((tiny_lm_dir / "trainer_config.json").read_text())
    assert cfg["stage"] == "pretrain" and cfg["n_layer"] == 2 and cfg["max_steps"] == 80


def test_learned_the_corpus(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = torch.tensor([tok("question: what is 3 plus 4? answer: 7")["input_ids"]])
    with torch.no_grad():
        loss_real = model(ids, labels=ids).loss.item()
        shuffled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
        loss_shuffled = model(shuffled, labels=shuffled).loss.item()
    assert loss_real < loss_shuffled - 1.0


def small_config(tokenizer, data, out, **kw):
    base = dict(
        tokenizer=str(tokenizer),
        data=[str(d) for d in data],
        out=str(out),
        n_layer=1,
        n_head=2,
        n_embd=16,
        context=32,
        batch_size=8,
        lr=3e-3,
        max_steps=8,
        warmup_steps=2,
        device="cpu",
        seed=3,
    )
    return PretrainConfig(**{**base, **kw})


def test_same_config_and_seed_give_identical_metrics(tmp_path, tiny_tokenizer_dir, tiny_corpus_file):
    a = train_pretrain(small_config(tiny_tokenizer_dir, [tiny_corpus_file], tmp_path / "a"))
    b = train_pretrain(small_config(tiny_tokenizer_dir, [tiny_corpus_file], tmp_path / "b"))
    c = train_pretrain(small_config(tiny_tokenizer_dir, [tiny_corpus_file], tmp_path / "c", seed=4))
    assert run_metrics(a) == run_metrics(b)
    assert run_metrics(a) != run_metrics(c)


def test_jsonl_text_data_and_bad_line(tmp_path, tiny_tokenizer_dir):
    good = tmp_path / "docs.jsonl"
    good.write_text("".join(json.dumps({"text": f"the cat sat {i} times."}) + "\n" for i in range(50)))
    out = train_pretrain(small_config(tiny_tokenizer_dir, [good], tmp_path / "m", max_steps=2))
    assert len(read_metrics(out)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: \"text\" must be a string"):
        train_pretrain(small_config(tiny_tokenizer_dir, [bad], tmp_path / "m2"))
    assert not (tmp_path / "m2").exists()


def test_epochs_without_max_steps(tmp_path, tiny_tokenizer_dir, tiny_corpus_file):
    out = train_pretrain(
        small_config(tiny_tokenizer_dir, [tiny_corpus_file], tmp_path / "e", max_steps=0, epochs=2, batch_size=64)
    )
    metrics = read_metrics(out)
    assert metrics[-1]["epoch"] == pytest.approx(2.0)
    assert metrics[-1]["step"] == metrics[-1]["total_steps"] == len(metrics)
