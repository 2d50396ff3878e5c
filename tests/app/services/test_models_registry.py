"""Model registry: register checks that the directory loads (in a subprocess), list, promote, rollback, CLI."""

import json
import sys

import pytest
from typer.testing import CliRunner

from app.services.models_registry import (
    ModelError,
    check_loads,
    current_model,
    list_models,
    promote,
    register_model,
    rollback,
)
from tests.factories import build_arithmetic_model, build_arithmetic_tokenizer


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = build_arithmetic_tokenizer(root)
    return {
        "policy": build_arithmetic_model(root, tok, kind="policy", name="policy"),
        "reward": build_arithmetic_model(root, tok, kind="reward", name="reward"),
        "tokenizer": tok,
    }


def test_check_loads_accepts_the_right_kind_and_refuses_others(tiny_dirs, tmp_path):
    check_loads(path=tiny_dirs["policy"], kind="policy")
    check_loads(path=tiny_dirs["reward"], kind="reward")
    with pytest.raises(ModelError, match="no config.json"):
        check_loads(path=tiny_dirs["tokenizer"], kind="policy")
    with pytest.raises(ModelError, match="not a directory"):
        check_loads(path=tmp_path / "missing", kind="policy")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="does not load as a policy model"):
        check_loads(path=broken, kind="policy")


def test_a_directory_whose_head_does_not_match_the_kind_is_refused(tiny_dirs, settings, db, client, api):
    with pytest.raises(ModelError, match=r"is a policy model \(GPT2LMHeadModel\), not a reward model: .*score head"):
        check_loads(path=tiny_dirs["policy"], kind="reward")
    with pytest.raises(ModelError, match=r"is a reward model \(GPT2ForSequenceClassification\), not a policy model"):
        check_loads(path=tiny_dirs["reward"], kind="policy")

    from app.cli import app as cli

    args = ["models", "register", "--path", str(tiny_dirs["policy"]), "--name", "x", "--kind", "reward"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "not a reward model" in refused.stderr
    _admin, headers = api("admin")
    body = {"path": str(tiny_dirs["policy"]), "name": "x", "kind": "reward"}
    answer = client.post("/api/v1/models", json=body, headers=headers)
    assert 400 <= answer.status_code < 500 and "not a reward model" in answer.text
    assert list_models(db) == []


def test_web_process_does_not_import_torch_for_the_registry():
    import subprocess

    code = "import sys, app.services.models_registry; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_register_first_is_current_then_promote_and_rollback(db, tiny_dirs):
    a = register_model(db, path=tiny_dirs["policy"], name="base", kind="policy", check=False)
    b = register_model(
        db, path=tiny_dirs["policy"], name="sft-1", kind="policy", stage="sft", parent_id=a.id, check=False
    )
    r = register_model(db, path=tiny_dirs["reward"], name="rm-1", kind="reward", check=False)
    db.commit()
    assert a.is_current and not b.is_current and r.is_current
    promote(db, model_id=b.id)
    db.commit()
    assert current_model(db, kind="policy").id == b.id and current_model(db, kind="reward").id == r.id
    assert rollback(db, kind="policy").id == a.id
    db.commit()
    assert [m.is_current for m in list_models(db, kind="policy")] == [True, False]
    with pytest.raises(ModelError, match="no earlier version"):
        rollback(db, kind="policy")
    with pytest.raises(ModelError, match="stage"):
        register_model(db, path=tiny_dirs["policy"], name="x", kind="policy", stage="final", check=False)
    with pytest.raises(ModelError, match="no model 999"):
        promote(db, model_id=999)


def test_cli_register_list_promote_rollback(settings, db, tiny_dirs):
    from app.cli import app as cli

    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "models",
            "register",
            "--path",
            str(tiny_dirs["policy"]),
            "--name",
            "mine",
            "--kind",
            "policy",
            "--stage",
            "sft",
        ],
    )
    assert out.exit_code == 0, out.output
    first = json.loads(out.stdout.strip().splitlines()[-1])
    assert first["current"] and first["stage"] == "sft"
    # A directory that is not a model (a tokenizer only) is refused with the reason.
    bad = runner.invoke(
        cli, ["models", "register", "--path", str(tiny_dirs["tokenizer"]), "--name", "x", "--kind", "policy"]
    )
    assert bad.exit_code == 2 and "config.json" in bad.stderr
    bad = runner.invoke(
        cli, ["models", "register", "--path", str(tiny_dirs["policy"]), "--name", "x", "--kind", "critic"]
    )
    assert bad.exit_code == 2 and "--kind" in bad.stderr
    # (the load check is the slow part: one checked registration through the CLI is enough here)
    second = {
        "id": register_model(db, path=tiny_dirs["policy"], name="second", kind="policy", stage="rlhf", check=False).id
    }
    db.commit()
    assert runner.invoke(cli, ["models", "promote", str(second["id"])]).exit_code == 0
    listed = json.loads(runner.invoke(cli, ["models", "list", "--json"]).stdout)
    assert [(m["name"], m["current"]) for m in listed] == [("mine", False), ("second", True)]
    assert runner.invoke(cli, ["models", "rollback"]).exit_code == 0
    listed = json.loads(runner.invoke(cli, ["models", "list", "--json"]).stdout)
    assert [(m["name"], m["current"]) for m in listed] == [("mine", True), ("second", False)]
    assert runner.invoke(cli, ["models", "promote", "77"]).exit_code == 2


