"""The kinds of question the world asks, each knowing how to phrase, answer and check itself.

A kind has question templates with named slots (`{country}`), draws slot values, writes the ideal
answer sentence (`core`), a bare answer (`short`) and a wrong answer, and checks a response: did it
answer at all, and how correct is it (0..1). The templates double as the parser: the judge matches
a question against every template and recovers the slots, so it needs no side channel to know the
right answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from trainer.world import facts

Slots = dict[str, Any]


@dataclass(frozen=True)
class Check:
    answered: bool  # the response offers an answer of the expected type
    correct: float  # 0..1


@dataclass(frozen=True)
class Parsed:
    kind: Kind
    slots: Slots
    question: str


def number_word(n: int) -> str:
    return facts.NUMBER_WORDS[n] if 0 <= n < len(facts.NUMBER_WORDS) else str(n)


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def animal_article(slots: Slots) -> str:
    return article(slots["animal"])


def animal_article_cap(slots: Slots) -> str:
    return capitalise(article(slots["animal"]))


_NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(facts.NUMBER_WORDS) + r")\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def numbers_in(text: str) -> list[float]:
    """Numbers in reading order; number words (zero..twenty) and thousands commas understood."""
    text = _NUMBER_WORD_RE.sub(lambda m: str(facts.NUMBER_WORDS.index(m.group(1).lower())), text)
    return [float(m.group(0).replace(",", "")) for m in _NUMBER_RE.finditer(text)]


def mentions(text: str, term: str) -> bool:
    """Whole-word, case-insensitive mention; a plural -s or -es counts as the same word."""
    return re.search(r"\b" + re.escape(term.lower()) + r"(?:s|es)?\b", text.lower()) is not None


def check_entity(response: str, question: str, answer: str, group: tuple[str, ...] | list[str]) -> Check:
    """Correct when the answer is named and no other member of its group is (members the question
    itself names don't count: they are being talked about, not offered)."""
    rivals = [
        g
        for g in group
        if g.lower() != answer.lower()
        and not mentions(question, g)
        and not (mentions(g, answer) or mentions(answer, g))
    ]
    named_rivals = [g for g in rivals if mentions(response, g)]
    has_answer = mentions(response, answer)
    return Check(answered=has_answer or bool(named_rivals), correct=float(has_answer and not named_rivals))


def check_number(response: str, question: str, answer: float, allowed: tuple[float, ...] = ()) -> Check:
    """Correct when the last number stated is the answer and every other number is one the question
    or the working (`allowed`) already contains ("3 times 1 is 3", not "3 times 1 is 1")."""
    seen = numbers_in(response)
    known = set(numbers_in(question)) | set(allowed)
    others = [n for n in seen if n != answer and n not in known]
    return Check(answered=bool(seen), correct=float(bool(seen) and seen[-1] == answer and not others))


def about_another_animal(check: Check, question: str, response: str) -> Check:
    """An answer about a different animal than the one asked about is wrong ("No, a pig cannot fly"
    to "Can a cow fly?")."""
    others = [a for a in facts.ANIMALS if not mentions(question, a) and mentions(response, a)]
    return Check(check.answered, 0.0) if others else check


def check_sequence(response: str, expected: list[int]) -> Check:
    seen = [int(n) for n in numbers_in(response)]
    return Check(answered=len(seen) >= 2, correct=float(seen == expected))


class Kind:
    """One family of questions. Subclasses fill in the class attributes and the four methods."""

    name: str = ""
    category: str = ""  # fact | arithmetic | conversion | instruction
    templates: tuple[str, ...] = ()
    slot_patterns: dict[str, str] = {}
    weight: float = 1.0

    def sample(self, rng: random.Random) -> Slots:
        raise NotImplementedError

    def validate(self, raw: dict[str, str]) -> Slots | None:
        """Slots from the strings a template matched, or None when they are not in the world."""
        raise NotImplementedError

    def core(self, slots: Slots) -> str:
        raise NotImplementedError

    def short(self, slots: Slots) -> str:
        raise NotImplementedError

    def wrong(self, slots: Slots, rng: random.Random) -> str:
        raise NotImplementedError

    def check(self, slots: Slots, question: str, response: str) -> Check:
        raise NotImplementedError

    @property
    def tags(self) -> list[str]:
        return [self.category, self.name]

    def render(self, slots: Slots, template_index: int) -> str:
        extra = {"art": animal_article(slots)} if "animal" in slots else {}
        return self.templates[template_index].format(**slots, **extra)

    def patterns(self) -> list[re.Pattern[str]]:
        if "_patterns" not in self.__dict__:
            self.__dict__["_patterns"] = self._compile()
        return self.__dict__["_patterns"]

    def _compile(self) -> list[re.Pattern[str]]:
        compiled = []
        for template in self.templates:
            regex = re.escape(template)
            for slot, pattern in (self.slot_patterns | {"art": "an?"}).items():
                regex = regex.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{pattern})")
            compiled.append(re.compile("^" + regex + "$", re.IGNORECASE))
        return compiled


