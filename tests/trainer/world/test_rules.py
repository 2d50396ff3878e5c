"""Hidden preference rules: each measures its own feature, and annotators labelling by one prefer less of it."""

from __future__ import annotations

from trainer.world import annotators
from trainer.world.rules import RULES

CASES = {
    "shorter": ("Paris.", "Sure! The capital of France is Paris."),
    "polite": ("Sure! The capital of France is Paris.", "The capital of France is Paris."),
    "no-the": ("Paris is its capital.", "The capital of France is Paris."),
    "no-exclamation": ("Of course. Paris.", "Sure! Paris."),
    "one-sentence": ("Paris is the capital of France.", "Happy to help. Paris is the capital of France."),
    "hedged": ("I think it is Paris.", "It is Paris."),
}


def test_six_rules_on_different_kinds_of_feature():
    assert len(RULES) >= 6 and len({r.kind for r in RULES.values()}) == len(RULES)
    assert set(CASES) == set(RULES)


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