def _save_adapter(tiny_dirs, out, kind: str):
    """A LoRA adapter on the tiny model of `kind`, its B matrices random so that it changes the outputs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from trainer.adapters import add_lora
    from trainer.config import load_config
    from trainer.sft import SftConfig

    torch.manual_seed(0)
    cfg = load_config(SftConfig, overrides={"model": "m", "data": "d", "out": "o", "lora_r": 2})
    if kind == "policy":
        model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_dirs["policy"]), cfg, task="CAUSAL_LM")
    else:
        base = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["policy"], num_labels=1)
        model = add_lora(base, cfg, task="SEQ_CLS", modules_to_save=["score"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_()
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tiny_dirs["tokenizer"]).save_pretrained(str(out))
    return out


def test_adapters_register_with_their_base_and_merge_into_a_whole_model(settings, db, tiny_dirs, tmp_path):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from app.cli import app as cli

    policy_adapter = _save_adapter(tiny_dirs, tmp_path / "sft-lora", "policy")
    reward_adapter = _save_adapter(tiny_dirs, tmp_path / "rm-lora", "reward")
    base = register_model(db, path=tiny_dirs["policy"], name="base", kind="policy", check=False)
    # the load check (a subprocess with peft) for the reward adapter; the policy adapter loads in the merge below
    adapter = register_model(
        db, path=policy_adapter, name="sft-lora", kind="policy", stage="sft", parent_id=base.id, check=False
    )
    rm = register_model(db, path=reward_adapter, name="rm-lora", kind="reward")
    assert adapter.base_model_id == base.id and rm.base_model_id == base.id
    with pytest.raises(ModelError, match="is a reward adapter, not a policy model"):
        check_loads(path=reward_adapter, kind="policy")
    db.commit()

    runner = CliRunner()
    merged_out = tmp_path / "merged"
    result = runner.invoke(cli, ["models", "merge", str(adapter.id), "--out", str(merged_out)])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert line["parent_id"] == adapter.id and line["kind"] == "policy" and line["base_model_id"] is None
    assert (merged_out / "config.json").is_file() and not (merged_out / "adapter_config.json").exists()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        want = AutoPeftModelForCausalLM.from_pretrained(str(policy_adapter)).eval()(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(merged_out)).eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    again = runner.invoke(cli, ["models", "merge", str(adapter.id), "--out", str(merged_out)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    whole = runner.invoke(cli, ["models", "merge", str(base.id)])
    assert whole.exit_code == 2 and "not a LoRA adapter" in whole.stderr
