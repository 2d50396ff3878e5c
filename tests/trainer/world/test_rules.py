"""Hidden preference rules: each measures its own feature, and annotators labelling by one prefer less of it."""

from __future__ import annotations

from trainer.world import annotators
from trainer.world.rules import RULES

CASES = {
    "shorter": ("Paris.", "Sure! The capital of France is Paris."),
    "polite": ("Sure! The capital of France is Paris.", "The capital of France is Paris."),
    "no-the": ("Paris is its capital.", "The capital of France is Paris."),
    "no-you": ("Paris.", "Glad you asked. Paris."),
    "no-this": ("Paris.", "To answer this, it helps to go step by step. Paris."),
    "no-question": ("Paris.", "Good question! Paris."),
    "no-exclamation": ("Of course. Paris.", "Sure! Paris."),
    "one-sentence": ("Paris is the capital of France.", "Happy to help. Paris is the capital of France."),
    "answer-first": ("Paris is the capital. Happy to help.", "Happy to help. Paris is the capital."),
    "hedged": ("I think it is Paris.", "It is Paris."),
    "no-padding": ("Of course. Paris.", "Paris. I hope this answer is useful to you in some way."),
    "no-flattery": ("Of course. Paris.", "Glad you asked. Paris."),
}


def test_rules_cover_six_kinds_of_feature():
    assert {r.kind for r in RULES.values()} == {"style", "politeness", "word", "format", "structure", "content"}
    assert set(CASES) == set(RULES)


def test_a_word_counts_only_as_a_whole_word():
    assert RULES["no-the"].feature("They are there.") == 0.0 and RULES["no-the"].feature("The end.") == 1.0
    assert RULES["no-you"].feature("Your turn.") == 0.0 and RULES["no-question"].feature("Any questions?") == 0.0


def test_each_rule_prefers_the_response_with_less_of_its_feature():
    person = annotators.Annotator(name="a", noise=0.0)
    for name, (liked, disliked) in CASES.items():
        rule = RULES[name]
        assert rule.feature(liked) < rule.feature(disliked), name
        for order in ((liked, disliked), (disliked, liked)):
            lab = annotators.label(person, "User: What is the capital of France?\nAssistant:", order, key="k",
                                   scorer=rule.score)  # fmt: skip
            assert order[lab.choice] == liked, name
    assert RULES["shorter"].feature("one two three") == 3.0