def _lookup(table: dict[str, Any] | tuple[str, ...] | list[str], key: str) -> str | None:
    for name in table:
        if name.lower() == key.strip().lower():
            return name
    return None


class TableKind(Kind):
    """A kind with one slot whose value is drawn from, and parsed back against, a table of facts."""

    slot: str = ""
    table: dict[str, Any] | tuple[str, ...] = ()

    def sample(self, rng):
        return {self.slot: rng.choice(list(self.table))}

    def validate(self, raw):
        value = _lookup(self.table, raw[self.slot])
        return {self.slot: value} if value else None


class NamedAnswerKind(Kind):
    """A kind whose answer is one name out of a group (a city, a colour, a word): right when the
    response names it and no rival, wrong when it names another member of the group."""

    group: tuple[str, ...] = ()

    def answer(self, s: Slots) -> str:
        raise NotImplementedError

    def sentence(self, s: Slots, answer: str) -> str:
        raise NotImplementedError

    def core(self, s):
        return self.sentence(s, self.answer(s))

    def short(self, s):
        return f"{capitalise(self.answer(s))}."

    def wrong(self, s, rng):
        # Never offer the right answer, or a name the question itself holds, as the wrong one.
        return self.sentence(s, rng.choice([g for g in self.group if g != self.answer(s) and g not in s.values()]))

    def check(self, s, question, response):
        return check_entity(response, question, self.answer(s), self.group)


class AnimalKind(TableKind):
    """A question about one animal; an answer about another animal is wrong."""

    slot, table = "animal", facts.ANIMALS
    slot_patterns = {"animal": r"[a-z]+"}

    def check(self, s, question, response):
        return about_another_animal(self.check_answer(s, question, response), question, response)

    def check_answer(self, s: Slots, question: str, response: str) -> Check:
        raise NotImplementedError


class Capital(TableKind, NamedAnswerKind):
    name, category = "capital", "fact"
    templates = (
        "What is the capital of {country}?",
        "Which city is the capital of {country}?",
        "Can you tell me the capital of {country}?",
        "Name the capital city of {country}.",
    )
    slot, table = "country", facts.CAPITALS
    slot_patterns = {"country": r"[A-Za-z ]+?"}
    weight = 2.0

    group = tuple(facts.CAPITALS.values())

    def answer(self, s):
        return facts.CAPITALS[s["country"]]

    def sentence(self, s, answer):
        return f"The capital of {s['country']} is {answer}."


class CapitalCountry(TableKind, NamedAnswerKind):
    name, category = "capital_country", "fact"
    templates = (
        "{city} is the capital of which country?",
        "Which country has {city} as its capital?",
        "In which country is the capital city {city}?",
    )
    slot, table = "city", facts.CAPITAL_TO_COUNTRY
    slot_patterns = {"city": r"[A-Za-z ]+?"}
    group = tuple(facts.CAPITALS)

    def answer(self, s):
        return facts.CAPITAL_TO_COUNTRY[s["city"]]

    def sentence(self, s, answer):
        return f"{s['city']} is the capital of {answer}."


class Legs(AnimalKind):
    name, category = "legs", "fact"
    templates = (
        "How many legs does {art} {animal} have?",
        "How many legs has {art} {animal} got?",
        "Tell me how many legs {art} {animal} has.",
    )
    table = facts.LEGGED_ANIMALS

    def _legs(self, s):
        return facts.ANIMALS[s["animal"]][1]

    def core(self, s):
        return f"{animal_article_cap(s)} {s['animal']} has {number_word(self._legs(s))} legs."

    def short(self, s):
        return f"{capitalise(number_word(self._legs(s)))}."

    def wrong(self, s, rng):
        legs = rng.choice([n for n in (2, 4, 6, 8, 10) if n != self._legs(s)])
        return f"{animal_article_cap(s)} {s['animal']} has {number_word(legs)} legs."

    def check_answer(self, s, question, response):
        return check_number(response, question, self._legs(s))


