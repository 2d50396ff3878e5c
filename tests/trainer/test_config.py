import json

import pytest

from trainer.config import UsageError, config_to_dict, load_config
from trainer.outputs import save_trainer_config
from trainer.pretrain import PretrainConfig


def test_flags_override_config_file(tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(
        json.dumps({"tokenizer": "tok", "data": ["a.txt"], "out": "o", "lr": 0.5, "n_layer": 3, "batch_size": 4})
    )
    cfg = load_config(PretrainConfig, cfg_file, {"lr": 0.25, "seed": 7})
    assert cfg.lr == 0.25  # flag wins
    assert cfg.seed == 7
    assert cfg.n_layer == 3 and cfg.batch_size == 4  # from the file
    assert cfg.n_head == 4  # dataclass default


def test_saved_trainer_config_is_a_valid_config_file(tmp_path):
    cfg = load_config(PretrainConfig, None, {"tokenizer": "t", "data": ["d"], "out": "o", "context": 32})
    save_trainer_config(tmp_path, "pretrain", cfg)
    saved = json.loads((tmp_path / "trainer_config.json").read_text())
    assert saved["stage"] == "pretrain" and saved["context"] == 32
    again = load_config(PretrainConfig, tmp_path / "trainer_config.json", {})
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "file_values, overrides, message",
    [
        ({"tokenizer": "t", "data": ["d"], "out": "o", "bogus": 1}, {}, "unknown config field(s): bogus"),
        ({"tokenizer": "t", "data": ["d"]}, {}, "missing required option --out"),
        ({"tokenizer": "t", "data": ["d"], "out": "o", "n_layer": "two"}, {}, "--n-layer expects an integer"),
        ({"tokenizer": "t", "data": ["d"], "out": "o"}, {"device": "tpu"}, "--device must be one of auto|cpu|cuda"),
        ({"tokenizer": "t", "data": ["d"], "out": "o"}, {"precision": "fp16"}, "--precision must be one of"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path, file_values, overrides, message):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(file_values))
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        load_config(PretrainConfig, cfg_file, overrides)


def test_invalid_json_config_names_file_and_line(tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text('{\n  "lr": 0.1,\n  oops\n}')
    with pytest.raises(UsageError) as err:
        load_config(PretrainConfig, cfg_file, {})
    assert str(err.value).startswith(f"{cfg_file}:3:")


def test_single_string_becomes_a_list_for_list_fields():
    cfg = load_config(PretrainConfig, None, {"tokenizer": "t", "data": "one.txt", "out": "o"})
    assert cfg.data == ["one.txt"]
