"""LoRA through peft on every training stage: only the adapter (and a reward model's head) trains, the reference is
the policy's weights with the adapter off, outputs are adapter directories peft loads, and every stage takes them."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import NEUTRAL, build_tiny_lm, synthetic_pair, write_jsonl
from trainer.adapters import (
    AdapterSwitched,
    adapter_base,
    default_target_modules,
    is_adapter_dir,
    reference_model,
    trainable_model,
)
from trainer.config import UsageError, load_config
from trainer.dpo import DPOConfig, train_dpo
from trainer.ppo import PPOConfig, train_ppo
from trainer.reward_model import RewardConfig, train_reward
from trainer.reward_scoring import load_reward_model
from trainer.runtime import load_causal_lm, load_tokenizer
from trainer.sft import SftConfig, train_sft

LORA = {"lora_r": 4, "lora_alpha": 8.0, "device": "cpu", "seed": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    rng = random.Random(5)
    pairs = [synthetic_pair(rng) for _ in range(32)]
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    prompts = [
        {"prompt_id": f"p{i}", "prompt": " " + " ".join(rng.choice(NEUTRAL) for _ in range(3))} for i in range(8)
    ]
    return {
        "dir": d,
        "lm": build_tiny_lm(d / "lm", dropout=0.0),
        "pref": write_jsonl(d / "pref.jsonl", pairs),
        "sft": write_jsonl(d / "sft.jsonl", sft_rows),
        "prompts": write_jsonl(d / "prompts.jsonl", prompts),
    }


@pytest.fixture(scope="module")
def sft_adapter(world):
    cfg = load_config(
        SftConfig,
        overrides={
            "model": str(world["lm"]),
            "data": str(world["sft"]),
            "out": str(world["dir"] / "sft"),
            "lr": 1e-2,
            "batch_size": 8,
            "max_steps": 4,
            **LORA,
        },
    )
    return train_sft(cfg)


@pytest.fixture(scope="module")
def rm_adapter(world):
    cfg = load_config(
        RewardConfig,
        overrides={
            "model": str(world["lm"]),
            "data": str(world["pref"]),
            "out": str(world["dir"] / "rm"),
            "lr": 1e-2,
            "batch_size": 8,
            "max_steps": 4,
            **LORA,
        },
    )
    return train_reward(cfg)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _adapter_keys(out):
    return set(load_file(str(out / "adapter_model.safetensors")))


def test_default_targets_are_the_block_projections(world):
    from transformers import LlamaConfig, LlamaForCausalLM

    assert default_target_modules(load_causal_lm(world["lm"])) == ["c_attn", "c_fc", "c_proj"]
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    want = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert default_target_modules(llama) == want  # never lm_head or embed_tokens


def test_sft_trains_only_the_adapter_and_peft_loads_it_with_the_same_logits_merged(world, sft_adapter):
    from peft import AutoPeftModelForCausalLM

    assert is_adapter_dir(sft_adapter) and not (sft_adapter / "model.safetensors").exists()
    assert adapter_base(sft_adapter) == world["lm"].resolve()
    keys = _adapter_keys(sft_adapter)
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert any(
        load_file(str(sft_adapter / "adapter_model.safetensors"))[k].abs().sum() > 0 for k in keys if ".lora_B." in k
    )  # B starts at 0: a trained adapter moved it
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(sft_adapter)).eval()  # offline, the base by path
    base = load_causal_lm(world["lm"])
    adapted = _logits(peft_model, ids)
    assert not torch.allclose(adapted, _logits(base, ids))
    merged = load_causal_lm(sft_adapter)  # the shared loader: base + adapter merged, a plain transformers model
    assert type(merged).__name__ == "GPT2LMHeadModel"
    torch.testing.assert_close(_logits(merged, ids), adapted, atol=1e-5, rtol=1e-5)


def test_reward_adapter_trains_the_head_in_full_and_scores_as_peft_loads_it(world, rm_adapter):
    from peft import AutoPeftModelForSequenceClassification

    keys = _adapter_keys(rm_adapter)
    assert any(k.endswith("score.weight") for k in keys)  # the head, whole
    assert all(".lora_" in k or "score" in k or "ln_f" in k for k in keys)
    tok = load_tokenizer(rm_adapter)
    ids = torch.tensor([tok(" na nb ga gb")["input_ids"]])
    ours = load_reward_model(rm_adapter, tok)
    theirs = AutoPeftModelForSequenceClassification.from_pretrained(str(rm_adapter), num_labels=1).eval()
    fresh = load_reward_model(world["lm"], tok, new_head_seed=1)  # the head it started from
    with torch.no_grad():
        assert not torch.equal(ours.score.weight, fresh.score.weight)
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_reference_is_the_policy_with_its_adapter_off_and_no_second_copy(world, sft_adapter):
    tok = load_tokenizer(world["lm"])
    load = lambda p: load_causal_lm(p, tokenizer=tok)  # noqa: E731
    cfg = load_config(DPOConfig, overrides={"policy": str(world["lm"]), "data": "x", "out": "y", **LORA})
    policy, peft_model = trainable_model(world["lm"], cfg, load, task="CAUSAL_LM")
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.normal_()  # an adapter that changes the outputs
    ref = reference_model(cfg, str(world["lm"]), peft_model, load)
    assert isinstance(ref, AdapterSwitched) and list(ref.parameters()) == []
    ids = torch.tensor([[5, 6, 7, 8]])
    base = load_causal_lm(world["lm"])
    torch.testing.assert_close(_logits(ref, ids), _logits(base, ids))
    assert not torch.allclose(_logits(policy, ids), _logits(base, ids))  # the adapter is back on after
    assert all(p.requires_grad == (".lora_" in n) for n, p in policy.named_parameters())

    # from an adapter policy: the reference is that adapter as it started, a frozen second adapter on the same base
    cfg = load_config(DPOConfig, overrides={"policy": str(sft_adapter), "data": "x", "out": "y", **LORA})
    policy, peft_model = trainable_model(sft_adapter, cfg, load, task="CAUSAL_LM")
    ref = reference_model(cfg, str(sft_adapter), peft_model, load)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B.default" in name:
                p.add_(1.0)
    torch.testing.assert_close(_logits(ref, ids), _logits(load_causal_lm(sft_adapter), ids), atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad == (".lora_" in n and ".default." in n) for n, p in policy.named_parameters())


def test_dpo_and_ppo_write_adapters_that_downstream_stages_load(world, sft_adapter, rm_adapter):
    dpo = train_dpo(
        load_config(
            DPOConfig,
            overrides={
                "policy": str(sft_adapter),
                "data": str(world["pref"]),
                "out": str(world["dir"] / "dpo"),
                "batch_size": 8,
                "max_steps": 2,
                "lr": 1e-2,
                **LORA,
            },
        )
    )
    # it kept training the SFT adapter: same base on disk, different weights
    assert adapter_base(dpo) == world["lm"].resolve()
    assert _adapter_keys(dpo) == _adapter_keys(sft_adapter)
    before, after = (load_file(str(d / "adapter_model.safetensors")) for d in (sft_adapter, dpo))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    lines = [json.loads(x) for x in (dpo / "metrics.jsonl").read_text().splitlines()]
    assert abs(lines[0]["rewards/chosen"]) < 1e-4  # first step: the reference is the starting policy exactly

    ppo = train_ppo(
        load_config(
            PPOConfig,
            overrides={
                "policy": str(dpo),
                "reward_model": str(rm_adapter),
                "prompts": str(world["prompts"]),
                "out": str(world["dir"] / "ppo"),
                "ref": str(world["lm"]),
                "batch_size": 4,
                "max_new_tokens": 4,
                "max_steps": 2,
                "lr": 1e-3,
                **LORA,
            },
        )
    )
    assert is_adapter_dir(ppo) and adapter_base(ppo) == world["lm"].resolve()
    assert type(load_causal_lm(ppo)).__name__ == "GPT2LMHeadModel"


def test_bad_lora_flags_are_usage_errors(world, tmp_path):
    cfg = load_config(
        SftConfig,
        overrides={
            "model": str(world["lm"]),
            "data": str(world["sft"]),
            "out": str(tmp_path / "o"),
            **LORA,
            "lora_target_modules": ["q_proj"],
        },
    )
    with pytest.raises(UsageError, match="no module named q_proj"):
        train_sft(cfg)
    assert not (tmp_path / "o").exists()


def test_generation_from_an_adapter_is_generation_from_the_merged_model(world, sft_adapter, tmp_path):
    from trainer.context_fit import PromptCounter
    from trainer.generate import GenerateConfig, run_generate

    merged = tmp_path / "merged"
    load_causal_lm(sft_adapter).save_pretrained(merged)
    load_tokenizer(sft_adapter).save_pretrained(merged)
    texts = []
    for name, model in (("a", sft_adapter), ("m", merged)):
        cfg = GenerateConfig(
            model=str(model),
            prompts=str(world["prompts"]),
            out=str(tmp_path / f"{name}.jsonl"),
            num_samples=2,
            max_new_tokens=6,
            device="cpu",
            seed=3,
        )
        texts.append([json.loads(x)["text"] for x in run_generate(cfg).read_text().splitlines()])
    assert texts[0] == texts[1] and len(texts[0]) == 16
    # the web process counts prompt tokens from the files alone: an adapter's context is its base's
    assert PromptCounter.from_model_dir(sft_adapter).context == PromptCounter.from_model_dir(world["lm"]).context


def test_gradient_checkpointing_under_lora_gives_the_same_losses(world, tmp_path):
    """Checkpointing recomputes the frozen base's layers in the backward; only the adapter has gradients, and the
    numbers stay those of a run without it."""

    def run(name: str, checkpointing: bool) -> list[float]:
        cfg = load_config(
            SftConfig,
            overrides={
                "model": str(world["lm"]),
                "data": str(world["sft"]),
                "out": str(tmp_path / name),
                "lr": 1e-2,
                "batch_size": 8,
                "max_steps": 3,
                "gradient_checkpointing": checkpointing,
                **LORA,
            },
        )
        out = train_sft(cfg)
        return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    plain, checkpointed = run("plain", False), run("checkpointed", True)
    assert len(plain) == 3 and checkpointed == pytest.approx(plain, rel=1e-4)
    # and it is on: the forward of the adapted model keeps less for the backward
    from trainer.adapters import trainable_model
    from trainer.runtime import checkpoint_activations_, load_causal_lm, load_tokenizer

    tok = load_tokenizer(world["lm"])
    ids = torch.randint(0, len(tok), (4, 48))
    saved = {}
    for on in (False, True):
        cfg = load_config(SftConfig, overrides={"model": "m", "data": "d", "out": "o", **LORA})
        model, _ = trainable_model(world["lm"], cfg, lambda p: load_causal_lm(p, tokenizer=tok), task="CAUSAL_LM")
        checkpoint_activations_(model, on)
        sizes: dict[int, int] = {}

        def pack(t, sizes=sizes):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, use_cache=False).logits.sum()
        saved[on] = sum(sizes.values())
    assert saved[True] < 0.7 * saved[False], saved


def test_an_adapter_of_a_base_given_by_a_relative_path_names_it_absolutely(world, tmp_path, monkeypatch):
    monkeypatch.chdir(world["lm"].parent)
    cfg = {"model": f"./{world['lm'].name}", "data": str(world["sft"]), "out": str(tmp_path / "a"), "max_steps": 1}
    out = train_sft(load_config(SftConfig, overrides={**cfg, **LORA}))
    monkeypatch.chdir(tmp_path)  # read from elsewhere: the base is still found
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(world["lm"])
    assert adapter_base(out) == world["lm"]
    assert load_causal_lm(out) is not None
