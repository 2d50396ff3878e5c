import json
import math
import random

import pytest
import torch

from tests.factories import build_tiny_lm, run_metrics, synthetic_pair, write_jsonl
from trainer.config import load_config
from trainer.dpo import DPOConfig, dpo_loss, sequence_logps, train_dpo
from trainer.masks import pad_sequences


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo")
    rng = random.Random(11)
    return {"lm": build_tiny_lm(d / "lm"), "data": write_jsonl(d / "p.jsonl", [synthetic_pair(rng) for _ in range(96)])}


def _run(tmp_path, assets, name, **kw):
    cfg = load_config(
        DPOConfig,
        overrides={
            "policy": str(assets["lm"]),
            "data": str(assets["data"]),
            "out": str(tmp_path / name),
            "device": "cpu",
            "lr": 3e-3,
            "batch_size": 16,
            **kw,
        },
    )
    out = train_dpo(cfg)
    return out, run_metrics(out)


def test_max_steps_replaces_epochs(tmp_path, assets):
    _, lines = _run(tmp_path, assets, "long", epochs=1, max_steps=8)  # 96 pairs, 16 a step: one epoch is 6 steps
    steps = [line["step"] for line in lines if "loss" in line]
    assert steps == list(range(1, 9)) and math.isclose(lines[-1]["epoch"], 8 / 6)


def test_dpo_loss_value():
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.1)
    assert math.isclose(float(loss), math.log1p(math.exp(-0.1)), abs_tol=1e-6)
    same = dpo_loss(torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-3.0]), torch.tensor([-4.0]), 0.1)
    assert math.isclose(float(same), math.log(2), abs_tol=1e-6)


def test_sequence_logps_sum_completion_tokens(assets):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(assets["lm"]).eval()
    seqs, plens = [[5, 6, 7, 8], [5, 9]], [2, 1]
    ids, mask = pad_sequences(seqs, pad_token_id=1)
    with torch.no_grad():
        got = sequence_logps(model, ids, mask, torch.tensor(plens))
        lp0 = torch.log_softmax(model(torch.tensor([[5, 6, 7, 8]])).logits[0], -1)
    want = lp0[1, 7] + lp0[2, 8]  # tokens 7 and 8, predicted at positions 1 and 2
    assert math.isclose(float(got[0]), float(want), abs_tol=1e-4)


def test_dpo_trains_and_starts_at_log2(tmp_path, assets):
    from transformers import AutoModelForCausalLM

    out, lines = _run(tmp_path, assets, "pol", epochs=3)
    assert math.isclose(lines[0]["loss"], math.log(2), abs_tol=1e-4)  # policy == reference at step 1
    assert lines[-1]["loss"] < 0.6 and lines[-1]["rewards/accuracies"] >= 0.8
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "lr"):
        assert k in lines[0]
    AutoModelForCausalLM.from_pretrained(out)
    assert json.loads((out / "trainer_config.json").read_text())["beta"] == 0.1


def test_dpo_same_seed_and_microbatch_invariance(tmp_path, assets):
    _, a = _run(tmp_path, assets, "a", max_steps=3)
    _, b = _run(tmp_path, assets, "b", max_steps=3)
    _, c = _run(tmp_path, assets, "c", max_steps=3, micro_batch_size=5)
    assert a == b
    for x, y in zip(a, c):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-4)
        assert math.isclose(x["grad_norm"], y["grad_norm"], rel_tol=1e-3)


def test_precomputed_reference_logprobs_give_the_same_losses(tmp_path, assets):
    # the reference scored once up front (then freed) or batch by batch: the same curve within float rounding
    _, live = _run(tmp_path, assets, "live", max_steps=4, micro_batch_size=8)
    _, cached = _run(tmp_path, assets, "cached", max_steps=4, micro_batch_size=8, precompute_ref_logprobs=True)
    for x, y in zip(live, cached, strict=True):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-5, abs_tol=1e-6), (x, y)
        assert math.isclose(x["rewards/margins"], y["rewards/margins"], rel_tol=1e-4, abs_tol=1e-6)
    _, checkpointed = _run(tmp_path, assets, "gc", max_steps=4, micro_batch_size=8, gradient_checkpointing=True)
    for x, y in zip(live, checkpointed, strict=True):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-4), (x, y)