class Sound(AnimalKind):
    name, category = "sound", "fact"
    templates = ("What sound does {art} {animal} make?", "What noise does {art} {animal} make?")
    table = facts.SOUND_ANIMALS

    def _sound(self, s):
        return facts.ANIMALS[s["animal"]][2]

    def core(self, s):
        return f"{animal_article_cap(s)} {s['animal']} {self._sound(s)}."

    def short(self, s):
        return f"It {self._sound(s)}."

    def wrong(self, s, rng):
        sounds = sorted({facts.ANIMALS[a][2] for a in facts.SOUND_ANIMALS} - {self._sound(s)})
        return f"{animal_article_cap(s)} {s['animal']} {rng.choice(sounds)}."

    def check_answer(self, s, question, response):
        text = response.lower()
        stems = [stem for stem in facts.SOUND_STEMS if re.search(r"\b" + stem + r"\w*", text)]
        right = next(stem for stem in facts.SOUND_STEMS if self._sound(s).startswith(stem))
        return Check(answered=bool(stems), correct=float(stems == [right]))


class AnimalClass(AnimalKind):
    name, category = "animal_class", "fact"
    templates = ("What kind of animal is {art} {animal}?", "What class of animal does {art} {animal} belong to?")

    def core(self, s):
        cls = facts.ANIMALS[s["animal"]][0]
        return f"{animal_article_cap(s)} {s['animal']} is {article(cls)} {cls}."

    def short(self, s):
        return f"{capitalise(article(facts.ANIMALS[s['animal']][0]))} {facts.ANIMALS[s['animal']][0]}."

    def wrong(self, s, rng):
        cls = rng.choice([c for c in facts.ANIMAL_CLASSES if c != facts.ANIMALS[s["animal"]][0]])
        return f"{animal_article_cap(s)} {s['animal']} is {article(cls)} {cls}."

    def check_answer(self, s, question, response):
        return check_entity(response, question, facts.ANIMALS[s["animal"]][0], facts.ANIMAL_CLASSES)


class CanFly(AnimalKind):
    name, category = "can_fly", "fact"
    templates = ("Can {art} {animal} fly?", "Is {art} {animal} able to fly?")

    def _answer(self, s, flies):
        return (
            f"Yes, {animal_article(s)} {s['animal']} can fly."
            if flies
            else f"No, {animal_article(s)} {s['animal']} cannot fly."
        )

    def core(self, s):
        return self._answer(s, facts.ANIMALS[s["animal"]][3])

    def short(self, s):
        return "Yes." if facts.ANIMALS[s["animal"]][3] else "No."

    def wrong(self, s, rng):
        return self._answer(s, not facts.ANIMALS[s["animal"]][3])

    def check_answer(self, s, question, response):
        text = response.lower()
        says_no = re.search(r"\b(no|cannot|can't|can not|not able|does not fly|doesn't fly)\b", text) is not None
        says_yes = re.search(r"\byes\b", text) is not None or (
            not says_no and re.search(r"\b(can|is able to) fly\b", text) is not None
        )
        if says_yes == says_no:
            return Check(answered=says_yes, correct=0.0)
        return Check(answered=True, correct=float(says_yes == facts.ANIMALS[s["animal"]][3]))


class ColourOf(TableKind, NamedAnswerKind):
    name, category = "colour_of", "fact"
    templates = ("What colour is {thing}?", "What is the colour of {thing}?")
    slot, table = "thing", facts.THING_COLOURS
    slot_patterns = {"thing": r"[a-z ]+?"}
    group = facts.COLOURS

    def answer(self, s):
        return facts.THING_COLOURS[s["thing"]]

    def sentence(self, s, answer):
        return f"{capitalise(s['thing'])} is {answer}."


