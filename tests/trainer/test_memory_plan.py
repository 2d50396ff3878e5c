"""trainer.memory_plan: its byte counts against tensors measured on CPU after one real step of a tiny GPT-2, and the
fit / fits-with verdicts of `python -m trainer plan`.

Tolerances: weights, gradients and AdamW state are counted exactly (within 1%: the tokenizer's added PAD row is not in
the model's config); activations within 25% of the bytes autograd saves in the forward (the estimate is a formula in
d, I, V and the batch, not a trace)."""

import json
from dataclasses import replace

import pytest
import torch

from tests.factories import build_tiny_lm
from trainer.config import UsageError
from trainer.memory_plan import (
    GIB,
    PlanConfig,
    Settings,
    activations,
    architecture_from_dir,
    architecture_from_params,
    fits,
    parse_param_count,
    run_plan,
    stage_need,
)
from trainer.runtime import adamw, checkpoint_activations_, load_causal_lm, load_tokenizer, use_fast_kernels_


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("plan") / "lm", n_layer=2, n_embd=64)


def _storage_bytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parameter_state_bytes_match_one_measured_sft_step(lm, precision):
    tok = load_tokenizer(lm)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = load_causal_lm(lm, tokenizer=tok, train=True, dtype=dtype)
    optimizer = adamw(model, lr=1e-3, weight_decay=0.0)
    ids = torch.randint(0, len(tok), (2, 16))
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    optimizer.step()
    params = list(model.parameters())
    moments = [v for state in optimizer.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")]
    # AdamW's state follows the parameter's dtype: bf16 weights have bf16 moments (what --precision bf16 says)
    assert {m.dtype for m in moments} == {dtype}

    need = stage_need(architecture_from_dir(lm), "sft", Settings(precision=precision))
    assert need.weights == pytest.approx(_storage_bytes(params), rel=0.01)
    assert need.gradients == pytest.approx(_storage_bytes(p.grad for p in params), rel=0.01)
    assert need.optimizer == pytest.approx(_storage_bytes(moments), rel=0.01)


def _saved_bytes(model, ids) -> int:
    """Bytes autograd keeps for the backward of one forward (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids, use_cache=False).logits
        torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).sum()  # as trainer.logprobs scores
    return sum(seen.values())


def test_activation_estimate_against_saved_tensors_with_and_without_checkpointing(lm):
    tok = load_tokenizer(lm)
    arch = architecture_from_dir(lm)
    b, T = 4, 96
    ids = torch.randint(0, len(tok), (b, T))
    measured = {}
    for gc in (False, True):
        model = use_fast_kernels_(load_causal_lm(lm, tokenizer=tok), torch.device("cpu"), "fp32")
        checkpoint_activations_(model, gc)
        measured[gc] = _saved_bytes(model, ids)
    full = activations(arch, Settings(precision="fp32", max_length=T), sequences=b, logits=True)
    assert full == pytest.approx(measured[False], rel=0.25)
    # checkpointed: the forward keeps far less; the estimate adds the one layer recomputed in the backward
    checkpointed = activations(
        arch, Settings(precision="fp32", max_length=T, gradient_checkpointing=True), sequences=b, logits=True
    )
    assert measured[True] < 0.5 * measured[False]
    assert measured[True] <= checkpointed < full


def test_lora_counts_the_projections_of_the_decoder_layers(lm):
    arch = architecture_from_dir(lm)
    # GPT-2's c_attn (d→3d), attn c_proj (d→d), c_fc (d→4d), mlp c_proj (4d→d): r·16d per layer
    assert arch.lora_per_rank == arch.layers * 16 * arch.hidden
    full, lora = Settings(precision="bf16"), Settings(precision="bf16", lora_r=8)
    assert stage_need(arch, "sft", lora).optimizer == 2 * 4 * 8 * arch.lora_per_rank  # fp32 adapters, two moments
    for stage in ("sft", "dpo", "ppo"):
        assert stage_need(arch, stage, lora).gradients < stage_need(arch, stage, full).gradients / 3
    # with LoRA the reference is the base with the adapter off: DPO holds no copy, PPO only the reward model
    assert stage_need(arch, "dpo", lora).copies == 0 < stage_need(arch, "dpo", full).copies
    assert stage_need(arch, "ppo", lora).copies == arch.reward_params * 2
    assert stage_need(arch, "dpo", Settings(precompute_ref_logprobs=True)).copies == 0


def test_plan_names_the_settings_that_make_a_too_large_model_fit():
    report = run_plan(PlanConfig(params="1.5B", gpu_memory=24, json=True))
    ppo = report["stages"]["ppo"]
    # fp32 AdamW: 16 bytes a parameter, about 24 GB for a 1.5B policy before activations (issue #34)
    sft = report["stages"]["sft"]
    assert sft["weights"] + sft["gradients"] + sft["optimizer"] == 16 * 1_500_000_000
    assert report["fits"] is False and ppo["fits"] is False and ppo["total"] > 24 * GIB
    assert "--lora-r 16" in report["round_fits_with"]
    # the suggested flags do make every stage fit
    arch = architecture_from_params(1_500_000_000)
    flags = report["round_fits_with"].split()
    s = Settings(
        lora_r=16 if "--lora-r" in flags else 0,
        gradient_checkpointing="--gradient-checkpointing" in flags,
        precision="bf16" if "bf16" in flags else "auto",
    )
    assert all(fits(stage_need(arch, stage, s), 24) for stage in report["stages"])
    small = run_plan(PlanConfig(params="100M", gpu_memory=80, json=True))
    assert small["fits"] is True and small["round_fits_with"] is None


def test_plan_command_prints_every_stage_and_refuses_ambiguous_input(lm):
    from typer.testing import CliRunner

    from trainer.cli import app, load_stages

    load_stages()
    run = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke
    result = run(app, ["plan", "--model", str(lm), "--gpu-memory", "2", "--gradient-checkpointing", "--lora-r", "4"])
    assert result.exit_code == 0, result.output
    for stage in ("sft", "reward", "ppo", "dpo", "best-of-n"):
        assert f"\n{stage} " in result.output
    assert "every stage fits on 2 GB" in result.output and "LoRA r=4, gradient checkpointing" in result.output
    assert "batch 8 × 128 tokens" in result.output  # --max-length 512 bounded by the model's 128-token context
    result = run(app, ["plan", "--model", str(lm), "--params", "1000"])
    assert result.exit_code == 2 and "one of --model DIR or --params N" in result.output
    result = run(app, ["plan", "--params", "7000000000", "--gpus", "8", "--gpu-memory", "80", "--json"])
    assert json.loads(result.output)["settings"]["gpus"] == 8


def test_an_adapter_directory_is_planned_as_its_base_model(lm, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(lm), "r": 8}))
    assert architecture_from_dir(tmp_path) == architecture_from_dir(lm)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1500000000", 1_500_000_000),
        ("1_500_000_000", 1_500_000_000),
        ("1.5B", 1_500_000_000),
        ("8b", 8_000_000_000),
        ("500M", 500_000_000),
        ("1.1B", 1_100_000_000),  # exact: no float rounding
        ("0.5b", 500_000_000),
        ("70k", 70_000),
        (" 7B ", 7_000_000_000),
        (125_000_000, 125_000_000),  # a Python caller's int
    ],
)
def test_params_takes_the_counts_people_write(text, count):
    assert parse_param_count(text) == count


@pytest.mark.parametrize("text", ["1.5", "1.5 B", "1.5GB", "B", "1e9", "1__000", "_1000", "1,000", "-5", "seven", ""])
def test_params_refuses_anything_else(text):
    with pytest.raises(UsageError, match="--params expects a parameter count such as"):
        parse_param_count(text)


def test_plan_command_takes_a_written_count_and_exits_2_on_a_bad_one():
    from typer.testing import CliRunner

    from trainer.cli import app, load_stages

    load_stages()
    run = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke
    result = run(app, ["plan", "--params", "1.5B", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["architecture"]["params"] == 1_500_000_000
    result = run(app, ["plan", "--params", "1.5GB"])
    assert result.exit_code == 2
    assert "error: --params expects a parameter count such as 1500000000, 1_500_000_000, 1.5B or 500M, got '1.5GB'" in (
        result.output
    )
    assert run(app, ["plan", "--params", "0"]).exit_code == 2  # a count, but no model


def test_stages_plans_only_the_steps_of_one_kind_of_round():
    every = run_plan(PlanConfig(params="3B", gpu_memory=24, json=True))
    assert every["fits"] is False and every["round_fits_with"] is None  # PPO fits with nothing tried
    rs = run_plan(PlanConfig(params="3B", gpu_memory=24, stages=["sft", "reward", "best-of-n"], json=True))
    assert list(rs["stages"]) == ["sft", "reward", "best-of-n"]
    assert rs["stages"]["reward"] == every["stages"]["reward"]
    flags = rs["round_fits_with"].split()
    s = Settings(lora_r=16 if "--lora-r" in flags else 0, gradient_checkpointing="--gradient-checkpointing" in flags)
    s = replace(s, precision="bf16" if "bf16" in flags else "auto")
    arch = architecture_from_params(3_000_000_000)
    assert all(fits(stage_need(arch, stage, s), 24) for stage in rs["stages"])
    assert not fits(stage_need(arch, "ppo", s), 24)
    with pytest.raises(UsageError, match="--stages takes sft reward ppo dpo best-of-n, got rs"):
        run_plan(PlanConfig(params="3B", stages=["rs"]))
