"""The gold judge of the embedded world: `score(prompt, response) -> float` in [0, 1].

It reads the question out of the prompt (the formatted "User: ...\\nAssistant:" prompt or the bare
question), recovers what is asked from the world's own templates (a facts-table lookup, the sum,
the conversion...), and grades the response on four axes, then subtracts format penalties:

    score = 0.45·correct + 0.20·helpful + 0.15·concise + 0.20·polite − penalties, clipped to [0, 1]

- correct (0..1): the right answer is given and no contradicting one (another capital, another
  number that is neither in the question nor part of the working); lists earn a share per valid
  item; outside the world (a question no template matches) it is 0.5.
- helpful (0..1): 0 if no answer of the expected kind is found or the response refuses;
  −0.4 when it hedges ("I am not completely sure"), −0.2 when it is a bare answer of under three
  words instead of a sentence.
- concise (0..1): 1 up to three words longer than the ideal answer, then −0.05 a word (0 at 20
  words over).
- polite (0..1): 0 with a rude marker ("obviously", "silly question"...), 1 with a friendly one
  ("Sure!", "Happy to help."), 0.5 when neutral.
- penalties: 0.3 if the response carries on the dialogue ("User:"/"Assistant:"), 0.15 per repeated
  sentence (at most 0.45), 0.1 if it does not end with . ! or ?. An empty response scores 0.

So the ideal answer — a friendly opener and one sentence with the right answer — scores 1.0, and a
correct answer always beats a wrong one of the same style. Deterministic: a pure function of its
two strings. Used for evaluation and simulated annotators, never as a training signal unless a
round is explicitly set to use it as AI feedback.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from trainer.world import questions, styles
from trainer.world.prompts import question_of

W_CORRECT, W_HELPFUL, W_CONCISE, W_POLITE = 0.45, 0.20, 0.15, 0.20
MAX_WORDS_IN_FORMAT = 60


@dataclass(frozen=True)
class Assessment:
    score: float
    correct: float
    helpful: float
    concise: float
    polite: float
    penalty: float
    issues: tuple[str, ...]
    kind: str | None  # the question kind, None outside the world


def _has_marker(text: str, markers: tuple[str, ...]) -> bool:
    return any(re.search(r"(?<![a-z])" + marker + r"(?![a-z])", text) for marker in markers)


def _strip_stock_phrases(response: str) -> str:
    """The response without the style phrases, so a filler is never read as an answer."""
    text = response
    for phrase in sorted(styles.STOCK_PHRASES, key=len, reverse=True):
        text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
    return " ".join(text.split())


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"[.!?]+", text) if s.strip()]


def _words(text: str) -> int:
    return len(text.split())


def ideal_response(prompt: str) -> str | None:
    """The answer the judge would give: a friendly opener and the answer sentence (None outside the
    world). Deterministic; simulated annotators use it as their rewrite."""
    parsed = questions.parse_question(question_of(prompt))
    if parsed is None:
        return None
    opener = styles.POLITE_OPENERS[zlib.crc32(parsed.question.encode()) % len(styles.POLITE_OPENERS)]
    return f"{opener} {parsed.kind.core(parsed.slots)}"


def assess(prompt: str, response: str) -> Assessment:
    """The score and its parts, with the issues found (for critiques and debugging)."""
    question = question_of(prompt)
    parsed = questions.parse_question(question)
    text = " ".join(response.split())
    lower = text.lower()
    if not text:
        return Assessment(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ("empty",), parsed.kind.name if parsed else None)
    issues: list[str] = []

    content = _strip_stock_phrases(text)
    refuses = _has_marker(lower, styles.REFUSAL_MARKERS)
    if parsed is not None:
        check = parsed.kind.check(parsed.slots, parsed.question, content)
        correct, answered = check.correct, check.answered
        budget = _words(ideal_response(prompt) or "") + 3
    else:
        correct, answered = 0.5, bool(content) and not refuses
        budget = 40
    if not answered:
        issues.append("refuses" if refuses else "no answer")
    elif correct == 0.0:
        issues.append("wrong")
    elif correct < 1.0:
        issues.append("partly wrong")

    helpful = 1.0 if answered and not refuses else 0.0
    if helpful and _has_marker(lower, styles.HEDGE_MARKERS):
        helpful -= 0.4
        issues.append("hedges")
    if helpful and _words(content) < 3:
        helpful -= 0.2
        issues.append("terse")

    extra = max(0, _words(text) - budget)
    concise = max(0.0, 1.0 - extra / 20)
    if extra:
        issues.append("too long")

    if _has_marker(lower, styles.RUDE_MARKERS):
        polite = 0.0
        issues.append("rude")
    elif _has_marker(lower, styles.POLITE_MARKERS):
        polite = 1.0
    else:
        polite = 0.5
        issues.append("curt")

    penalty = 0.0
    if "user:" in lower or "assistant:" in lower:
        penalty += 0.3
        issues.append("continues the dialogue")
    sentences = _sentences(text)
    repeats = len(sentences) - len(set(sentences))
    if repeats:
        penalty += min(0.45, 0.15 * repeats)
        issues.append("repeats itself")
    if text[-1] not in ".!?":
        penalty += 0.1
        issues.append("unfinished")

    total = W_CORRECT * correct + W_HELPFUL * helpful + W_CONCISE * concise + W_POLITE * polite - penalty
    return Assessment(
        round(min(1.0, max(0.0, total)), 6),
        correct,
        helpful,
        concise,
        polite,
        penalty,
        tuple(issues),
        parsed.kind.name if parsed else None,
    )


def score(prompt: str, response: str) -> float:
    """Gold score in [0, 1] of `response` to `prompt`: correct, helpful, concise, polite (see the
    module docstring for the exact formula)."""
    return assess(prompt, response).score


def in_format(prompt: str, response: str) -> bool:
    """Whether a response has the intended shape, right or wrong: a single assistant turn of at most
    60 words that ends a sentence, does not repeat itself, and offers an answer of the kind asked."""
    a = assess(prompt, response)
    shape_issues = {"empty", "no answer", "refuses", "continues the dialogue", "repeats itself", "unfinished"}
    return not shape_issues.intersection(a.issues) and _words(response) <= MAX_WORDS_IN_FORMAT


_CRITIQUES = {
    "wrong": "The answer is wrong.",
    "partly wrong": "The answer is partly wrong.",
    "no answer": "It does not answer the question.",
    "refuses": "It refuses to answer a simple question.",
    "hedges": "It sounds unsure about something it should know.",
    "terse": "Please answer in a full sentence.",
    "too long": "It is too long; just give the answer.",
    "rude": "The tone is rude.",
    "curt": "A friendlier tone would help.",
    "continues the dialogue": "It keeps writing the user's next turn.",
    "repeats itself": "It repeats itself.",
    "unfinished": "It stops in the middle of a sentence.",
    "empty": "The response is empty.",
}


def critique(prompt: str, response: str) -> str:
    """A short critique naming what is wrong with the response and, when the answer is wrong, the
    right answer."""
    a = assess(prompt, response)
    parts = [_CRITIQUES[issue] for issue in a.issues]
    if {"wrong", "partly wrong", "no answer", "refuses"}.intersection(a.issues):
        parsed = questions.parse_question(question_of(prompt))
        if parsed is not None:
            parts.append(f"Correct: {parsed.kind.core(parsed.slots)}")
    return " ".join(parts) if parts else "Good answer: correct, friendly and to the point."