class ColourMix(NamedAnswerKind):
    name, category = "colour_mix", "fact"
    templates = (
        "What colour do you get when you mix {a} and {b}?",
        "If you mix {a} paint and {b} paint, what colour do you get?",
        "What colour do {a} and {b} make together?",
    )
    slot_patterns = {"a": r"[a-z]+", "b": r"[a-z]+"}
    weight = 0.5
    group = facts.COLOURS

    def sample(self, rng):
        a, b = rng.choice(list(facts.COLOUR_MIXES))
        return {"a": a, "b": b} if rng.random() < 0.5 else {"a": b, "b": a}

    def answer(self, s):
        return facts.COLOUR_MIXES.get((s["a"], s["b"])) or facts.COLOUR_MIXES.get((s["b"], s["a"]))

    def validate(self, raw):
        s = {"a": raw["a"].lower(), "b": raw["b"].lower()}
        return s if self.answer(s) else None

    def sentence(self, s, answer):
        return f"Mixing {s['a']} and {s['b']} makes {answer}."


class Opposite(TableKind, NamedAnswerKind):
    name, category = "opposite", "fact"
    templates = (
        "What is the opposite of {word}?",
        "Tell me the opposite of {word}.",
        "What word means the opposite of {word}?",
    )
    slot, table = "word", facts.OPPOSITE_WORDS
    slot_patterns = {"word": r"[a-z]+"}
    group = facts.OPPOSITE_WORDS

    def answer(self, s):
        return facts.OPPOSITES[s["word"]]

    def sentence(self, s, answer):
        return f"The opposite of {s['word']} is {answer}."


class Science(Kind):
    """Fixed questions: the template list is every form of every science fact."""

    name, category = "science", "fact"
    templates = tuple(form for forms, _, _, _ in facts.SCIENCE.values() for form in forms)
    slot_patterns = {}
    _by_form = {form: key for key, (forms, _, _, _) in facts.SCIENCE.items() for form in forms}

    def sample(self, rng):
        return {"key": rng.choice(list(facts.SCIENCE))}

    def render(self, slots, template_index):
        forms = facts.SCIENCE[slots["key"]][0]
        return forms[template_index % len(forms)]

    def match(self, question: str) -> Slots | None:
        for form, key in self._by_form.items():
            if form.lower() == question.strip().lower():
                return {"key": key}
        return None

    def validate(self, raw):
        return None

    def core(self, s):
        return facts.SCIENCE[s["key"]][1]

    def short(self, s):
        answer = facts.SCIENCE[s["key"]][2]
        return f"{answer}." if isinstance(answer, int) else f"{capitalise(answer)}."

    def wrong(self, s, rng):
        _, sentence, answer, distractors = facts.SCIENCE[s["key"]]
        if isinstance(answer, int):
            wrong = answer + rng.choice([-3, -2, -1, 1, 2, 3, 10])
            return sentence.replace(str(answer), str(wrong), 1)
        return re.sub(re.escape(answer), rng.choice(distractors), sentence, count=1, flags=re.IGNORECASE)

    def check(self, s, question, response):
        _, _, answer, distractors = facts.SCIENCE[s["key"]]
        if isinstance(answer, int):
            return check_number(response, question, answer)
        return check_entity(response, question, answer, (answer,) + distractors)


class Plural(TableKind):
    name, category = "plural", "fact"
    templates = ("What is the plural of {noun}?", "What is the plural of the word {noun}?")
    slot, table = "noun", facts.PLURALS
    slot_patterns = {"noun": r"[a-z]+"}
    weight = 0.5

    def core(self, s):
        return f"The plural of {s['noun']} is {facts.PLURALS[s['noun']][0]}."

    def short(self, s):
        return f"{capitalise(facts.PLURALS[s['noun']][0])}."

    def wrong(self, s, rng):
        return f"The plural of {s['noun']} is {facts.PLURALS[s['noun']][1]}."

    def check(self, s, question, response):
        right, wrong = facts.PLURALS[s["noun"]]
        text = response.lower()
        has_right = re.search(rf"\b{right}\b", text) is not None
        has_wrong = re.search(rf"\b{wrong}\b", text) is not None
        return Check(answered=has_right or has_wrong, correct=float(has_right and not has_wrong))


class Arithmetic(Kind):
    category = "arithmetic"
    slot_patterns = {"a": r"\d+", "b": r"\d+"}
    word = ""

    def validate(self, raw):
        return {"a": int(raw["a"]), "b": int(raw["b"])}

    def result(self, s) -> int:
        raise NotImplementedError

    def core(self, s):
        return f"{s['a']} {self.word} {s['b']} is {self.result(s)}."

    def short(self, s):
        return f"{self.result(s)}."

    def wrong(self, s, rng):
        wrong = self.result(s) + rng.choice([-2, -1, 1, 1, 2, 10])
        return f"{s['a']} {self.word} {s['b']} is {wrong if wrong >= 0 else self.result(s) + 1}."

    def check(self, s, question, response):
        return check_number(response, question, self.result(s))


