"""Exports, one builder per format: exact lines, flat schemas, and what datasets, TRL and our trainer make of them."""

import json
from types import SimpleNamespace

import pytest

from app.services.exports import FORMATS, write_export
from tests.conftest import BACKENDS
from tests.factories import (
    T0,
    annotate_pairwise,
    annotate_ranking,
    build_dataset,
    make_annotator,
    make_model,
    pairwise_task,
)
from tests.factories import export_lines as rows


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_trl_pairs_from_choices_and_rankings_with_margins(db):
    d = build_dataset(db)
    assert rows(db, "trl") == [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.0, "annotation_id": d.a1.id},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1 / 3, "annotation_id": d.a2.id},
        {"prompt": "Count to three.", "chosen": "1 2 3", "rejected": "one", "margin": 0.0, "annotation_id": d.a5.id},
        {"prompt": "Count to three.", "chosen": "1 2 3", "rejected": "1 2", "margin": 0.0, "annotation_id": d.a5.id},
        {"prompt": "Count to three.", "chosen": "one", "rejected": "1 2", "margin": 0.0, "annotation_id": d.a5.id},
        # a rating's rewrite beats the response rated bad
        {
            "prompt": "Greet me.",
            "chosen": "Hello, nice to meet you!",
            "rejected": "=cmd|' /C calc'!A0",
            "margin": 0.0,
            "annotation_id": d.a6.id,
        },
        {
            "prompt": "system: Be short.\n\nuser: Sky?",
            "chosen": "Blue.",
            "rejected": "It is a long story about light.",
            "margin": 2 / 3,
            "annotation_id": d.a7.id,
        },
        {"prompt": "Held out?", "chosen": "no", "rejected": "yes", "margin": 0.0, "annotation_id": d.a8.id},
    ]


def test_a_rewrite_is_preferred_over_what_it_rewrote_and_every_response_rated_bad(db):
    model = make_model(db, "policy-v1")
    user = make_annotator(db, "carol")
    task, (good, bad) = pairwise_task(db, prompt_text="Say hi.", texts=("hi", "go away"), model=model)
    choice = annotate_pairwise(db, task, user, chosen=good, strength=3, rewrite="Hi there!")
    task2, (a, b) = pairwise_task(db, prompt_text="Say bye.", texts=("no", "what"), model=model)
    both_bad = annotate_pairwise(db, task2, user, chosen=None, choice="both_bad", rewrite="Goodbye!")
    task3, ranked = pairwise_task(db, prompt_text="Count.", texts=("1 2", "1", "x"), model=model)
    ranking = annotate_ranking(db, task3, user, ranking=ranked, rewrite="1 2 3")
    db.commit()
    pairs = [(x["annotation_id"], x["chosen"], x["rejected"], x["margin"]) for x in rows(db, "trl")]
    assert pairs == [
        (choice.id, "hi", "go away", 1.0),  # the choice itself, then the rewrite over the response it rewrote
        (choice.id, "Hi there!", "hi", 0.0),
        (both_bad.id, "Goodbye!", "no", 0.0),  # both rated bad: the rewrite beats both
        (both_bad.id, "Goodbye!", "what", 0.0),
        (ranking.id, "1 2", "1", 0.0),
        (ranking.id, "1 2", "x", 0.0),
        (ranking.id, "1", "x", 0.0),
        (ranking.id, "1 2 3", "1 2", 0.0),  # over the ranking's first
    ]
    assert [(x["annotation_id"], x["rejected"]) for x in rows(db, "trl", rewrites="only")] == [
        (choice.id, "hi"),
        (both_bad.id, "no"),
        (both_bad.id, "what"),
        (ranking.id, "1 2"),
    ]
    assert [x["chosen"] for x in rows(db, "trl", rewrites="exclude")] == ["hi", "1 2", "1 2", "1"]
    rich = {x["annotation_id"]: x["preference_pairs"] for x in rows(db, "rich")}
    assert rich[choice.id] == [
        {"chosen_generation_id": good.id, "rejected_generation_id": bad.id, "source": "choice"},
        {"chosen_generation_id": None, "rejected_generation_id": good.id, "source": "rewrite"},
    ]
    assert [p["source"] for p in rich[ranking.id]] == ["ranking", "ranking", "ranking", "rewrite"]
    assert [p["rejected_generation_id"] for p in rich[both_bad.id]] == [a.id, b.id]


