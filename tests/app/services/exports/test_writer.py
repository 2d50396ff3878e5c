"""Writing exports: JSONL and CSV bytes (pinned), the sha256 sidecar, determinism, formula neutralising."""

import csv
import hashlib
import json
from datetime import timedelta

import pytest

from app.models import GuidelineVersion
from app.services.digests import repr_digest
from app.services.exports import (
    FORMATS,
    ExportError,
    default_filename,
    export_download,
    filters_from_strings,
    write_card,
    write_export,
)
from tests.conftest import BACKENDS
from tests.factories import T0, annotate_pairwise, build_dataset, make_generation, make_model, make_prompt, make_task
from tests.factories import export_lines as rows


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


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_same_database_and_filters_give_same_bytes_and_sidecar(db, tmp_path):
    build_dataset(db)
    a = write_export(db, fmt="rich", out=tmp_path / "a" / "rich.jsonl")
    b = write_export(db, fmt="rich", out=tmp_path / "b" / "rich.jsonl")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()
    assert (tmp_path / "a" / "rich.jsonl.sha256").read_text() == f"{a.sha256}  rich.jsonl\n"
    assert not [p for p in (tmp_path / "a").iterdir() if ".tmp-" in p.name]


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


def _golden_dataset(db) -> None:
    """build_dataset with fixed pseudonymous ids, plus lines that take the slow paths: odd characters, an imported
    margin, a tie that brought its own margin; one annotation made under a guideline version."""
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
    made_under = annotate_pairwise(
        db, make_task(db, prompt, list(reversed(odd))), d.bob, chosen=odd[0], strength=2, created_at=at
    )
    guidelines = GuidelineVersion(job_id=None, version=1, body="Prefer the correct answer.", created_at=at)
    db.add(guidelines)
    db.flush()
    made_under.guideline_version_id = guidelines.id
    tie = annotate_pairwise(
        db, make_task(db, prompt, odd), d.judge, chosen=None, choice="tie", source="ai", created_at=at
    )
    tie.meta = {"margin": 0.5}
    db.commit()


# sha256 of every export of `_golden_dataset`: the bytes may only change on purpose.
GOLDEN = {
    ("trl", False, False): "649a7b9183dc7b14952dfd9f204b27c7d7845788adc1c16cb9fb744b76afb0e6",
    ("trl", True, False): "b68671f89994a6ba56f394b38fd2e0fbe2a04f3e26119037bc457c4285457018",
    ("trl-conversational", False, False): "c0aad0dcf0a1627678a0903fd3dd009019c4e230539f8078cbc69f789e08691c",
    ("trl-conversational", True, False): "24835561b9a6104b8e0630d34467315f7b918415090b3dbea7866c87556af4bd",
    ("kto", False, False): "5cff58495303f6df0843c8deb83bb3fb43a7cf2f59a6a131feaa88af74abf1b9",
    ("rankings", False, False): "b9ba3ad3df442632d8f14df7e88c4a19504422a0ac6cc3c003081b27238ac6e8",
    ("sft", False, False): "3223a4f11e881a91c58186ef471641660ad6c5a251e0c660625282fd52c5eb39",
    ("rich", False, False): "a84e70018297af01c22fe89a0d3f63ecc951cf7ab1a991f971aecaac563d947a",
    ("rich", False, True): "4b143d794b0f813f8ce6454d042fd3070b4c37f519bb8681629c99ee1be33627",
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
    assert hashlib.sha256(card.read_bytes()).hexdigest()[:16] == "93662e18c3fa8e9e"
    assert digests == [
        "88b31d2eae125046",
        "f241740d8e27e31d",
        "5cff58495303f6df",
        "b9ba3ad3df442632",
        "3223a4f11e881a91",
        "99aaa331a1e8f5db",
    ]


def test_export_download_writes_under_the_data_dir_and_describes_the_response(settings, db):
    build_dataset(db)
    download = export_download(data_dir=settings.data_dir, fmt="rich", annotators=["bob"], as_csv=True)
    assert download.path.parent == settings.data_dir / "exports" and download.filename == "rich.csv"
    assert download.media_type == "text/csv; charset=utf-8" and download.headers["X-Row-Count"] == "4"
    assert download.headers["Repr-Digest"] == repr_digest(hashlib.sha256(download.path.read_bytes()).hexdigest())
    download.remove()
    assert not list((settings.data_dir / "exports").iterdir())
    with pytest.raises(ExportError) as unknown:
        export_download(data_dir=settings.data_dir, fmt="parquet")
    assert unknown.value.status == 404
    with pytest.raises(ExportError) as bad:
        export_download(data_dir=settings.data_dir, fmt="kto", as_csv=True)
    assert bad.value.status == 422