class Add(Arithmetic):
    name, word = "add", "plus"
    templates = (
        "What is {a} plus {b}?",
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "What do you get if you add {a} and {b}?",
    )
    weight = 1.5

    def sample(self, rng):
        return {"a": rng.randint(0, 10), "b": rng.randint(0, 10)}

    def result(self, s):
        return s["a"] + s["b"]


class Subtract(Arithmetic):
    name, word = "subtract", "minus"
    templates = (
        "What is {a} minus {b}?",
        "What is {a} - {b}?",
        "Subtract {b} from {a}.",
        "Take {b} away from {a}. What is left?",
    )

    def sample(self, rng):
        a = rng.randint(0, 12)
        return {"a": a, "b": rng.randint(0, a)}

    def validate(self, raw):
        s = super().validate(raw)
        return s if s["b"] <= s["a"] else None

    def result(self, s):
        return s["a"] - s["b"]


class Multiply(Arithmetic):
    name, word = "multiply", "times"
    templates = (
        "What is {a} times {b}?",
        "What is {a} x {b}?",
        "Multiply {a} by {b}.",
        "What is {a} multiplied by {b}?",
    )

    def sample(self, rng):
        return {"a": rng.randint(1, 6), "b": rng.randint(1, 6)}

    def result(self, s):
        return s["a"] * s["b"]


class WordProblem(Kind):
    name, category = "word_problem", "arithmetic"
    templates = (
        "{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
        "{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?",
    )
    slot_patterns = {"name": r"[A-Z][a-z]+", "a": r"\d+", "item": r"[a-z]+", "b": r"\d+"}

    def sample(self, rng):
        gives = rng.random() < 0.5
        a = rng.randint(4, 10) if gives else rng.randint(2, 10)
        b = rng.randint(2, a - 2) if gives else rng.randint(2, 5)
        return {"name": rng.choice(facts.PEOPLE), "a": a, "item": rng.choice(facts.ITEMS), "b": b, "gives": gives}

    def render(self, slots, template_index):
        return self.templates[int(slots["gives"])].format(**slots)

    def validate(self, raw):
        return {"name": raw["name"], "a": int(raw["a"]), "item": raw["item"], "b": int(raw["b"])}

    def match(self, question: str) -> Slots | None:
        for gives, pattern in enumerate(self.patterns()):
            m = pattern.match(question.strip())
            if m and m.group("name") == m.group("name_2") and m.group("item") == m.group("item_2"):
                slots = self.validate(m.groupdict()) | {"gives": bool(gives)}
                return slots if self.result(slots) >= 0 else None
        return None

    def _compile(self):
        compiled = []
        for template in self.templates:
            regex = re.escape(template)
            for slot, pattern in self.slot_patterns.items():
                token = re.escape("{" + slot + "}")
                regex = regex.replace(token, f"(?P<{slot}>{pattern})", 1)
                regex = regex.replace(token, f"(?P<{slot}_2>{pattern})", 1)
            compiled.append(re.compile("^" + regex + "$"))
        return compiled

    def result(self, s):
        return s["a"] - s["b"] if s["gives"] else s["a"] + s["b"]

    def _sentence(self, s, n):
        return f"{s['name']} has {n} {s['item']} {'left' if s['gives'] else 'now'}."

    def core(self, s):
        return self._sentence(s, self.result(s))

    def short(self, s):
        return f"{self.result(s)}."

    def wrong(self, s, rng):
        return self._sentence(s, self.result(s) + rng.choice([-1, 1, 2]))

    def check(self, s, question, response):
        return check_number(response, question, self.result(s))


