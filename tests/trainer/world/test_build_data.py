"""The world's data files: deterministic bytes, disjoint splits, the documented row formats, and SFT
demonstrations that are all correct but not all ideal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.world import build, judge, prompts


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> build.WorldFiles:
    return build.build_world("tiny", tmp_path_factory.mktemp("world") / "w", seed=0)


def test_same_seed_same_bytes(tiny_world, tmp_path):
    again = build.build_world("tiny", tmp_path / "again", seed=0)
    for name in ("pretrain", "sft", "prompts", "prompts_train", "prompts_eval", "manifest"):
        assert getattr(again, name).read_bytes() == getattr(tiny_world, name).read_bytes(), name


def test_other_seed_other_data(tiny_world, tmp_path):
    other = build.build_world("tiny", tmp_path / "other", seed=1)
    assert other.pretrain.read_bytes() != tiny_world.pretrain.read_bytes()
    assert other.prompts.read_bytes() != tiny_world.prompts.read_bytes()


def test_rebuild_is_a_no_op_and_repairs_a_changed_file(tiny_world):
    before = {p: p.stat().st_mtime_ns for p in tiny_world.out_dir.glob("*.jsonl")}
    progress = []
    build.build_world("tiny", tiny_world.out_dir, seed=0, on_progress=lambda *a: progress.append(a))
    assert {p: p.stat().st_mtime_ns for p in tiny_world.out_dir.glob("*.jsonl")} == before
    assert progress[-1] == ("data", 1, 1)
    original = tiny_world.sft.read_bytes()
    tiny_world.sft.write_bytes(b'{"prompt": "x", "completion": "y"}\n')
    build.build_world("tiny", tiny_world.out_dir, seed=0)
    assert tiny_world.sft.read_bytes() == original


def test_row_formats_and_counts(tiny_world):
    size = build.SIZES["tiny"]
    manifest = json.loads(tiny_world.manifest.read_text())
    pretrain, sft, rows = _read(tiny_world.pretrain), _read(tiny_world.sft), _read(tiny_world.prompts)
    assert len(pretrain) == size.pretrain_docs and all(set(r) == {"text"} and r["text"] for r in pretrain)
    assert len(sft) == size.sft_examples
    for r in sft:
        assert set(r) == {"prompt", "completion"}
        assert r["prompt"].startswith("User: ") and r["prompt"].endswith("\nAssistant:")
        assert r["completion"].startswith(" ") and "\n" not in r["completion"]
    assert [r["split"] for r in rows].count("eval") == size.eval_prompts
    assert [r["split"] for r in rows].count("train") == size.train_prompts
    for r in rows:
        assert set(r) == {"prompt_id", "prompt", "split", "tags"}
        assert r["prompt_id"].startswith(r["split"] + "-") and isinstance(r["tags"], list)
    assert len({r["prompt_id"] for r in rows}) == len(rows)
    assert manifest["rows"]["sft.jsonl"] == size.sft_examples
    assert _read(tiny_world.prompts_eval) == [r for r in rows if r["split"] == "eval"]
    assert _read(tiny_world.prompts_train) == [r for r in rows if r["split"] == "train"]


def test_splits_are_disjoint_and_eval_questions_never_leak(tiny_world):
    rows = _read(tiny_world.prompts)
    eval_questions = {prompts.question_of(r["prompt"]) for r in rows if r["split"] == "eval"}
    train_questions = {prompts.question_of(r["prompt"]) for r in rows if r["split"] == "train"}
    assert eval_questions and not eval_questions & train_questions
    sft_questions = {prompts.question_of(r["prompt"]) for r in _read(tiny_world.sft)}
    assert not eval_questions & sft_questions
    corpus = tiny_world.pretrain.read_text(encoding="utf-8")
    for q in eval_questions:
        assert json.dumps("User: " + q + "\n")[1:-1] not in corpus, q


def test_every_prompt_is_judgeable(tiny_world):
    for r in _read(tiny_world.prompts):
        assert judge.score(r["prompt"], judge.ideal_response(r["prompt"])) == 1.0, r


def test_sft_demos_are_correct_but_leave_room_to_improve(tiny_world):
    assessments = [judge.assess(r["prompt"], r["completion"]) for r in _read(tiny_world.sft)]
    assert all(a.correct == 1.0 for a in assessments)
    ideal_share = sum(a.score == 1.0 for a in assessments) / len(assessments)
    assert 0.3 < ideal_share < 0.6
    assert sum(a.score for a in assessments) / len(assessments) < 0.97


def test_corpus_holds_answers_of_every_style(tiny_world):
    dialogues = [r["text"] for r in _read(tiny_world.pretrain) if r["text"].startswith("User: ")]
    assert 0.3 < len(dialogues) / build.SIZES["tiny"].pretrain_docs < 0.5
    issues = set()
    for text in dialogues:
        prompt, answer = text.split("\nAssistant:", 1)
        issues.update(judge.assess(prompt, answer).issues)
    assert {"wrong", "rude", "too long", "hedges", "refuses", "terse"} <= issues


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown world size"):
        build.build_world("huge", tmp_path)
