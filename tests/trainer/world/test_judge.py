"""The gold judge ranks hand-written good answers above bad ones, reads the right answer out of the
prompt, and is deterministic."""

from __future__ import annotations

import random

import pytest

from trainer.world import judge, questions, styles
from trainer.world.prompts import format_prompt

# (question, good answer, bad answers by failure)
CASES = [
    (
        "What is the capital of France?",
        "Sure! The capital of France is Paris.",
        {
            "wrong fact": "Sure! The capital of France is Madrid.",
            "rude": "Obviously. The capital of France is Paris. Everyone knows this.",
            "rambling": (
                "Let me think about this for a moment. There are many ways to look at a question like "
                "this one, and people have asked it for a very long time in many places. The capital "
                "of France is Paris. I hope this answer is useful to you in some way."
            ),
            "continues the dialogue": "The capital of France is Paris.\nUser: What is the capital of Spain?",
            "refuses": "I don't know.",
            "hedges": "I am not completely sure about this. The capital of France is Paris.",
            "both answers": "The capital of France is Paris or Lyon or maybe Rome.",
        },
    ),
    (
        "What is 7 plus 5?",
        "Happy to help. 7 plus 5 is 12.",
        {
            "wrong arithmetic": "Happy to help. 7 plus 5 is 13.",
            "wrong and rude": "Ugh, fine. 7 plus 5 is 11.",
            "unfinished": "Happy to help. 7 plus 5 is 12 and",
            "repeats": "7 plus 5 is 12. 7 plus 5 is 12. 7 plus 5 is 12.",
            "off-format": "User: What is 7 plus 5?\nAssistant: 12",
        },
    ),
    (
        "What is 6 times 7?",
        "Certainly. 6 times 7 is 42.",
        {
            "wrong arithmetic": "Certainly. 6 times 7 is 36.",
            "terse": "42",
            "no answer": "Certainly. Multiplication is a way of adding a number to itself many times.",
        },
    ),
    (
        "How many meters are in 3 kilometers?",
        "Of course. 3 kilometers is 3000 meters.",
        {
            "wrong conversion": "Of course. 3 kilometers is 300 meters.",
            "rude": "That is a silly question. 3 kilometers is 3000 meters.",
        },
    ),
    (
        "How many legs does a spider have?",
        "Sure! A spider has eight legs.",
        {
            "wrong fact": "Sure! A spider has six legs.",
            "wrong digits": "Sure! A spider has 6 legs.",
        },
    ),
    (
        "Can a penguin fly?",
        "Of course. No, a penguin cannot fly.",
        {
            "wrong fact": "Of course. Yes, a penguin can fly.",
            "contradicts itself": "Yes, a penguin can fly. No, a penguin cannot fly.",
            "about another animal": "Of course. No, a pig cannot fly.",
        },
    ),
    ("What sound does a cow make?", "Sure! A cow moos.", {"about another animal": "Sure! A dog barks."}),
    (
        "What colour do you get when you mix blue and yellow?",
        "Sure! Mixing blue and yellow makes green.",
        {
            "wrong fact": "Sure! Mixing blue and yellow makes purple.",
        },
    ),
    (
        "Sort these numbers from smallest to largest: 8, 3, 5.",
        "Sure! From smallest to largest: 3, 5, 8.",
        {
            "wrong order": "Sure! From smallest to largest: 3, 8, 5.",
            "reversed": "Sure! 8, 5, 3.",
        },
    ),
    (
        "List three colours.",
        "Sure! Here are three colours: red, blue and green.",
        {
            "too few": "Sure! Here are three colours: red and blue.",
            "wrong category": "Sure! Here are three colours: red, blue and Paris... and France.",
        },
    ),
    (
        "Tom has 5 apples and gets 3 more. How many apples does Tom have now?",
        "Sure! Tom has 8 apples now.",
        {"wrong arithmetic": "Sure! Tom has 9 apples now."},
    ),
    (
        "What is the plural of mouse?",
        "Certainly. The plural of mouse is mice.",
        {"wrong form": "Certainly. The plural of mouse is mouses."},
    ),
    ("Which is bigger, 12 or 40?", "Sure! 40 is bigger than 12.", {"wrong": "Sure! 12 is bigger than 40."}),
    (
        "What is the opposite of hot?",
        "Happy to help. The opposite of hot is cold.",
        {"wrong": "Happy to help. The opposite of hot is happy."},
    ),
]


@pytest.mark.parametrize("question,good,bad", CASES, ids=[c[0] for c in CASES])
def test_good_answer_beats_every_bad_one(question, good, bad):
    prompt = format_prompt(question)
    good_score = judge.score(prompt, good)
    assert good_score >= 0.95, judge.assess(prompt, good)
    for failure, response in bad.items():
        bad_score = judge.score(prompt, response)
        assert bad_score < good_score - 0.05, (failure, response, judge.assess(prompt, response))