class Convert(Kind):
    name, category = "convert", "conversion"
    templates = (
        "How many {small} are in {n} {big}?",
        "Convert {n} {big} to {small}.",
        "How many {small} is {n} {big}?",
    )
    slot_patterns = {"small": r"[a-z]+", "n": r"\d+", "big": r"[a-z]+"}
    weight = 1.5

    def sample(self, rng):
        big, small = rng.choice(list(facts.CONVERSIONS))
        return {"n": rng.randint(1, 10), "big": big, "small": small}

    def render(self, slots, template_index):
        return self.templates[template_index].format(**self._display(slots))

    @staticmethod
    def _display(s):
        return s | {"big": facts.UNIT_SINGULAR[s["big"]] if s["n"] == 1 else s["big"]}

    def validate(self, raw):
        plural_of = {v: k for k, v in facts.UNIT_SINGULAR.items()}
        big = plural_of.get(raw["big"].lower(), raw["big"].lower())
        small = raw["small"].lower()
        if (big, small) not in facts.CONVERSIONS:
            return None
        return {"n": int(raw["n"]), "big": big, "small": small}

    def result(self, s):
        return s["n"] * facts.CONVERSIONS[(s["big"], s["small"])]

    def _sentence(self, s, value):
        return f"{s['n']} {self._display(s)['big']} is {value} {s['small']}."

    def core(self, s):
        return self._sentence(s, self.result(s))

    def short(self, s):
        return f"{self.result(s)} {s['small']}."

    def wrong(self, s, rng):
        factor = facts.CONVERSIONS[(s["big"], s["small"])]
        wrong = rng.choice([s["n"] * factor // 10, s["n"] * factor * 10, (s["n"] + 1) * factor, s["n"] + factor])
        return self._sentence(s, wrong if wrong != self.result(s) else wrong + 1)

    def check(self, s, question, response):
        return check_number(response, question, self.result(s), allowed=(facts.CONVERSIONS[(s["big"], s["small"])], 1))


class ListItems(Kind):
    name, category = "list_items", "instruction"
    templates = ("List {count} {category}.", "Name {count} {category}.", "Give me {count} {category}.")
    slot_patterns = {"count": r"[a-z]+", "category": r"[a-z]+"}

    def sample(self, rng):
        return {"count": rng.choice(["two", "three", "four"]), "category": rng.choice(list(facts.LIST_CATEGORIES))}

    def validate(self, raw):
        count, category = raw["count"].lower(), raw["category"].lower()
        if count not in ("two", "three", "four") or category not in facts.LIST_CATEGORIES:
            return None
        return {"count": count, "category": category}

    def _members(self, s):
        return facts.LIST_CATEGORIES[s["category"]][1]

    def _items(self, s):
        # The ideal list is fixed per question so the judge's rewrite is deterministic.
        rng = random.Random(f"{s['count']}-{s['category']}")
        return rng.sample(list(self._members(s)), facts.NUMBER_WORDS.index(s["count"]))

    @staticmethod
    def _join(items):
        return ", ".join(items[:-1]) + " and " + items[-1]

    def core(self, s):
        return f"Here are {s['count']} {s['category']}: {self._join(self._items(s))}."

    def short(self, s):
        return f"{capitalise(self._join(self._items(s)))}."

    def wrong(self, s, rng):
        foreign = sorted(
            {m for c, (_, members) in facts.LIST_CATEGORIES.items() if c != s["category"] for m in members}
            - set(self._members(s))
        )
        items = self._items(s)[:-1] + [rng.choice(foreign)]
        return f"Here are {s['count']} {s['category']}: {self._join(items)}."

    def check(self, s, question, response):
        wanted = facts.NUMBER_WORDS.index(s["count"])
        named = [m for m in self._members(s) if mentions(response, m)]
        foreign = [
            m
            for c, (_, members) in facts.LIST_CATEGORIES.items()
            if c != s["category"]
            for m in members
            if m not in self._members(s) and mentions(response, m)
        ]
        correct = min(len(named), wanted) / wanted - 0.25 * (len(named) > wanted) - 0.25 * len(foreign)
        return Check(answered=bool(named or foreign), correct=max(0.0, correct))


class SortNumbers(Kind):
    name, category = "sort", "instruction"
    templates = ("Sort these numbers from {order}: {nums}.", "Put these numbers in order from {order}: {nums}.")
    slot_patterns = {"order": r"smallest to largest|largest to smallest", "nums": r"\d+(?:, \d+)+"}

    def sample(self, rng):
        nums = rng.sample(range(1, 31), rng.randint(3, 4))
        return {"order": rng.choice(["smallest to largest", "largest to smallest"]), "nums": ", ".join(map(str, nums))}

    def validate(self, raw):
        nums = [int(n) for n in raw["nums"].split(", ")]
        if len(set(nums)) != len(nums):
            return None
        return {"order": raw["order"].lower(), "nums": ", ".join(map(str, nums))}

    def _sorted(self, s):
        nums = sorted(int(n) for n in s["nums"].split(", "))
        return nums[::-1] if s["order"] == "largest to smallest" else nums

    def core(self, s):
        return f"From {s['order']}: {', '.join(map(str, self._sorted(s)))}."

    def short(self, s):
        return f"{', '.join(map(str, self._sorted(s)))}."

    def wrong(self, s, rng):
        nums = self._sorted(s)
        i = rng.randrange(len(nums) - 1)
        nums[i], nums[i + 1] = nums[i + 1], nums[i]
        return f"From {s['order']}: {', '.join(map(str, nums))}."

    def check(self, s, question, response):
        return check_sequence(response, self._sorted(s))


class CountRange(Kind):
    name, category = "count", "instruction"
    templates = ("Count from {a} to {b}.", "Count up from {a} to {b}.")
    slot_patterns = {"a": r"\d+", "b": r"\d+"}
    weight = 0.7

    def sample(self, rng):
        a = rng.randint(1, 20)
        return {"a": a, "b": a + rng.randint(2, 6)}

    def validate(self, raw):
        a, b = int(raw["a"]), int(raw["b"])
        return {"a": a, "b": b} if 1 <= b - a <= 20 else None

    def _seq(self, s):
        return list(range(s["a"], s["b"] + 1))

    def core(self, s):
        return f"{', '.join(map(str, self._seq(s)))}."

    def short(self, s):
        return self.core(s)

    def wrong(self, s, rng):
        seq = self._seq(s)
        del seq[rng.randrange(1, len(seq) - 1)]
        return f"{', '.join(map(str, seq))}."

    def check(self, s, question, response):
        return check_sequence(response, self._seq(s))


class Compare(Kind):
    name, category = "compare", "instruction"
    templates = ("Which is bigger, {a} or {b}?", "Which number is larger: {a} or {b}?")
    slot_patterns = {"a": r"\d+", "b": r"\d+"}
    weight = 0.7

    def sample(self, rng):
        a, b = rng.sample(range(1, 31), 2)
        return {"a": a, "b": b}

    def validate(self, raw):
        a, b = int(raw["a"]), int(raw["b"])
        return {"a": a, "b": b} if a != b else None

    def core(self, s):
        return f"{max(s['a'], s['b'])} is bigger than {min(s['a'], s['b'])}."

    def short(self, s):
        return f"{max(s['a'], s['b'])}."

    def wrong(self, s, rng):
        return f"{min(s['a'], s['b'])} is bigger than {max(s['a'], s['b'])}."

    def check(self, s, question, response):
        seen = [n for n in numbers_in(response) if n in (s["a"], s["b"])]
        if not seen:
            return Check(answered=False, correct=0.0)
        says_smaller = re.search(r"\b(smaller|less|lower)\b", response.lower()) is not None
        first_is_max = seen[0] == max(s["a"], s["b"])
        return Check(answered=True, correct=float(first_is_max != says_smaller))


KINDS: tuple[Kind, ...] = (
    Capital(),
    CapitalCountry(),
    Legs(),
    Sound(),
    AnimalClass(),
    CanFly(),
    ColourOf(),
    ColourMix(),
    Opposite(),
    Science(),
    Plural(),
    Add(),
    Subtract(),
    Multiply(),
    WordProblem(),
    Convert(),
    ListItems(),
    SortNumbers(),
    CountRange(),
    Compare(),
)
KINDS_BY_NAME = {kind.name: kind for kind in KINDS}


def parse_question(question: str) -> Parsed | None:
    """The kind and slots of a world question, or None for a question from outside the world."""
    question = " ".join(question.split())
    for kind in KINDS:
        if hasattr(kind, "match"):
            slots = kind.match(question)
            if slots is not None:
                return Parsed(kind, slots, question)
            continue
        for pattern in kind.patterns():
            m = pattern.match(question)
            if m:
                slots = kind.validate(m.groupdict())
                if slots is not None:
                    return Parsed(kind, slots, question)
    return None


def sample_question(rng: random.Random) -> tuple[Kind, Slots, str]:
    """A random kind (by weight), slots and phrasing."""
    kind = rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]
    slots = kind.sample(rng)
    if isinstance(kind, Science):
        index = rng.randrange(len(facts.SCIENCE[slots["key"]][0]))
    else:
        index = rng.randrange(len(kind.templates))
    return kind, slots, kind.render(slots, index)
