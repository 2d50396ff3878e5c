"""Every stage on tiny random-weight models of four real architectures (tests/trainer/architectures.py), on chat
data: sft → reward → ppo, dpo, generate and best-of-n. Each uses the model's own chat template, BOS and EOS (one BOS,
never two), stops at the model's EOS, shows no special token in a text, keeps a tokenizer without PAD at its size,
and writes the architecture it read (Qwen2ForCausalLM in, Qwen2ForCausalLM / Qwen2ForSequenceClassification out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationConfig,
)

from tests.trainer.architectures import (
    ARCHITECTURES,
    GOOD,
    QUESTIONS,
    assistant,
    build_llama3_first_release,
    build_model,
    user,
    write_conversations,
)
from trainer.best_of_n import BestOfNConfig, run_best_of_n
from trainer.data import read_jsonl
from trainer.dpo import DPOConfig, train_dpo
from trainer.generate import GenerateConfig, run_generate
from trainer.ppo import PPOConfig, train_ppo
from trainer.preference_data import encode_response, load_preferences
from trainer.prompt_data import encode_prompt
from trainer.reward_model import RewardConfig, train_reward
from trainer.runtime import load_tokenizer
from trainer.sft import IGNORE, SftConfig, encode_record, train_sft

CPU = dict(device="cpu", seed=0)


def _chat_tuned(base: Path, data: dict[str, Path], out: Path) -> Path:
    """SFT long enough, at a high rate, that the tiny model's answers end in its EOS."""
    return train_sft(
        SftConfig(model=str(base), data=str(data["sft"]), out=str(out), max_steps=40, batch_size=6, lr=1e-2, **CPU)
    )


def _generated(model: Path, data: dict[str, Path], out: Path) -> Path:
    config = GenerateConfig(
        model=str(model), prompts=str(data["prompts"]), out=str(out), num_samples=2, max_new_tokens=12, **CPU
    )
    return run_generate(config)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def trained(request, tmp_path_factory):
    """One architecture through sft and reward."""
    arch = ARCHITECTURES[request.param]
    root = tmp_path_factory.mktemp(arch.name)
    base = build_model(arch, root / "base")
    data = write_conversations(root / "data")
    sft = _chat_tuned(base, data, root / "sft")
    reward = train_reward(
        RewardConfig(
            model=str(sft), data=str(data["prefs"]), out=str(root / "rm"), max_steps=2, batch_size=4, lr=1e-3, **CPU
        )
    )
    return arch, base, sft, reward, data


def _architectures(path: Path) -> list[str]:
    return AutoConfig.from_pretrained(path).architectures


def _vocabulary(path: Path) -> int:
    return len(AutoTokenizer.from_pretrained(path))


