"""The margin of a pair: Llama 2's scale from strength, or the margin an imported line brought."""

from app.services.exports import MARGIN_BY_STRENGTH, margin_for


def test_margin_from_strength_or_the_imported_one():
    assert [margin_for(s) for s in (1, 2, 3)] == [1 / 3, 2 / 3, 1.0] == list(MARGIN_BY_STRENGTH.values())
    assert margin_for(None) == margin_for(None, {}) == margin_for(None, {"margin": None}) == 0.0
    assert margin_for(3, {"margin": 0.125}) == 0.125 and margin_for(1, {"margin": 2}) == 2.0
    assert isinstance(margin_for(1, {"margin": 2}), float)
