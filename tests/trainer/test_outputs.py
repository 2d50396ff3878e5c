import json

import pytest

from trainer.config import UsageError
from trainer.outputs import MetricsLog, atomic_output_dir, atomic_output_file


def test_atomic_output_dir_renames_on_success(tmp_path):
    out = tmp_path / "run"
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("run.tmp-")
        (tmp / "weights.bin").write_text("x")
        assert not out.exists()  # not visible until complete
    assert (out / "weights.bin").read_text() == "x"
    assert list(tmp_path.iterdir()) == [out]


def test_exception_leaves_no_output_and_no_temp_dir(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.bin").write_text("x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(UsageError, match="already exists"):
        with atomic_output_dir(out):
            pass


def test_atomic_output_file(tmp_path):
    out = tmp_path / "samples.jsonl"
    with pytest.raises(ValueError):
        with atomic_output_file(out) as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    with atomic_output_file(out) as tmp:
        tmp.write_text("done\n")
    assert out.read_text() == "done\n" and list(tmp_path.iterdir()) == [out]


def test_metrics_log_writes_one_json_object_a_line_and_calls_back(tmp_path):
    seen = []
    with MetricsLog(tmp_path / "metrics.jsonl", seen.append) as log:
        log.log(1, 2, loss=1.5)
        log.log(2, 2, loss=0.5, **{"objective/kl": 0.1})
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [
        {"step": 1, "total_steps": 2, "loss": 1.5},
        {"step": 2, "total_steps": 2, "loss": 0.5, "objective/kl": 0.1},
    ]
    assert seen == lines
