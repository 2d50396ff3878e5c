"""The margin of a preference pair: TRL's `margin` column, the reward gap the loss asks for,
-log σ(r_c - r_r - margin).

Following Llama 2's margin scale: strength 1 "slightly better" -> 1/3, 2 "clearly better" -> 2/3, 3 "much
better" -> 1.0; a choice with no strength, a ranking pair and a tie -> 0.0. An imported line keeps the margin it
came with (`meta.margin`).
"""

from __future__ import annotations

from typing import Any

MARGIN_BY_STRENGTH = {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def margin_for(strength: int | None, meta: dict[str, Any] | None = None) -> float:
    """The margin of a choice: the one it was imported with, else its strength's on the scale, else 0.0."""
    own = own_margin(meta) if meta else None
    return own if own is not None else MARGIN_BY_STRENGTH.get(strength, 0.0)


def own_margin(meta: dict[str, Any] | None) -> float | None:
    """The margin an imported line brought with it, if any."""
    own = (meta or {}).get("margin")
    return None if own is None else float(own)


def strength_for(margin: float) -> int | None:
    """The strength whose margin this is (an imported `trl` line's), or None when the margin is off the scale."""
    for strength, value in MARGIN_BY_STRENGTH.items():
        if abs(margin - value) < 1e-9:
            return strength
    return None