def test_the_tokenizers_are_those_of_their_families(trained):
    """The builders mirror the real tokenizers, or the other tests would test nothing: a PAD only where the family has
    one, BOS added to plain text by Llama's and Mistral's tokenizers, and a template that writes BOS itself too."""
    arch, base, *_ = trained
    tok = AutoTokenizer.from_pretrained(base)
    assert (tok.pad_token, tok.eos_token, tok.bos_token) == (arch.pad, arch.eos, arch.bos)
    assert (tok("the cat")["input_ids"][0] == tok.bos_token_id) == arch.bos_added
    rendered = tok.apply_chat_template(user("hi"), tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(tok.bos_token or "\0") == arch.bos_added
    assert _architectures(base) == [arch.causal_lm]


def test_sft_and_reward_keep_the_architecture_and_the_vocabulary(trained):
    arch, base, sft, reward, _ = trained
    size = _vocabulary(base)
    assert _architectures(sft) == [arch.causal_lm] and _architectures(reward) == [arch.classifier]
    assert _vocabulary(sft) == _vocabulary(reward) == size  # a tokenizer without PAD pads with EOS: nothing added
    assert AutoModelForCausalLM.from_pretrained(sft).get_input_embeddings().weight.shape[0] == size
    rm = AutoModelForSequenceClassification.from_pretrained(reward)
    assert rm.get_input_embeddings().weight.shape[0] == size
    # HF's pooling reads the last non-PAD token: with PAD == EOS that is the token before the EOS, so no PAD is saved
    tok = AutoTokenizer.from_pretrained(base)
    assert rm.config.pad_token_id == (tok.pad_token_id if arch.pad else None)
    assert (reward / "README.md").is_file()


def test_every_encoding_has_one_bos_and_ends_at_the_eos(trained):
    """Prompts (generate, best-of-n, PPO), SFT examples, preference pairs (reward, DPO) and the rm: judge's text all
    carry the model's BOS exactly once, and a scored or learned answer ends at the EOS the policy stops at."""
    arch, base, sft, reward, data = trained
    tok = load_tokenizer(base)
    bos, eos = tok.bos_token_id, tok.eos_token_id

    def one_bos(ids: list[int]) -> bool:
        if not arch.bos_added:
            return arch.bos is None or ids[0] != bos or bos == eos  # GPT-NeoX: BOS is EOS, never added
        return ids[0] == bos and bos not in ids[1:]

    prompt_ids = encode_prompt(tok, {"messages": user(QUESTIONS[0])}, "p", 1)
    sft_ids, labels = encode_record(tok, {"messages": user(QUESTIONS[0]) + assistant(GOOD[0])}, "s", 1)
    pairs = load_preferences(data["prefs"], tok)
    assert one_bos(prompt_ids) and one_bos(sft_ids)
    assert sft_ids[: len(prompt_ids)] == prompt_ids  # the SFT example starts as a prompt to sample from does
    assert eos in [t for t in labels if t != IGNORE]  # the answer's EOS is learned
    for group in pairs.groups:
        for seq in group.sequences:
            assert one_bos(seq) and seq[-1] == eos
            assert tok.decode(seq[-2:-1]).strip(), "a scored answer ends at its EOS, not at a newline after it"
    # the rm: judge renders a chat prompt with the answer as reward training does, from the prompt the policy samples
    judged, n_prompt = encode_response(tok, user(QUESTIONS[0]), GOOD[0])
    assert (judged, n_prompt) == (pairs.groups[0].sequences[0], pairs.groups[0].prompt_lengths[0])
    assert judged[:n_prompt] == prompt_ids
    # a text prompt that carries the template's BOS (a chat prompt decoded with its special tokens) gets no second one
    text = tok.decode(prompt_ids, skip_special_tokens=False)
    assert one_bos(encode_response(tok, text, GOOD[0])[0])


def test_ppo_dpo_generate_and_best_of_n(trained, tmp_path):
    arch, base, sft, reward, data = trained
    ppo = train_ppo(
        PPOConfig(
            policy=str(sft),
            reward_model=str(reward),
            prompts=str(data["prompts"]),
            out=str(tmp_path / "ppo"),
            max_steps=1,
            batch_size=4,
            ppo_epochs=1,
            max_new_tokens=8,
            **CPU,
        )
    )
    dpo = train_dpo(
        DPOConfig(policy=str(sft), data=str(data["prefs"]), out=str(tmp_path / "dpo"), max_steps=1, batch_size=4, **CPU)
    )
    assert _architectures(ppo) == _architectures(dpo) == [arch.causal_lm]
    assert _vocabulary(ppo) == _vocabulary(dpo) == _vocabulary(base)

    out = _generated(sft, data, tmp_path / "g.jsonl")
    rows = [obj for _, obj in read_jsonl(out)]
    special = AutoTokenizer.from_pretrained(sft).all_special_tokens
    assert len(rows) == 8 and any(r["finish_reason"] == "eos" for r in rows)  # stops at the model's own EOS
    assert not [r["text"] for r in rows if any(t in r["text"] for t in special)]  # annotators never see one

    bon = run_best_of_n(
        BestOfNConfig(
            policy=str(sft),
            judge=f"rm:{reward}",
            prompts=str(data["prompts"]),
            out=str(tmp_path / "bon"),
            num_samples=2,
            max_new_tokens=12,
            **CPU,
        )
    )
    best = [obj for _, obj in read_jsonl(bon / "best.jsonl")]
    assert best and all(b["messages"][-1]["role"] == "assistant" for b in best)
    assert not [b for b in best if any(t in b["messages"][-1]["content"] for t in special)]
    # the picks are SFT data for the same model: they train
    again = train_sft(
        SftConfig(model=str(sft), data=str(bon / "best.jsonl"), out=str(tmp_path / "rs"), max_steps=1, **CPU)
    )
    assert _architectures(again) == [arch.causal_lm]


def test_a_chat_model_whose_tokenizer_names_another_eos_stops_at_the_end_of_its_turn(tmp_path):
    """Llama 3 Instruct as first published names <|end_of_text|> as EOS, but its answers end in <|eot_id|>, which its
    generation config stops at: that is the EOS every stage uses (learned, scored, stopped at), the vocabulary kept."""
    base = build_llama3_first_release(tmp_path / "base")
    raw = AutoTokenizer.from_pretrained(base)
    assert raw.eos_token == "<|end_of_text|>"
    tok = load_tokenizer(base)
    assert tok.eos_token == "<|eot_id|>" and len(tok) == len(raw)
    data = write_conversations(tmp_path / "data")
    sft = _chat_tuned(base, data, tmp_path / "sft")
    assert AutoTokenizer.from_pretrained(sft).eos_token == "<|eot_id|>"
    stops = GenerationConfig.from_pretrained(sft).eos_token_id  # both stop ids saved, as the model came
    assert sorted(stops) == sorted([raw.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id])
    out = _generated(sft, data, tmp_path / "g.jsonl")
    assert any(obj["finish_reason"] == "eos" for _, obj in read_jsonl(out))
