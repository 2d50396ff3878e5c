"""How an assistant may phrase an answer: the stock phrases of each style.

The corpus writes answers in these styles (ideal, plain, terse, verbose, hedging, rude, wrong,
refusing); the judge recognises the same phrases to grade politeness, helpfulness and concision,
and strips them before it checks the facts. None of these phrases contains a word that is a
possible answer in the world (a colour, a number, an opposite, a planet...), so a filler can never
be mistaken for an answer.
"""

from __future__ import annotations

import random

POLITE_OPENERS = ("Sure!", "Of course.", "Happy to help.", "Good question!", "Certainly.", "Glad you asked.")
FILLERS = (
    "Let me think about this for a moment.",
    "This is something that a lot of people wonder about.",
    "There are many ways to look at a question like this one.",
    "I will do my best to explain it as well as I can.",
    "To answer this, it helps to go step by step.",
    "This is a very interesting question to think about.",
)
CLOSING_FILLERS = (
    "I hope this answer is useful to you in some way.",
    "Please let me know if you have any other questions about this or anything else.",
    "Thank you for asking me this question today.",
    "That is all I can say about it for now.",
)
HEDGES = (
    "I am not completely sure about this.",
    "I think so, but I could be wrong.",
    "Maybe I am wrong here.",
)
RUDE_OPENERS = ("Obviously.", "Ugh, fine.", "That is a silly question.", "Whatever.")
RUDE_CLOSERS = ("Everyone knows this.", "Figure it out yourself next time.", "Stop wasting my time.")
REFUSALS = ("I don't know.", "I cannot help with that.", "You should look that up yourself.", "No idea, sorry.")

# What the judge looks for beyond the stock phrases: regular expressions over the lower-cased
# answer, wrapped in word boundaries ("sure" only as an opener, not in "not sure").
POLITE_MARKERS = (
    r"sure[!,.]",
    "of course",
    "happy to help",
    "glad to help",
    "good question",
    "great question",
    "certainly",
    "glad you asked",
    "thank you",
    "thanks",
    "please",
)
RUDE_MARKERS = (
    "obviously",
    "ugh",
    "silly question",
    "stupid",
    "dumb",
    "whatever",
    "everyone knows",
    "figure it out",
    "wasting my time",
    "look that up yourself",
    "not my problem",
)
HEDGE_MARKERS = (
    "not completely sure",
    "not sure",
    "i think",
    "maybe",
    "i guess",
    "probably",
    "might be wrong",
    "could be wrong",
)
REFUSAL_MARKERS = ("i don't know", "i do not know", "cannot help", "can't help", "no idea", "look that up")

STOCK_PHRASES = POLITE_OPENERS + FILLERS + CLOSING_FILLERS + HEDGES + RUDE_OPENERS + RUDE_CLOSERS + REFUSALS

STYLES = ("ideal", "plain", "terse", "verbose", "hedge", "rude", "wrong", "refuse")


def compose(style: str, core: str, short: str, wrong_core: str, rng: random.Random) -> str:
    """One answer in `style`, from the answer sentence `core`, the bare answer `short` and a wrong
    answer sentence `wrong_core`."""
    if style == "ideal":
        return f"{rng.choice(POLITE_OPENERS)} {core}"
    if style == "plain":
        return core
    if style == "terse":
        return short
    if style == "verbose":
        fillers = rng.sample(FILLERS, rng.randint(1, 2))
        closing = rng.sample(CLOSING_FILLERS, rng.randint(1, 2))
        opener = [rng.choice(POLITE_OPENERS)] if rng.random() < 0.5 else []
        return " ".join(opener + fillers + [core] + closing)
    if style == "hedge":
        hedge = rng.choice(HEDGES)
        return f"{hedge} {core}" if rng.random() < 0.5 else f"{core} {hedge}"
    if style == "rude":
        parts = [rng.choice(RUDE_OPENERS), core]
        if rng.random() < 0.5:
            parts.append(rng.choice(RUDE_CLOSERS))
        return " ".join(parts)
    if style == "wrong":
        return f"{rng.choice(POLITE_OPENERS)} {wrong_core}" if rng.random() < 0.5 else wrong_core
    if style == "refuse":
        return rng.choice(REFUSALS)
    raise ValueError(f"unknown style {style!r}")
