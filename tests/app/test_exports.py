"""Exports: exact rows per format, flat schemas, datasets + TRL preparation, filters, determinism, CLI, card."""

import csv
import hashlib
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from app.services.exports import (
    FORMATS,
    ExportError,
    ExportFilters,
    default_filename,
    filters_from_strings,
    iter_export,
    write_card,
    write_export,
)
from tests.app.factories import (
    annotate_pairwise,
    annotate_ranking,
    annotate_rating,
    make_annotator,
    make_generation,
    make_model,
    make_prompt,
    make_task,
)
from tests.conftest import BACKENDS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build_dataset(db) -> SimpleNamespace:
    """Two humans and an AI judge over every kind of task; one undone annotation."""
    alice, bob = make_annotator(db, "alice"), make_annotator(db, "bob")
    judge = make_annotator(db, "judge", is_ai=True)
    model = make_model(db, "policy-v1")
    p1 = make_prompt(db, "What is 2+2?")
    g1a, g1b = make_generation(db, p1, "4", model=model, seed=11), make_generation(db, p1, "5", model=model, seed=12)
    t1 = make_task(db, p1, [g1a, g1b], overlap=2)
    a1 = annotate_pairwise(db, t1, alice, chosen=g1a, strength=3, shown=[g1b, g1a], created_at=T0, time_spent_ms=1200)
    a2 = annotate_pairwise(db, t1, bob, chosen=g1a, strength=1, created_at=T0 + timedelta(hours=1))
    p2 = make_prompt(db, "Name a colour.")
    g2a, g2b = make_generation(db, p2, "red", model=model), make_generation(db, p2, "blue", model=model)
    t2 = make_task(db, p2, [g2a, g2b], overlap=2)
    a3 = annotate_pairwise(db, t2, alice, chosen=None, choice="tie", created_at=T0 + timedelta(hours=2))
    a4 = annotate_pairwise(db, t2, bob, chosen=None, choice="both_bad", created_at=T0 + timedelta(hours=3))
    p3 = make_prompt(db, "Count to three.")
    g3 = [make_generation(db, p3, t, model=model) for t in ("1 2 3", "1 2", "one")]
    t3 = make_task(db, p3, g3, kind="ranking")
    a5 = annotate_ranking(db, t3, alice, ranking=[g3[0], g3[2], g3[1]], created_at=T0 + timedelta(hours=4))
    p4 = make_prompt(db, "Greet me.")
    g4a, g4b = (
        make_generation(db, p4, "Hello!", model=model),
        make_generation(db, p4, "=cmd|' /C calc'!A0", model=model),
    )
    t4 = make_task(db, p4, [g4a, g4b], kind="rating")
    a6 = annotate_rating(
        db,
        t4,
        bob,
        ratings={g4a: "good", g4b: "bad"},
        rewrite="Hello, nice to meet you!",
        critiques={str(g4b.id): "not a greeting"},
        created_at=T0 + timedelta(hours=5),
    )
    p5 = make_prompt(db, messages=[{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}])
    g5a, g5b = make_generation(db, p5, "Blue."), make_generation(db, p5, "It is a long story about light.")
    t5 = make_task(db, p5, [g5a, g5b])
    a7 = annotate_pairwise(db, t5, judge, chosen=g5a, strength=2, source="ai", created_at=T0 + timedelta(hours=6))
    p6 = make_prompt(db, "Held out?", split="eval")
    g6a, g6b = make_generation(db, p6, "yes", model=model), make_generation(db, p6, "no", model=model)
    t6 = make_task(db, p6, [g6a, g6b])
    a8 = annotate_pairwise(db, t6, bob, chosen=g6b, strength=None, created_at=T0 + timedelta(hours=7))
    undone = annotate_pairwise(db, t6, alice, chosen=g6a, created_at=T0 + timedelta(hours=8))
    undone.deleted_at = T0 + timedelta(hours=8, minutes=1)
    db.commit()
    return SimpleNamespace(**locals())


