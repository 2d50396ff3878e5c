"""Round snapshots: exports by the round's filters + prompts + a manifest whose sha256 and rows match the files."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from app.services.snapshots import (
    SnapshotError,
    SnapshotFilters,
    snapshot_archive,
    verify_snapshot,
    write_snapshot,
)
from tests import factories
from tests.conftest import BACKENDS
from tests.factories import label_preferences, make_prompts


@pytest.fixture
def snapshot_dir(db, tmp_path):
    """A snapshot of three labelled train prompts (and one eval prompt)."""
    human = factories.make_annotator(db)
    label_preferences(db, make_prompts(db, train=3, eval=1)["train"], annotator=human)
    db.commit()
    out = tmp_path / "snapshot"
    write_snapshot(db, out=out, filters=SnapshotFilters(), round_id=1)
    return out


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_snapshot_files_match_manifest_and_hold_train_data_only(db, tmp_path):
    human, ai = factories.make_annotator(db), factories.make_annotator(db, is_ai=True)
    prompts = make_prompts(db, train=6, eval=3)
    human_anns = label_preferences(db, prompts["train"][:4], annotator=human)
    label_preferences(db, prompts["train"][4:], annotator=ai, source="ai")
    label_preferences(db, prompts["eval"], annotator=human)  # eval prompts never reach training files
    task, gens = factories.pairwise_task(db, texts=("a", "b", "c"))
    ranking = factories.annotate_ranking(db, task, human, ranking=list(gens), rewrite="a b c")
    db.commit()

    out = tmp_path / "snap"
    manifest = write_snapshot(db, out=out, filters=SnapshotFilters(source="human"), round_id=7)

    assert verify_snapshot(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "manifest.json",
            "trl.jsonl",
            "rankings.jsonl",
            "kto.jsonl",
            "sft.jsonl",
            "rewrites.jsonl",
            "prompts.jsonl",
            "eval_prompts.jsonl",
        ]
    )
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == meta["sha256"]
        assert len(_rows(out / name)) == meta["rows"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    trl = _rows(out / "trl.jsonl")
    # 4 human pairwise choices on train prompts + 3 pairs of the human ranking; no AI, no eval prompts
    assert len(trl) == 4 + 3
    assert {r["annotation_id"] for r in trl} == {a.id for a in human_anns} | {ranking.id}
    eval_texts = {p.text for p in prompts["eval"]}
    assert not eval_texts & {r["prompt"] for r in trl}
    assert manifest["max_annotation_id"] == ranking.id
    assert manifest["filters"]["source"] == "human"
    assert manifest["rows"]["prompts.jsonl"] == 6 + 1  # the ranking task's prompt is a train prompt too
    assert {r["prompt"] for r in _rows(out / "eval_prompts.jsonl")} == eval_texts
    assert _rows(out / "rankings.jsonl")[0]["completions"] == ["a", "b", "c"]
    # the rewrite's pair is kept apart from the choices and rankings: a round uses it when it says so
    assert [(r["chosen"], r["rejected"], r["annotation_id"]) for r in _rows(out / "rewrites.jsonl")] == [
        ("a b c", "a", ranking.id)
    ]
    assert manifest["annotations"]["rewrites"] == 1


def test_snapshot_is_bounded_by_its_annotation_id_and_refuses_an_existing_dir(db, tmp_path):
    human = factories.make_annotator(db)
    prompts = make_prompts(db, train=4, eval=1)
    first = label_preferences(db, prompts["train"][:2], annotator=human)
    db.commit()
    manifest = write_snapshot(db, out=tmp_path / "a", filters=SnapshotFilters(), round_id=1)
    assert manifest["max_annotation_id"] == first[-1].id
    label_preferences(db, prompts["train"][2:], annotator=human)
    db.commit()
    later = write_snapshot(db, out=tmp_path / "b", filters=SnapshotFilters(), round_id=2)
    assert later["rows"]["trl.jsonl"] == 4 and manifest["rows"]["trl.jsonl"] == 2
    with pytest.raises(SnapshotError, match="already exists"):
        write_snapshot(db, out=tmp_path / "a", filters=SnapshotFilters(), round_id=3)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_empty_database_gives_an_empty_but_complete_snapshot(db, tmp_path):
    manifest = write_snapshot(db, out=tmp_path / "s", filters=SnapshotFilters(), round_id=1)
    assert manifest["max_annotation_id"] is None
    assert all(meta["rows"] == 0 for meta in manifest["files"].values())
    assert verify_snapshot(tmp_path / "s") == []


def test_verify_reports_changed_missing_and_extra_files(snapshot_dir):
    out = snapshot_dir
    with open(out / "trl.jsonl", "a") as fh:
        fh.write('{"prompt": "x", "chosen": "y", "rejected": "z", "margin": 0.0, "annotation_id": 0}\n')
    (out / "kto.jsonl").unlink()
    (out / "notes.txt").write_text("hello")
    problems = verify_snapshot(out)
    assert "trl.jsonl: sha256 differs from the manifest" in problems
    assert "kto.jsonl: missing" in problems
    assert "notes.txt: not in the manifest" in problems


def test_archive_holds_every_file_and_is_deterministic(snapshot_dir):
    out = snapshot_dir
    archive = snapshot_archive(out)
    first = archive.read_bytes()
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile("snapshot/trl.jsonl").read() == (out / "trl.jsonl").read_bytes()
    assert names == sorted(f"snapshot/{p.name}" for p in out.iterdir())
    archive.unlink()
    assert snapshot_archive(out).read_bytes() == first


def test_an_adjudicated_snapshot_trains_on_the_final_labels(db, tmp_path):
    from app.services.review import adjudicate

    alice, bob, rev = factories.make_annotator(db), factories.make_annotator(db), factories.make_annotator(db)
    task, gens = factories.pairwise_task(db, texts=("right", "wrong"), overlap=2)
    factories.annotate_pairwise(db, task, alice, chosen=gens[0])
    last = factories.annotate_pairwise(db, task, bob, chosen=gens[1])
    adjudicate(db, task_id=task.id, reviewer=rev, label={"choice": "chosen", "chosen_id": gens[0].id}, note="A")
    db.commit()
    raw = write_snapshot(db, out=tmp_path / "raw", filters=SnapshotFilters(), round_id=1)
    final = write_snapshot(db, out=tmp_path / "final", filters=SnapshotFilters(labels="adjudicated"), round_id=2)
    assert raw["rows"]["trl.jsonl"] == 2 and final["filters"]["labels"] == "adjudicated"
    assert [(r["chosen"], r["rejected"], r["annotation_id"]) for r in _rows(tmp_path / "final" / "trl.jsonl")] == [
        ("right", "wrong", last.id)
    ]
    assert final["max_annotation_id"] == last.id and verify_snapshot(tmp_path / "final") == []