def test_rich_carries_how_the_task_was_selected(db):
    d = build_dataset(db)
    d.t1.selection, d.t1.selection_score = "uncertainty", 0.93
    d.t3.selection = "random"
    db.commit()
    by_task = {x["task_id"]: (x["selection"], x["selection_score"]) for x in rows(db, "rich")}
    assert by_task[d.t1.id] == ("uncertainty", 0.93)
    assert by_task[d.t3.id] == ("random", None)
    assert by_task[d.t4.id] == (None, None)  # made by hand: no selection


def test_include_ties_adds_bool_tie_on_every_line(db):
    d = build_dataset(db)
    lines = rows(db, "trl", include_ties=True)
    assert all(set(x) == {"prompt", "chosen", "rejected", "margin", "annotation_id", "tie"} for x in lines)
    ties = [x for x in lines if x["tie"]]
    assert [(x["annotation_id"], x["chosen"], x["rejected"]) for x in ties] == [
        (d.a3.id, "red", "blue"),
        (d.a4.id, "red", "blue"),
    ]
    assert len(lines) == len(rows(db, "trl")) + 2


def test_conversational_kto_rankings_sft(db):
    d = build_dataset(db)
    conv = rows(db, "trl-conversational")
    assert conv[0]["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert conv[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert conv[6]["prompt"] == [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}]
    assert rows(db, "kto") == [
        {"prompt": "Greet me.", "completion": "Hello!", "label": True, "annotation_id": d.a6.id},
        {"prompt": "Greet me.", "completion": "=cmd|' /C calc'!A0", "label": False, "annotation_id": d.a6.id},
    ]
    assert rows(db, "rankings") == [
        {"prompt": "Count to three.", "completions": ["1 2 3", "one", "1 2"], "annotation_id": d.a5.id}
    ]
    assert rows(db, "sft") == [
        {
            "prompt": "Greet me.",
            "completion": "Hello, nice to meet you!",
            "source": "rewrite",
            "annotation_id": d.a6.id,
        },
        {"prompt": "Greet me.", "completion": "Hello!", "source": "good", "annotation_id": d.a6.id},
    ]


def test_rich_has_everything_with_pseudonymous_annotator(db):
    d = build_dataset(db)
    lines = rows(db, "rich")
    assert [x["annotation_id"] for x in lines] == [
        d.a1.id,
        d.a2.id,
        d.a3.id,
        d.a4.id,
        d.a5.id,
        d.a6.id,
        d.a7.id,
        d.a8.id,
    ]
    first = lines[0]
    assert first["annotator"] == d.alice.public_id and "alice" not in json.dumps(lines)
    assert first["positions"] == [d.g1b.id, d.g1a.id] and first["strength"] == 3 and first["time_spent_ms"] == 1200
    assert first["chosen_generation_id"] == d.g1a.id and first["source"] == "human"
    assert first["responses"][0] == {
        "generation_id": d.g1a.id,
        "text": "4",
        "model_version_id": d.model.id,
        "policy_version": "policy-v1",
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": 32,
        "seed": 11,
        "generation_source": "model",
    }
    assert first["created_at"] == T0.isoformat()
    rating = lines[5]
    assert rating["ratings"] == [
        {"generation_id": d.g4a.id, "label": "good"},
        {"generation_id": d.g4b.id, "label": "bad"},
    ]
    assert rating["critiques"] == [{"generation_id": d.g4b.id, "text": "not a greeting"}]
    assert lines[6]["source"] == "ai" and lines[6]["prompt_messages"][1] == {"role": "user", "content": "Sky?"}
    assert all(list(x) == list(lines[0]) for x in lines)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_in_datasets_as_one_table(db, tmp_path, fmt):
    from datasets import load_dataset

    build_dataset(db)
    result = write_export(db, fmt=fmt, out=tmp_path / f"{fmt}.jsonl", include_ties=fmt.startswith("trl"))
    lines = [json.loads(x) for x in result.path.read_text().splitlines()]
    assert lines and result.rows == len(lines)
    assert all(list(x) == list(lines[0]) for x in lines)  # same keys, same order, every line
    ds = load_dataset("json", data_files=str(result.path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(lines) and ds.column_names == list(lines[0])
    assert ds.to_list()[0] == lines[0] or fmt == "rich"  # rich: nulls in nested lists come back as typed nulls


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from trainer.tokenizer import TokenizerConfig, train_tokenizer

    corpus = tmp_path_factory.mktemp("corpus") / "c.txt"
    corpus.write_text(
        "\n".join(f"What is {i}+{i}? {2 * i}. Count to three. Hello, nice to meet you! red blue" for i in range(200))
    )
    out = tmp_path_factory.mktemp("tok") / "tok"
    return AutoTokenizer.from_pretrained(
        str(train_tokenizer(TokenizerConfig(input=[str(corpus)], vocab_size=320, out=str(out))))
    )


@pytest.mark.parametrize("fmt", ["trl", "trl-conversational"])
def test_trl_reward_and_dpo_preparation_accept_trl_formats(db, tmp_path, tiny_tokenizer, fmt):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    build_dataset(db)
    result = write_export(db, fmt=fmt, out=tmp_path / "pairs.jsonl")
    ds = load_dataset("json", data_files=str(result.path), split="train", cache_dir=str(tmp_path / "cache"))
    reward = RewardTrainer._prepare_dataset(
        SimpleNamespace(),
        ds,
        tiny_tokenizer,
        RewardConfig(output_dir=str(tmp_path / "r"), max_length=256, bf16=False, use_cpu=True),
        "train",
    )
    assert reward.num_rows == result.rows and reward[0]["chosen_ids"] and reward[0]["rejected_ids"]
    assert reward[0]["margin"] == 1.0
    dpo = DPOTrainer._prepare_dataset(
        SimpleNamespace(_tokenizer=tiny_tokenizer),
        ds,
        tiny_tokenizer,
        DPOConfig(output_dir=str(tmp_path / "d"), max_length=256, bf16=False, use_cpu=True),
        "train",
    )
    assert dpo.num_rows == result.rows and all(row["chosen_ids"] and row["prompt_ids"] for row in dpo)


def test_trl_kto_preparation_accepts_kto(db, tmp_path, tiny_tokenizer):
    from datasets import load_dataset
    from trl import KTOConfig
    from trl.trainer.kto_trainer import KTOTrainer

    build_dataset(db)
    result = write_export(db, fmt="kto", out=tmp_path / "kto.jsonl")
    ds = load_dataset("json", data_files=str(result.path), split="train", cache_dir=str(tmp_path / "cache"))
    config = KTOConfig(
        output_dir=str(tmp_path / "k"), max_length=256, bf16=False, use_cpu=True, per_device_train_batch_size=2
    )
    trainer = SimpleNamespace(
        _tokenizer=tiny_tokenizer,
        calculate_KL=True,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
    )
    kto = KTOTrainer._prepare_dataset(trainer, ds, tiny_tokenizer, config, "train")
    assert kto.num_rows == 2 and kto["label"] == [True, False] and all(r["completion_ids"] for r in kto)
    assert kto[0]["KL_completion_ids"] == kto[1]["completion_ids"]


@pytest.mark.parametrize("fmt,pairs", [("trl", 8), ("trl-conversational", 8), ("rankings", 3), ("kto", 1)])
def test_our_trainer_reads_every_preference_export(db, tmp_path, tiny_tokenizer, fmt, pairs):
    """The reward stage (`python -m trainer reward`) reads the exports as they are written."""
    from trainer.preference_data import load_preferences

    build_dataset(db)
    result = write_export(db, fmt=fmt, out=tmp_path / f"{fmt}.jsonl", include_ties=fmt.startswith("trl"))
    prefs = load_preferences(result.path, tiny_tokenizer, ties="exclude", max_length=256)
    assert prefs.format == fmt and prefs.n_pairs == pairs
    if fmt.startswith("trl"):
        assert prefs.skipped_ties == 2