def rows(db, fmt, **kw):
    include_ties = kw.pop("include_ties", False)
    return [
        line
        for batch in iter_export(db, fmt=fmt, filters=ExportFilters(**kw), include_ties=include_ties)
        for line in batch
    ]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_trl_pairs_from_choices_and_rankings_with_margins(db):
    d = build_dataset(db)
    assert rows(db, "trl") == [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.0, "annotation_id": d.a1.id},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1 / 3, "annotation_id": d.a2.id},
        {"prompt": "Count to three.", "chosen": "1 2 3", "rejected": "one", "margin": 0.0, "annotation_id": d.a5.id},
        {"prompt": "Count to three.", "chosen": "1 2 3", "rejected": "1 2", "margin": 0.0, "annotation_id": d.a5.id},
        {"prompt": "Count to three.", "chosen": "one", "rejected": "1 2", "margin": 0.0, "annotation_id": d.a5.id},
        {
            "prompt": "system: Be short.\n\nuser: Sky?",
            "chosen": "Blue.",
            "rejected": "It is a long story about light.",
            "margin": 2 / 3,
            "annotation_id": d.a7.id,
        },
        {"prompt": "Held out?", "chosen": "no", "rejected": "yes", "margin": 0.0, "annotation_id": d.a8.id},
    ]


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
    assert conv[5]["prompt"] == [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}]
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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_filters(db):
    d = build_dataset(db)
    ids = lambda **kw: sorted({x["annotation_id"] for x in rows(db, "rich", **kw)})  # noqa: E731
    assert ids(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5)) == [d.a3.id, d.a4.id, d.a5.id]
    assert ids(until_id=d.a2.id) == [d.a1.id, d.a2.id]
    assert ids(source="ai") == [d.a7.id]
    assert d.a7.id not in ids(source="human")
    assert ids(annotators=("bob",)) == [d.a2.id, d.a4.id, d.a6.id, d.a8.id]
    assert ids(annotators=(d.alice.public_id,)) == [d.a1.id, d.a3.id, d.a5.id]
    assert ids(split="eval") == [d.a8.id]
    # Task 1: both chose the same (agreement 1); task 2: tie vs both-bad (0); single-annotation tasks have none.
    assert ids(min_agreement=0.5) == [d.a1.id, d.a2.id]
    assert ids(min_agreement=0.0) == [d.a1.id, d.a2.id, d.a3.id, d.a4.id]
    with pytest.raises(ExportError):
        ExportFilters(source="robots")
    with pytest.raises(ExportError):
        ExportFilters(min_agreement=2)


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