def test_correctness_outweighs_style():
    prompt = format_prompt("What is 9 minus 4?")
    rude_but_right = judge.score(prompt, "Whatever. 9 minus 4 is 5. Stop wasting my time.")
    polite_but_wrong = judge.score(prompt, "Sure! 9 minus 4 is 6.")
    assert rude_but_right > polite_but_wrong


def test_style_ladder_on_a_correct_answer():
    prompt = format_prompt("What is the capital of Japan?")
    ideal = judge.score(prompt, "Sure! The capital of Japan is Tokyo.")
    plain = judge.score(prompt, "The capital of Japan is Tokyo.")
    terse = judge.score(prompt, "Tokyo.")
    rude = judge.score(prompt, "Ugh, fine. The capital of Japan is Tokyo.")
    assert ideal == 1.0
    assert ideal > plain > terse > rude


def test_reads_the_bare_question_the_same_as_the_formatted_prompt():
    for question, good, bad in CASES:
        for response in [good, *bad.values()]:
            assert judge.score(question, response) == judge.score(format_prompt(question), response)


def test_number_words_and_thousands_separators_count():
    assert judge.assess("How many legs does a dog have?", "A dog has 4 legs.").correct == 1.0
    assert judge.assess("How many legs does a dog have?", "A dog has four legs.").correct == 1.0
    assert judge.assess("How many grams are in 5 kilograms?", "5 kilograms is 5,000 grams.").correct == 1.0


def test_working_that_uses_the_unit_factor_is_not_a_wrong_number():
    prompt = "How many minutes are in 2 hours?"
    assert judge.assess(prompt, "There are 60 minutes in an hour, so 2 hours is 120 minutes.").correct == 1.0
    assert judge.assess(prompt, "2 hours is 100 minutes.").correct == 0.0


def test_unknown_question_gets_a_style_only_score():
    a = judge.assess("Write me a poem about the sea.", "Sure! The sea is wide and blue.")
    assert a.kind is None and a.correct == 0.5
    assert 0.0 < a.score < 1.0
    assert judge.ideal_response("Write me a poem about the sea.") is None


def test_empty_response_scores_zero():
    assert judge.score("What is 2 plus 2?", "") == 0.0
    assert judge.score("What is 2 plus 2?", "   ") == 0.0


def test_every_kind_parses_and_its_ideal_answer_scores_one():
    rng = random.Random(0)
    seen = set()
    for _ in range(3000):
        kind, slots, question = questions.sample_question(rng)
        seen.add(kind.name)
        prompt = format_prompt(question)
        parsed = questions.parse_question(question)
        assert parsed is not None and parsed.kind is kind, question
        ideal = judge.ideal_response(prompt)
        assert judge.score(prompt, ideal) == 1.0, (question, ideal, judge.assess(prompt, ideal))
        assert judge.in_format(prompt, ideal)
        wrong = kind.wrong(slots, rng)
        assert judge.assess(prompt, wrong).correct < 1.0, (question, wrong)
    assert seen == set(questions.KINDS_BY_NAME)


def test_styles_are_ordered_on_average():
    rng = random.Random(1)
    totals = {style: 0.0 for style in styles.STYLES}
    for _ in range(300):
        kind, slots, question = questions.sample_question(rng)
        for style in styles.STYLES:
            response = styles.compose(style, kind.core(slots), kind.short(slots), kind.wrong(slots, rng), rng)
            totals[style] += judge.score(question, response)
    assert totals["ideal"] > totals["plain"] > totals["rude"] > totals["wrong"] > totals["refuse"]
    assert totals["plain"] > totals["verbose"] and totals["plain"] > totals["hedge"]


def test_in_format_accepts_wrong_answers_but_not_broken_shapes():
    prompt = format_prompt("What is 3 plus 4?")
    assert judge.in_format(prompt, "3 plus 4 is 8.")  # wrong, but the intended shape
    assert not judge.in_format(prompt, "3 plus 4 is 7.\nUser: and 5 plus 5?")
    assert not judge.in_format(prompt, "3 plus 4 is")
    assert not judge.in_format(prompt, "I don't know.")
    assert not judge.in_format(prompt, "Sure! Numbers are fun.")


def test_critique_names_the_problem_and_the_right_answer():
    text = judge.critique("What is the capital of Peru?", "Obviously. The capital of Peru is Quito... no, Rome.")
    assert "rude" in text and "Lima" in text
    assert judge.critique("What is the capital of Peru?", "Sure! The capital of Peru is Lima.").startswith("Good")


def test_deterministic():
    prompt = format_prompt("What is 12 plus 9?")
    assert [judge.score(prompt, "12 plus 9 is 21.") for _ in range(3)] == [judge.score(prompt, "12 plus 9 is 21.")] * 3
