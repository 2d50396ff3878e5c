"""Hidden preference rules: what a team might want that the world's gold judge does not say.

Each rule names one feature of a response that its annotators dislike (a count or a 0/1 flag); they label by it
alone: the response with less of it wins (trainer.world.annotators with the rule's `score` as the scorer; ties
are the choice model's coin flips). bench/preference_suite.py labels with one rule at a time and measures the same
feature on the policy before and after a round, so a round has learnt the rule when the feature's mean falls.

The rules cover different kinds of feature (style, politeness, a word, format, structure, content), and several
oppose what the SFT model's likelihood favours: the demonstrations open with "Sure!"-like phrases, say "the" in
most answers and state facts plainly, so avoiding "!" or "the" and hedging are all less likely under the SFT model
than their opposites. A kind may have several candidate rules: the suite runs those whose feature varies within
most prompts' SFT samples (bench/preference_suite.py's screen, measured before any round), because annotators can
only express a rule where a task's responses differ in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from trainer.world.styles import FILLERS, HEDGE_MARKERS, HEDGES, POLITE_MARKERS, POLITE_OPENERS, RUDE_OPENERS

# Sentences that say nothing about the question (the world's filler and closing phrases), and praise of the
# question itself: what a team that dislikes padding or flattery would mark down.
FILLER_MARKERS = (
    "let me think",
    "people wonder",
    "many ways to look",
    "do my best",
    "step by step",
    "interesting question",
    "hope this answer",
    "let me know",
    "thank you for asking",
    "all i can say",
)
PRAISE_MARKERS = ("good question", "great question", "glad you asked", "interesting question")
# What an answer may open with before it answers: a greeting, a filler, a hedge, a jibe.
PREAMBLES = tuple(p.lower() for p in POLITE_OPENERS + FILLERS + HEDGES + RUDE_OPENERS)


def _has_any(text: str, patterns: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{p}", text) for p in patterns)


def words(response: str) -> float:
    return float(len(response.split()))


def not_polite(response: str) -> float:
    return float(not _has_any(response.lower(), POLITE_MARKERS))


def _says(word: str) -> Callable[[str], float]:
    def says(response: str) -> float:
        return float(re.search(rf"\b{word}\b", response.lower()) is not None)

    return says


def exclaims(response: str) -> float:
    return float("!" in response)


def several_sentences(response: str) -> float:
    return float(len([s for s in re.split(r"(?<=[.!?])\s+", response.strip()) if s]) > 1)


def not_hedged(response: str) -> float:
    return float(not _has_any(response.lower(), HEDGE_MARKERS))


def preamble(response: str) -> float:
    return float(response.strip().lower().startswith(PREAMBLES))


def pads(response: str) -> float:
    return float(_has_any(response.lower(), FILLER_MARKERS))


def praises_question(response: str) -> float:
    return float(_has_any(response.lower(), PRAISE_MARKERS))


@dataclass(frozen=True)
class HiddenRule:
    name: str
    kind: str  # the kind of feature: style, politeness, word, format, structure, content
    feature_name: str  # what `feature` measures: the thing the annotators dislike
    feature: Callable[[str], float]
    scale: float = 1.0  # feature units per gold-score unit in the choice model (a word is worth 0.1)

    def score(self, prompt: str, response: str) -> float:
        """The annotators' utility (the choice model's `gold`): less of the feature is better."""
        return -self.feature(response) / self.scale


RULES: dict[str, HiddenRule] = {
    r.name: r
    for r in (
        HiddenRule("shorter", "style", "words per response", words, scale=10.0),
        HiddenRule("polite", "politeness", "share without a polite phrase", not_polite),
        HiddenRule("no-the", "word", 'share that say "the"', _says("the")),
        HiddenRule("no-you", "word", 'share that say "you"', _says("you")),
        HiddenRule("no-this", "word", 'share that say "this"', _says("this")),
        HiddenRule("no-question", "word", 'share that say "question"', _says("question")),
        HiddenRule("no-exclamation", "format", 'share with a "!"', exclaims),
        HiddenRule("one-sentence", "structure", "share of more than one sentence", several_sentences),
        HiddenRule("answer-first", "structure", "share that open with something other than the answer", preamble),
        HiddenRule("hedged", "content", "share that state the answer without a hedge", not_hedged),
        HiddenRule("no-padding", "content", "share with a sentence that says nothing about the question", pads),
        HiddenRule("no-flattery", "content", "share that praise the question", praises_question),
    )
}
