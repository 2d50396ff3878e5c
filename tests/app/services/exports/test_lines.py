"""Export lines with annotator weights: the preference formats gain `weight`, the rest and unweighted exports are
unchanged."""

import json

from app.services.exports import ExportFilters, iter_export, write_export
from tests.factories import build_dataset


def _lines(db, fmt, weight_of=None):
    return [line for batch in iter_export(db, fmt=fmt, weight_of=weight_of) for line in batch]


def test_weights_reach_each_preference_line_by_its_annotator(db, tmp_path):
    data = build_dataset(db)
    weight = {data.alice.id: 0.9, data.bob.id: 0.25}.get

    def weight_of(user_id):
        return weight(user_id, 1.0)

    by_id = {a.id: a.user_id for a in (data.a1, data.a2, data.a3, data.a4, data.a5, data.a6, data.a7, data.a8)}
    for fmt in ("trl", "trl-conversational", "rankings", "kto", "rich"):
        plain, weighted = _lines(db, fmt), _lines(db, fmt, weight_of)
        assert plain and all("weight" not in line for line in plain), fmt
        assert [{k: v for k, v in line.items() if k != "weight"} for line in weighted] == plain, fmt
        for line in weighted:
            assert line["weight"] == weight_of(by_id[line["annotation_id"]]), (fmt, line)
    assert all("weight" not in line for line in _lines(db, "sft", weight_of))  # demonstrations take no weight
    # the written file (the hot path's text lines) carries them too
    out = write_export(db, fmt="trl", out=tmp_path / "trl.jsonl", filters=ExportFilters(), weight_of=weight_of)
    written = [json.loads(x) for x in out.path.read_text().splitlines()]
    assert written == _lines(db, "trl", weight_of)
    assert {line["weight"] for line in written} == {0.9, 0.25, 1.0}
