"""The dataset card written beside an export."""

from app.services.exports import ExportFilters, write_card, write_export
from tests.factories import build_dataset


def test_card_has_provenance_counts_filters_agreement(db, tmp_path):
    build_dataset(db)
    result = write_export(db, fmt="trl", out=tmp_path / "trl.jsonl", filters=ExportFilters(source="human"))
    card = write_card(db, result=result).read_text()
    assert "rlhf-studio export: `trl`" in card and result.sha256 in card and '- `source`: "human"' in card
    assert f"{result.rows} lines" in card and "| pairwise | nominal |" in card and "annotators: 2" in card
