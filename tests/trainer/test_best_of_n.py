import json
import subprocess
import sys

import pytest

from tests.factories import run_metrics, write_jsonl
from trainer.best_of_n import BestOfNConfig, pick_best, run_best_of_n
from trainer.config import UsageError, load_config
from trainer.evaluate import EvaluateConfig, run_evaluate
from trainer.sft import SftConfig, train_sft

JUDGE = "py:tests.trainer.test_best_of_n:fewer_words"


def fewer_words(prompt: str, response: str) -> float:
    """A judge that pays for brevity: the policy's answers must get shorter under best-of-n + SFT."""
    return -float(len(response.split()))


def _prompts(path, n=24):
    starts = ["the cat", "a dog", "the bird", "big red", "small dog", "the mat"]
    return write_jsonl(path, [{"prompt_id": f"p{i}", "prompt": starts[i % len(starts)]} for i in range(n)])


def _run(tmp_path, lm, name, **kw):
    cfg = load_config(
        BestOfNConfig,
        overrides={
            "policy": str(lm),
            "judge": JUDGE,
            "out": str(tmp_path / name),
            "prompts": str(kw.pop("prompts")),
            "device": "cpu",
            "max_new_tokens": 16,
            "num_samples": 6,
            "seed": 3,
            **kw,
        },
    )
    return run_best_of_n(cfg)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_pick_best_takes_the_highest_finished_sample():
    group = [
        {"finish_reason": "length", "reward": 9.0},
        {"finish_reason": "eos", "reward": 1.0},
        {"finish_reason": "eos", "reward": 2.0},
        {"finish_reason": "eos", "reward": 2.0, "sample": 3},
    ]
    assert pick_best(group) is group[2]  # the first of the tied best; the truncated 9.0 never wins
    assert pick_best([{"finish_reason": "length", "reward": 1.0}]) is None


def test_best_is_the_judges_choice_reproducibly_and_sft_on_it_moves_the_policy(tmp_path, tiny_lm_dir):
    prompts = _prompts(tmp_path / "prompts.jsonl")
    out = _run(tmp_path, tiny_lm_dir, "a", prompts=prompts)
    again = _run(tmp_path, tiny_lm_dir, "b", prompts=prompts)
    for name in ("best.jsonl", "samples.jsonl"):
        assert (out / name).read_bytes() == (again / name).read_bytes()
    assert run_metrics(out) == run_metrics(again)
    samples, best = _lines(out / "samples.jsonl"), _lines(out / "best.jsonl")
    assert len(samples) == 24 * 6
    by_prompt, texts = {}, {}
    for s in samples:
        assert s["reward"] == fewer_words("", s["text"])
        by_prompt.setdefault(s["prompt_id"], []).append(s)
        texts[(s["prompt_id"], s["sample"])] = s["text"]
    assert 0 < len(best) <= 24
    for row in best:
        finished = [s for s in by_prompt[row["prompt_id"]] if s["finish_reason"] == "eos"]
        assert row["reward"] == max(s["reward"] for s in finished)
        assert row["completion"] == texts[(row["prompt_id"], row["sample"])]
        assert row["prompt"] in {"the cat", "a dog", "the bird", "big red", "small dog", "the mat"}
    metrics = _lines(out / "metrics.jsonl")[-1]
    assert metrics["rs/prompts"] == 24 and metrics["rs/prompts_kept"] == len(best)
    assert metrics["rs/reward_best"] > metrics["rs/reward_mean"] and metrics["rs/reward_gain"] > 0
    assert metrics["reward_length_corr"] < -0.5  # this judge pays for brevity
    assert json.loads((out / "trainer_config.json").read_text())["stage"] == "best-of-n"

    tuned = train_sft(
        SftConfig(
            model=str(tiny_lm_dir),
            data=str(out / "best.jsonl"),
            out=str(tmp_path / "sft"),
            lr=3e-3,
            epochs=4,
            batch_size=8,
            device="cpu",
            seed=0,
        )
    )
    scores = run_evaluate(
        load_config(
            EvaluateConfig,
            overrides={
                "policy": str(tuned),
                "baseline": str(tiny_lm_dir),
                "prompts": str(prompts),
                "judge": JUDGE,
                "device": "cpu",
                "max_new_tokens": 16,
                "num_samples": 4,
                "seed": 9,
            },
        )
    )
    assert scores["policy"]["judge_mean"] > scores["baseline"]["judge_mean"] + 0.5  # shorter answers
    assert scores["win_rate"]["win_rate"] > 0.6


def test_chat_prompts_give_chat_examples(tmp_path, tiny_lm_dir):
    prompts = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"prompt_id": i, "messages": [{"role": "user", "content": f"what is {i} plus 2?"}]} for i in range(4)],
    )
    out = _run(tmp_path, tiny_lm_dir, "chat", prompts=prompts, max_new_tokens=24, num_samples=8)
    texts = {(s["prompt_id"], s["sample"]): s["text"] for s in _lines(out / "samples.jsonl")}
    best = _lines(out / "best.jsonl")
    assert best
    for row in best:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and "completion" not in row
        assert row["messages"][1]["content"] == texts[(row["prompt_id"], row["sample"])]
    train_sft(
        SftConfig(
            model=str(tiny_lm_dir),
            data=str(out / "best.jsonl"),
            out=str(tmp_path / "chat-sft"),
            max_steps=1,
            device="cpu",
        )
    )  # the SFT stage reads them as they are


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"num_samples": 1}, "at least 2"),
        ({"temperature": 0.0}, "must be > 0"),
        ({"top_p": 1.5}, "--top-p must be in"),  # generate's own range checks apply
        ({"judge": "rm:/nonexistent"}, "no such reward-model directory"),
        ({"judge": "nonsense"}, "rm:DIR or py:module:function"),
    ],
)
def test_bad_flags_are_refused_and_write_nothing(tmp_path, tiny_lm_dir, flags, message):
    prompts = _prompts(tmp_path / "prompts.jsonl", n=2)
    with pytest.raises(UsageError, match=message):
        _run(tmp_path, tiny_lm_dir, "out", prompts=prompts, **flags)
    assert not (tmp_path / "out").exists()


def test_cli_exit_2_names_the_bad_prompt_line(tmp_path, tiny_lm_dir):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"prompt_id": 1, "prompt": "the cat"}\n{"prompt_id": 2}\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "best-of-n",
            "--policy",
            str(tiny_lm_dir),
            "--judge",
            JUDGE,
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--max-new-tokens",
            "16",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "bad.jsonl:2:" in proc.stderr
    assert not (tmp_path / "out").exists()
