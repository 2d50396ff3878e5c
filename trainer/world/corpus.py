"""Pretraining text and SFT demonstrations, generated from the world's facts.

Pretraining documents are short readable English: encyclopedia-like paragraphs (countries, animals,
colours, opposites, science, plurals), arithmetic and unit-conversion sheets, little counting
stories, and single-turn dialogues "User: ...\\nAssistant: ..." whose answers come in every style,
good and bad (`styles.STYLES`). SFT demonstrations are `{prompt, completion}` pairs in the same
dialogue format, all correct but of mixed quality: most ideal (friendly and to the point), some
plain, terse, long-winded, hedging or rude, so the SFT model is decent but leaves RLHF room.

Dialogues never use an eval prompt's question.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from trainer.world import facts, questions, styles
from trainer.world.prompts import format_prompt
from trainer.world.questions import article, capitalise, number_word

# Style mixes (weights over styles.STYLES order: ideal, plain, terse, verbose, hedge, rude, wrong, refuse)
PRETRAIN_STYLE_WEIGHTS = (0.34, 0.22, 0.10, 0.12, 0.08, 0.08, 0.04, 0.02)
SFT_STYLE_WEIGHTS = (0.45, 0.20, 0.10, 0.15, 0.05, 0.05, 0.0, 0.0)
DIALOGUE_SHARE = 0.4  # of pretraining documents

_PRONOUNS = {
    "Tom": "He",
    "Sam": "He",
    "Ben": "He",
    "Leo": "He",
    "Max": "He",
    "Anna": "She",
    "Lucy": "She",
    "Mia": "She",
    "Emma": "She",
    "Nora": "She",
}


def _sentences(rng: random.Random, pool: list[str], low: int, high: int) -> str:
    return " ".join(rng.sample(pool, min(len(pool), rng.randint(low, high))))


def country_doc(rng: random.Random) -> str:
    country = rng.choice(list(facts.COUNTRIES))
    capital, continent = facts.COUNTRIES[country]
    neighbours = rng.sample(
        [c for c, (_, cont) in facts.COUNTRIES.items() if cont == continent and c != country] or [country], 1
    )
    pool = [
        f"The capital of {country} is {capital}.",
        f"{capital} is the capital city of {country}.",
        f"Many people visit {capital} every year.",
        f"The government of {country} meets in {capital}.",
    ]
    intro = f"{country} is a country in {continent}."
    extra = (
        f" {neighbours[0]} is also in {continent}, and its capital is {facts.CAPITALS[neighbours[0]]}."
        if neighbours[0] != country and rng.random() < 0.5
        else ""
    )
    return f"{intro} {_sentences(rng, pool, 2, 3)}{extra}"


def animal_doc(rng: random.Random) -> str:
    animal = rng.choice(list(facts.ANIMALS))
    cls, legs, sound, flies = facts.ANIMALS[animal]
    a = capitalise(article(animal))
    pool = [
        f"{a} {animal} is {article(cls)} {cls}.",
        f"{a} {animal} {sound}." if sound != "makes no sound" else f"{a} {animal} is mostly silent.",
        f"{a} {animal} can fly." if flies else f"{a} {animal} cannot fly.",
    ]
    if legs:
        pool.append(f"{a} {animal} has {number_word(legs)} legs.")
    return f"This is about the {animal}. {_sentences(rng, pool, 2, 4)}"


def colour_doc(rng: random.Random) -> str:
    pool = [f"{capitalise(thing)} is {colour}." for thing, colour in facts.THING_COLOURS.items()]
    pool += [f"If you mix {a} and {b}, you get {c}." for (a, b), c in facts.COLOUR_MIXES.items()]
    return _sentences(rng, pool, 3, 6)


def opposites_doc(rng: random.Random) -> str:
    pool = [f"The opposite of {a} is {b}." for a, b in facts.OPPOSITES.items()]
    pool += [f"{capitalise(a)} and {b} are opposites." for a, b in facts.OPPOSITE_PAIRS]
    return _sentences(rng, pool, 3, 6)


def science_doc(rng: random.Random) -> str:
    return _sentences(rng, [sentence for _, sentence, _, _ in facts.SCIENCE.values()], 3, 5)


def plural_doc(rng: random.Random) -> str:
    pool = []
    for noun, (plural, _) in facts.PLURALS.items():
        pool.append(f"One {noun}, two {plural}.")
        pool.append(f"The plural of {noun} is {plural}.")
    return _sentences(rng, pool, 3, 5)


def arithmetic_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(4, 8)):
        op = rng.choice(["plus", "minus", "times"])
        if op == "plus":
            a, b = rng.randint(0, 10), rng.randint(0, 10)
            c = a + b
        elif op == "minus":
            a = rng.randint(0, 12)
            b = rng.randint(0, a)
            c = a - b
        else:
            a, b = rng.randint(1, 6), rng.randint(1, 6)
            c = a * b
        symbol = {"plus": "+", "minus": "-", "times": "x"}[op]
        lines.append(f"{a} {op} {b} is {c}." if rng.random() < 0.7 else f"{a} {symbol} {b} = {c}.")
    return " ".join(lines)


def story_doc(rng: random.Random) -> str:
    name, item = rng.choice(facts.PEOPLE), rng.choice(facts.ITEMS)
    pronoun = _PRONOUNS[name]
    if rng.random() < 0.5:
        a, b = rng.randint(2, 10), rng.randint(2, 5)
        return f"{name} has {a} {item}. {pronoun} gets {b} more. Now {name} has {a + b} {item}."
    a = rng.randint(4, 10)
    b = rng.randint(2, a - 2)
    return f"{name} has {a} {item}. {pronoun} gives {b} away. Now {name} has {a - b} {item} left."


def conversion_doc(rng: random.Random) -> str:
    (big, small), factor = rng.choice(list(facts.CONVERSIONS.items()))
    lines = [f"There are {factor} {small} in one {facts.UNIT_SINGULAR[big]}."]
    for n in sorted(rng.sample(range(2, 11), rng.randint(2, 4))):
        lines.append(f"{n} {big} is {n * factor} {small}.")
    return " ".join(lines)


def numbers_doc(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.4:
        a = rng.randint(1, 20)
        seq = ", ".join(str(n) for n in range(a, a + rng.randint(3, 7)))
        return f"Counting from {seq.split(', ')[0]} to {seq.split(', ')[-1]}: {seq}."
    if choice < 0.7:
        nums = rng.sample(range(1, 31), rng.randint(3, 4))
        return (
            f"The numbers {', '.join(map(str, nums))} from smallest to largest are "
            f"{', '.join(map(str, sorted(nums)))}. From largest to smallest they are "
            f"{', '.join(map(str, sorted(nums, reverse=True)))}."
        )
    a, b = rng.sample(range(1, 31), 2)
    return f"{max(a, b)} is bigger than {min(a, b)}, and {min(a, b)} is smaller than {max(a, b)}."


def list_doc(rng: random.Random) -> str:
    category = rng.choice(list(facts.LIST_CATEGORIES))
    noun, members = facts.LIST_CATEGORIES[category]
    items = rng.sample(list(members), rng.randint(3, 5))
    return f"Some {noun} are {', '.join(items[:-1])} and {items[-1]}."


FACT_DOCS: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (country_doc, 2.0),
    (animal_doc, 2.0),
    (colour_doc, 1.0),
    (opposites_doc, 1.0),
    (science_doc, 1.0),
    (plural_doc, 0.5),
    (arithmetic_doc, 3.0),
    (story_doc, 1.0),
    (conversion_doc, 1.5),
    (numbers_doc, 1.5),
    (list_doc, 0.7),
)


def dialogue(rng: random.Random, style_weights: tuple[float, ...], exclude: set[str]) -> tuple[str, str]:
    """(formatted prompt, completion with a leading space) for a question not in `exclude`."""
    while True:
        kind, slots, question = questions.sample_question(rng)
        if question not in exclude:
            break
    style = rng.choices(styles.STYLES, weights=style_weights)[0]
    answer = styles.compose(style, kind.core(slots), kind.short(slots), kind.wrong(slots, rng), rng)
    return format_prompt(question), " " + answer


def pretrain_documents(seed: int, count: int, exclude: set[str]) -> Iterator[dict]:
    """`count` pretraining rows {"text"}."""
    rng = random.Random(f"{seed}-pretrain")
    makers, weights = zip(*FACT_DOCS)
    for _ in range(count):
        if rng.random() < DIALOGUE_SHARE:
            prompt, completion = dialogue(rng, PRETRAIN_STYLE_WEIGHTS, exclude)
            yield {"text": prompt + completion}
        else:
            yield {"text": rng.choices(makers, weights=weights)[0](rng)}


def sft_examples(seed: int, count: int, exclude: set[str]) -> Iterator[dict]:
    """`count` SFT rows {"prompt", "completion"} (the prompt carries the "\\nAssistant:" separator,
    the completion starts with a space; the trainer appends EOS)."""
    rng = random.Random(f"{seed}-sft")
    for _ in range(count):
        prompt, completion = dialogue(rng, SFT_STYLE_WEIGHTS, exclude)
        yield {"prompt": prompt, "completion": completion}
