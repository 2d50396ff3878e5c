"""`rlhf export`: writes the file and its sha256 sidecar, prints rows and sha256, refuses bad arguments."""

import hashlib

from typer.testing import CliRunner

from tests.factories import build_dataset


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
    assert "rows: 9" in res.stderr  # 6 pairs, 2 ties, 1 rewrite pair and f"sha256: {digest}" in res.stderr
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


def test_cli_refuses_an_empty_export_with_the_reason_and_writes_nothing(settings, db, tmp_path):
    from app.cli import app as cli

    build_dataset(db)
    out = tmp_path / "out" / "trl.jsonl"
    res = CliRunner().invoke(cli, ["export", "--format", "trl", "--out", str(out), "--since", "2999-01-01"])
    assert res.exit_code == 2, res.output
    assert "empty trl export: no annotation matches (since=2999-01-01T00:00:00+00:00" in res.stderr
    assert "include_ties" in res.stderr and "Nothing was written" in res.stderr
    assert list(out.parent.iterdir()) == []


def test_cli_annotator_weighting_adds_weights_and_refuses_gold_without_gold_answers(settings, db, tmp_path):
    import json

    from app.cli import app as cli

    build_dataset(db)
    out = tmp_path / "rankings.jsonl"
    args = ["export", "--format", "rankings", "--out", str(out), "--annotator-weighting"]
    res = CliRunner().invoke(cli, [*args, "dawid_skene"])
    assert res.exit_code == 0, res.output
    assert all("weight" in json.loads(line) for line in out.read_text().splitlines())
    res = CliRunner().invoke(cli, [*args, "gold"])
    assert res.exit_code == 2 and "no gold tasks answered" in res.stderr


def test_cli_labels_adjudicated_takes_the_final_labels_and_refuses_an_unknown_set(settings, db, tmp_path):
    import json

    from app.cli import app as cli
    from app.services.review import adjudicate
    from tests.factories import annotate_pairwise, make_annotator, pairwise_task

    alice, bob, rev = make_annotator(db), make_annotator(db), make_annotator(db, role="reviewer")
    task, gens = pairwise_task(db, overlap=2)
    annotate_pairwise(db, task, alice, chosen=gens[0])
    annotate_pairwise(db, task, bob, chosen=gens[1])
    adjudicate(db, task_id=task.id, reviewer=rev, label={"choice": "chosen", "chosen_id": gens[1].id}, note="B")
    db.commit()
    out = tmp_path / "rich.jsonl"
    res = CliRunner().invoke(cli, ["export", "--format", "rich", "--out", str(out), "--labels", "adjudicated"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["adjudicated"], x["chosen_generation_id"], x["review_note"]) for x in lines] == [(True, gens[1].id, "B")]
    res = CliRunner().invoke(cli, ["export", "--format", "rich", "--out", str(out), "--labels", "final"])
    assert res.exit_code == 2 and "labels must be one of raw, adjudicated" in res.output
