import json

import pytest
from transformers import AutoTokenizer

from trainer.config import UsageError
from trainer.data import DataError
from trainer.tokenizer import CHAT_TEMPLATE, TokenizerConfig, train_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def test_loads_with_autotokenizer_with_pad_distinct_from_eos(tok, tiny_tokenizer_dir):
    assert 259 < len(tok) <= 400  # 256 bytes + 3 specials + merges (a tiny corpus may not fill the vocab)
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    saved = json.loads((tiny_tokenizer_dir / "tokenizer_config.json").read_text())
    assert saved["chat_template"] == CHAT_TEMPLATE  # stored in tokenizer_config.json itself


def test_byte_level_roundtrip_of_any_text(tok):
    text = "the cat sat. Ünïcödé ✓ 漢字 \t tabs  and  spaces\nnew line"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_chat_template_roundtrip(tok):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is 2 plus 3?"},
        {"role": "assistant", "content": "5"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nbe brief<|endoftext|><|im_start|>user\nwhat is 2 plus 3?<|endoftext|>"
        "<|im_start|>assistant\n5<|endoftext|>"
    )
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.eos_token_id) == 3  # every turn ends in EOS: generation stops after the answer
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")
    mask = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)[
        "assistant_masks"
    ]
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "5<|endoftext|>"


def test_jsonl_input_and_bad_line(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text(
        '{"text": "hello world"}\n{"messages": [{"role": "user", "content": "hi"}]}\n'
        '{"prompt": "q", "completion": "a"}\n'
    )
    out = train_tokenizer(TokenizerConfig(input=[str(good)], vocab_size=300, out=str(tmp_path / "t")))
    assert (
        AutoTokenizer.from_pretrained(out).decode(AutoTokenizer.from_pretrained(out)("hello")["input_ids"]) == "hello"
    )
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{"other": 1}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2:"):
        train_tokenizer(TokenizerConfig(input=[str(bad)], vocab_size=300, out=str(tmp_path / "t2")))
    assert not (tmp_path / "t2").exists()


def test_too_small_vocab_is_a_usage_error(tmp_path, tiny_corpus_file):
    with pytest.raises(UsageError, match="--vocab-size"):
        train_tokenizer(TokenizerConfig(input=[str(tiny_corpus_file)], vocab_size=100, out=str(tmp_path / "t")))
