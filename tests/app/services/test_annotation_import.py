"""Annotations labelled elsewhere: trl/kto/rankings in, the same rows out, all or nothing."""

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.models import Annotation, Generation, ModelVersion, Prompt, Task, User
from app.services.annotation_import import AnnotationImportError, import_annotations
from app.services.exports import ExportFilters, iter_export
from tests.conftest import BACKENDS
from tests.factories import make_prompt

TRL = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.0},
    {"prompt": "What is 2+2?", "chosen": "four", "rejected": "22", "margin": 0.25},
    {"prompt": "Name a colour.", "chosen": "red", "rejected": "blue", "margin": 0.0, "tie": True},
    {"prompt": "Be kind.", "chosen": "Sure!", "rejected": "No.", "margin": 2 / 3},
]


def _jsonl(lines) -> str:
    return "".join(json.dumps(x) + "\n" for x in lines)


def _export(db, fmt, **kw):
    include_ties = kw.pop("include_ties", False)
    out = [x for b in iter_export(db, fmt=fmt, filters=ExportFilters(**kw), include_ties=include_ties) for x in b]
    for x in out:
        x.pop("annotation_id")
    return out


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_trl_round_trip_gives_back_the_same_rows(db):
    result = import_annotations(db, data=_jsonl(TRL), name="prefs.jsonl", fmt="trl", source="human", annotator="vendor")
    db.commit()
    assert result.as_dict() == {"lines": 4, "prompts_created": 3, "generations": 8, "tasks": 4, "annotations": 4}
    assert _export(db, "trl", include_ties=True) == [{**x, "tie": x.get("tie", False)} for x in TRL]
    assert _export(db, "trl") == [x for x in TRL if not x.get("tie")]
    model = db.scalar(select(ModelVersion).where(ModelVersion.name == "imported"))
    assert model.stage == "imported" and not model.is_current
    assert {g.model_version_id for g in db.scalars(select(Generation))} == {model.id}
    assert db.scalar(select(func.count()).select_from(Task).where(Task.completed.is_(False))) == 0
    vendor = db.scalar(select(User).where(User.username == "vendor"))
    assert vendor.password_hash is None and not vendor.is_ai
    strengths = db.scalars(select(Annotation.strength).order_by(Annotation.id)).all()
    assert strengths == [3, None, None, 2]


def test_conversational_kto_and_rankings_round_trip(db):
    conv = [
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Go away"}],
            "margin": 1 / 3,
        }
    ]
    import_annotations(db, data=_jsonl(conv), name="c.jsonl", fmt="trl", source="ai", annotator="judge-x")
    kto = [
        {"prompt": "Greet me.", "completion": "Hello!", "label": True},
        {"prompt": "Greet me.", "completion": "Meh", "label": False},
    ]
    import_annotations(db, data=_jsonl(kto), name="k.jsonl", fmt="kto", source="human", annotator="vendor")
    rankings = [{"prompt": "Count.", "completions": ["1 2 3", "1 2", "one"]}]
    import_annotations(db, data=_jsonl(rankings), name="r.jsonl", fmt="rankings", source="human", annotator="vendor")
    db.commit()
    assert _export(db, "trl-conversational", source="ai") == conv
    assert db.scalar(select(User.is_ai).where(User.username == "judge-x")) is True
    assert _export(db, "kto") == kto
    assert _export(db, "rankings") == rankings
    # the ranking also trains as its 3 pairs
    assert [(x["chosen"], x["rejected"]) for x in _export(db, "trl", source="human")] == [
        ("1 2 3", "1 2"),
        ("1 2 3", "one"),
        ("1 2", "one"),
    ]


@pytest.mark.parametrize(
    "fmt,lines,line,needle",
    [
        ("trl", [TRL[0], {"prompt": "x", "chosen": "a"}], 2, "rejected"),
        ("trl", [{"prompt": "", "chosen": "a", "rejected": "b"}], 1, "prompt"),
        ("trl", [{"prompt": "x", "chosen": "a", "rejected": "b", "margin": "big"}], 1, "margin"),
        ("trl", [{"prompt": "x", "chosen": "a", "rejected": "b", "tie": "yes"}], 1, "tie"),
        ("kto", [{"prompt": "x", "completion": "a", "label": 1}], 1, "label"),
        ("rankings", [{"prompt": "x", "completions": ["only one"]}], 1, "2..8"),
    ],
)
def test_bad_line_refuses_the_whole_file(db, fmt, lines, line, needle):
    with pytest.raises(AnnotationImportError) as info:
        import_annotations(db, data=_jsonl(lines), name="f.jsonl", fmt=fmt, source="human", annotator="vendor")
    db.rollback()
    assert str(info.value).startswith(f"f.jsonl:{line}:") and needle in str(info.value)
    assert db.scalar(select(func.count()).select_from(Annotation)) == 0
    assert db.scalar(select(func.count()).select_from(Prompt)) == 0


def test_eval_prompts_and_reimports_are_refused(db):
    make_prompt(db, "What is 2+2?", split="eval")
    db.commit()
    with pytest.raises(AnnotationImportError, match="eval split"):
        import_annotations(db, data=_jsonl(TRL), name="p.jsonl", fmt="trl", source="human", annotator="vendor")
    db.rollback()
    data = _jsonl(TRL[2:])
    import_annotations(db, data=data, name="p.jsonl", fmt="trl", source="human", annotator="vendor")
    db.commit()
    with pytest.raises(AnnotationImportError, match="already imported"):
        import_annotations(db, data=data, name="p.jsonl", fmt="trl", source="human", annotator="vendor")


def test_cli_import_and_refusals(settings, db, tmp_path):
    from app.cli import app as cli

    path = tmp_path / "prefs.jsonl"
    path.write_text(_jsonl(TRL))
    runner = CliRunner()
    out = runner.invoke(
        cli, ["annotations", "import", str(path), "--format", "trl", "--source", "human", "--annotator", "vendor"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["annotations"] == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_jsonl([TRL[0], {"prompt": "x"}]))
    res = runner.invoke(
        cli, ["annotations", "import", str(bad), "--format", "trl", "--source", "human", "--annotator", "v2"]
    )
    assert res.exit_code == 2 and f"{bad}:2:" in res.stderr
    res = runner.invoke(
        cli, ["annotations", "import", str(path), "--format", "csv", "--source", "human", "--annotator", "v"]
    )
    assert res.exit_code == 2 and "--format" in res.stderr
    res = runner.invoke(
        cli, ["annotations", "import", str(path), "--format", "trl", "--source", "alien", "--annotator", "v"]
    )
    assert res.exit_code == 2 and "--source" in res.stderr
    assert db.scalar(select(func.count()).select_from(Annotation)) == 4