def test_rich_csv_neutralises_formulas_and_loads(db, tmp_path):
    from datasets import load_dataset

    build_dataset(db)
    result = write_export(db, fmt="rich", out=tmp_path / "rich.csv", as_csv=True)
    with open(result.path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == result.rows == 8
    responses = json.loads(table[5]["responses"])
    assert responses[1]["text"] == "=cmd|' /C calc'!A0"  # inside JSON the text is intact, and the cell starts with [
    evil = [v for row in table for v in row.values() if "cmd|" in v and not v.startswith("[")]
    assert not evil
    hostile = write_export(db, fmt="sft", out=tmp_path / "x.jsonl")  # sanity: JSONL keeps the text as is
    assert hostile.rows == 2
    ds = load_dataset("csv", data_files=str(result.path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 8


def test_csv_cells_starting_with_formula_characters_get_a_quote(db, tmp_path):
    d = build_dataset(db)
    d.a6.rewrite = '=HYPERLINK("http://evil")'
    d.a6.critique = "+1 great"
    db.commit()
    result = write_export(db, fmt="rich", out=tmp_path / "rich.csv", as_csv=True)
    with open(result.path, newline="") as fh:
        row = list(csv.DictReader(fh))[5]
    assert row["rewrite"] == '\'=HYPERLINK("http://evil")' and row["critique"] == "'+1 great"
    with pytest.raises(ExportError):
        write_export(db, fmt="trl", out=tmp_path / "t.csv", as_csv=True)


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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_same_database_and_filters_give_same_bytes_and_sidecar(db, tmp_path):
    build_dataset(db)
    a = write_export(db, fmt="rich", out=tmp_path / "a" / "rich.jsonl")
    b = write_export(db, fmt="rich", out=tmp_path / "b" / "rich.jsonl")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()
    assert (tmp_path / "a" / "rich.jsonl.sha256").read_text() == f"{a.sha256}  rich.jsonl\n"
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp-" in p.name]


def test_card_has_provenance_counts_filters_agreement(db, tmp_path):
    build_dataset(db)
    result = write_export(db, fmt="trl", out=tmp_path / "trl.jsonl", filters=ExportFilters(source="human"))
    card = write_card(db, result=result).read_text()
    assert "rlhf-studio export: `trl`" in card and result.sha256 in card and '- `source`: "human"' in card
    assert f"{result.rows} lines" in card and "| pairwise | nominal |" in card and "annotators: 2" in card


def test_cli_writes_file_and_sha256_prints_rows_and_refuses_bad_args(settings, db, tmp_path):
    from app.cli import app as cli

    build_dataset(db)
    out = tmp_path / "out" / "trl.jsonl"
    res = CliRunner().invoke(
        cli,
        [
            "export",
            "--format",
            "trl",
            "--out",
            str(out),
            "--include-ties",
            "--source",
            "human",
            "--since",
            "2026-01-01",
            "--card",
        ],
    )
    assert res.exit_code == 0, res.output
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert "rows: 8" in res.stderr and f"sha256: {digest}" in res.stderr
    assert (out.parent / "trl.jsonl.sha256").read_text() == f"{digest}  trl.jsonl\n"
    assert (out.parent / "README.md").exists()
    for args, needle in (
        (["--format", "parquet"], "--format"),
        (["--format", "trl", "--source", "x"], "source"),
        (["--format", "trl", "--since", "yesterday"], "--since"),
        (["--format", "kto", "--csv"], "CSV"),
    ):
        res = CliRunner().invoke(cli, ["export", *args, "--out", str(tmp_path / "bad.jsonl")])
        assert res.exit_code == 2 and needle in res.stderr, res.output
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.parametrize("fmt,include_ties", [("trl", False), ("trl", True), ("trl-conversational", True)])
def test_written_file_is_exactly_the_json_of_the_lines(db, tmp_path, fmt, include_ties):
    """The trl hot path writes pre-encoded lines: they must be the bytes json.dumps gives for the same dicts."""
    d = build_dataset(db)
    model = make_model(db, "policy-v2")
    prompt = make_prompt(db, 'He said "hi"\n\tthen \u2028 left é 😀 \\ /')
    odd = [make_generation(db, prompt, t, model=model) for t in ('ünï "quoted"\n', "\x00\x1f ctrl")]
    task = make_task(db, prompt, odd)
    annotate_pairwise(db, task, d.alice, chosen=odd[1], strength=1, meta={"margin": 0.125})
    task2 = make_task(db, prompt, list(reversed(odd)))
    annotate_pairwise(db, task2, d.bob, chosen=odd[0], strength=2)
    db.commit()
    result = write_export(db, fmt=fmt, out=tmp_path / "x.jsonl", include_ties=include_ties)
    expected = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows(db, fmt, include_ties=include_ties))
    assert result.path.read_text(encoding="utf-8") == expected
    lines = expected.split("\n")[:-1]  # (str.splitlines would also split at the U+2028 inside a string)
    assert result.rows == len(lines) and result.annotations == len({json.loads(x)["annotation_id"] for x in lines})


@pytest.mark.parametrize("fmt,pairs", [("trl", 7), ("trl-conversational", 7), ("rankings", 3), ("kto", 1)])
def test_our_trainer_reads_every_preference_export(db, tmp_path, tiny_tokenizer, fmt, pairs):
    """The reward stage (`python -m trainer reward`) reads the exports as they are written."""
    from trainer.preference_data import load_preferences

    build_dataset(db)
    result = write_export(db, fmt=fmt, out=tmp_path / f"{fmt}.jsonl", include_ties=fmt.startswith("trl"))
    prefs = load_preferences(result.path, tiny_tokenizer, ties="exclude", max_length=256)
    assert prefs.format == fmt and prefs.n_pairs == pairs
    if fmt.startswith("trl"):
        assert prefs.skipped_ties == 2


def _golden_dataset(db) -> None:
    """build_dataset with fixed pseudonymous ids, plus lines that take the slow paths: odd characters, an imported
    margin, a tie that brought its own margin."""
    d = build_dataset(db)
    for n, user in enumerate((d.alice, d.bob, d.judge)):
        user.public_id = f"pub{n:029d}"
    model = make_model(db, "policy-v2")
    prompt = make_prompt(db, 'He said "hi"\n\tthen \u2028 left é 😀 \\ /')
    odd = [make_generation(db, prompt, t, model=model) for t in ('ünï "quoted"\n', "\x00\x1f ctrl")]
    at = T0 + timedelta(days=1)
    annotate_pairwise(
        db, make_task(db, prompt, odd), d.alice, chosen=odd[1], strength=1, meta={"margin": 0.125}, created_at=at
    )
    annotate_pairwise(db, make_task(db, prompt, list(reversed(odd))), d.bob, chosen=odd[0], strength=2, created_at=at)
    tie = annotate_pairwise(
        db, make_task(db, prompt, odd), d.judge, chosen=None, choice="tie", source="ai", created_at=at
    )
    tie.meta = {"margin": 0.5}
    db.commit()


# sha256 of every export of `_golden_dataset`: the bytes may only change on purpose.
GOLDEN = {
    ("trl", False, False): "7a455f9a66bc2ca412535ee2f055b5cee56da997208b5925d271fc89df447c8e",
    ("trl", True, False): "fa63474cb3623f5f2a1e542a539b3187191ab1fab227d90eb28da1f4890ea42d",
    ("trl-conversational", False, False): "3e605783bb4c0cb51563a7bfbb1f133c706f9ccbc66783295895eee1e1d400f6",
    ("trl-conversational", True, False): "33f426f3e4a8a64a956cdfa448db0ce811f4e4c4e29146cb033d0983fc7d656a",
    ("kto", False, False): "5cff58495303f6df0843c8deb83bb3fb43a7cf2f59a6a131feaa88af74abf1b9",
    ("rankings", False, False): "b9ba3ad3df442632d8f14df7e88c4a19504422a0ac6cc3c003081b27238ac6e8",
    ("sft", False, False): "3223a4f11e881a91c58186ef471641660ad6c5a251e0c660625282fd52c5eb39",
    ("rich", False, False): "84d81c9f088a4677562154a02069593c6f7e39fb86573d0289901b52ed2ea284",
    ("rich", False, True): "b2f5cacfc3ffa8233d219ac80e6c799c6804d36a661909c0e05715add2d4b3ef",
}


@pytest.mark.parametrize("fmt,include_ties,as_csv", list(GOLDEN))
def test_every_format_gives_the_pinned_bytes(db, tmp_path, fmt, include_ties, as_csv):
    _golden_dataset(db)
    out = tmp_path / default_filename(fmt, as_csv)
    result = write_export(db, fmt=fmt, out=out, include_ties=include_ties, as_csv=as_csv)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
    assert result.sha256 == GOLDEN[fmt, include_ties, as_csv], out.read_text()


def test_filtered_exports_give_the_pinned_bytes(db, tmp_path):
    _golden_dataset(db)
    filters = filters_from_strings(source="human", annotators=["alice,bob"], since="2026-01-01T01:00", split="train")
    digests = [
        write_export(db, fmt=fmt, out=tmp_path / f"{fmt}.jsonl", filters=filters, include_ties=True).sha256[:16]
        for fmt in FORMATS
    ]
    card = write_card(db, result=write_export(db, fmt="trl", out=tmp_path / "card" / "trl.jsonl", filters=filters))
    assert hashlib.sha256(card.read_bytes()).hexdigest()[:16] == "74d04c8630401515"
    assert digests == [
        "6a094a557bce45fd",
        "5b623d2e46660dd4",
        "5cff58495303f6df",
        "b9ba3ad3df442632",
        "3223a4f11e881a91",
        "fc32586f18c34557",
    ]
