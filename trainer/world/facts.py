"""The world's knowledge: small, real, checkable facts.

Everything the corpus states, the prompts ask and the judge checks comes from these tables, so the
three can never disagree. Spelling is British ("colour") and ASCII only, so a byte-level tokenizer
and a reader see the same words.
"""

from __future__ import annotations

# country -> (capital, continent)
COUNTRIES: dict[str, tuple[str, str]] = {
    "France": ("Paris", "Europe"),
    "Spain": ("Madrid", "Europe"),
    "Italy": ("Rome", "Europe"),
    "Germany": ("Berlin", "Europe"),
    "Portugal": ("Lisbon", "Europe"),
    "Ireland": ("Dublin", "Europe"),
    "Poland": ("Warsaw", "Europe"),
    "Sweden": ("Stockholm", "Europe"),
    "Norway": ("Oslo", "Europe"),
    "Finland": ("Helsinki", "Europe"),
    "Denmark": ("Copenhagen", "Europe"),
    "Austria": ("Vienna", "Europe"),
    "Hungary": ("Budapest", "Europe"),
    "Greece": ("Athens", "Europe"),
    "Russia": ("Moscow", "Europe"),
    "Japan": ("Tokyo", "Asia"),
    "China": ("Beijing", "Asia"),
    "India": ("New Delhi", "Asia"),
    "Thailand": ("Bangkok", "Asia"),
    "Turkey": ("Ankara", "Asia"),
    "Egypt": ("Cairo", "Africa"),
    "Kenya": ("Nairobi", "Africa"),
    "Nigeria": ("Abuja", "Africa"),
    "Morocco": ("Rabat", "Africa"),
    "Canada": ("Ottawa", "North America"),
    "Mexico": ("Mexico City", "North America"),
    "Cuba": ("Havana", "North America"),
    "Brazil": ("Brasilia", "South America"),
    "Argentina": ("Buenos Aires", "South America"),
    "Peru": ("Lima", "South America"),
    "Chile": ("Santiago", "South America"),
    "Australia": ("Canberra", "Oceania"),
}
CAPITALS: dict[str, str] = {country: capital for country, (capital, _) in COUNTRIES.items()}
CAPITAL_TO_COUNTRY: dict[str, str] = {capital: country for country, capital in CAPITALS.items()}


# animal -> (class, legs, sound verb (third person), can fly)
ANIMALS: dict[str, tuple[str, int, str, bool]] = {
    "dog": ("mammal", 4, "barks", False),
    "cat": ("mammal", 4, "meows", False),
    "cow": ("mammal", 4, "moos", False),
    "horse": ("mammal", 4, "neighs", False),
    "pig": ("mammal", 4, "oinks", False),
    "sheep": ("mammal", 4, "bleats", False),
    "lion": ("mammal", 4, "roars", False),
    "wolf": ("mammal", 4, "howls", False),
    "mouse": ("mammal", 4, "squeaks", False),
    "donkey": ("mammal", 4, "brays", False),
    "bat": ("mammal", 2, "squeaks", True),
    "duck": ("bird", 2, "quacks", True),
    "owl": ("bird", 2, "hoots", True),
    "parrot": ("bird", 2, "squawks", True),
    "crow": ("bird", 2, "caws", True),
    "penguin": ("bird", 2, "squawks", False),
    "eagle": ("bird", 2, "screeches", True),
    "frog": ("amphibian", 4, "croaks", False),
    "snake": ("reptile", 0, "hisses", False),
    "bee": ("insect", 6, "buzzes", True),
    "ant": ("insect", 6, "clicks", False),
    "spider": ("arachnid", 8, "makes no sound", False),
    "shark": ("fish", 0, "makes no sound", False),
}
ANIMAL_CLASSES = ("mammal", "bird", "fish", "reptile", "amphibian", "insect", "arachnid")
# Sounds the judge recognises, as word stems, so "barks", "bark" and "barking" all count.
SOUND_STEMS = (
    "bark",
    "meow",
    "moo",
    "neigh",
    "oink",
    "bleat",
    "roar",
    "howl",
    "squeak",
    "bray",
    "chatter",
    "quack",
    "hoot",
    "cluck",
    "caw",
    "squawk",
    "screech",
    "croak",
    "hiss",
    "buzz",
    "click",
    "cluck",
)
SOUND_ANIMALS = [a for a, (_, _, sound, _) in ANIMALS.items() if sound != "makes no sound"]
LEGGED_ANIMALS = [a for a, (_, legs, _, _) in ANIMALS.items() if legs > 0]


# thing (as it reads inside a sentence) -> colour
THING_COLOURS: dict[str, str] = {
    "the sky on a clear day": "blue",
    "fresh grass": "green",
    "snow": "white",
    "milk": "white",
    "a ripe banana": "yellow",
    "a lemon": "yellow",
    "a ripe tomato": "red",
    "a strawberry": "red",
    "coal": "black",
    "a crow": "black",
    "a carrot": "orange",
    "a plum": "purple",
    "an emerald": "green",
    "the sea on a sunny day": "blue",
}
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "grey", "brown")
# unordered pair of paints -> the colour they make
COLOUR_MIXES: dict[tuple[str, str], str] = {
    ("blue", "yellow"): "green",
    ("red", "yellow"): "orange",
    ("blue", "red"): "purple",
    ("red", "white"): "pink",
    ("black", "white"): "grey",
}

OPPOSITE_PAIRS = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("day", "night"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("open", "closed"),
    ("light", "dark"),
    ("wet", "dry"),
    ("early", "late"),
    ("full", "empty"),
    ("loud", "quiet"),
    ("hard", "soft"),
    ("rich", "poor"),
    ("left", "right"),
    ("push", "pull"),
    ("long", "short"),
    ("clean", "dirty"),
    ("first", "last"),
    ("sweet", "sour"),
)
# word -> its opposite (each word is in one pair only, so the answer is never ambiguous)
OPPOSITES: dict[str, str] = {a: b for a, b in OPPOSITE_PAIRS} | {b: a for a, b in OPPOSITE_PAIRS}
OPPOSITE_WORDS = tuple(sorted(OPPOSITES))

# noun -> irregular or -es plural, and the wrong plural a careless speaker would say
PLURALS: dict[str, tuple[str, str]] = {
    "mouse": ("mice", "mouses"),
    "child": ("children", "childs"),
    "foot": ("feet", "foots"),
    "tooth": ("teeth", "tooths"),
    "man": ("men", "mans"),
    "woman": ("women", "womans"),
    "goose": ("geese", "gooses"),
    "person": ("people", "persons"),
    "box": ("boxes", "boxs"),
    "city": ("cities", "citys"),
    "leaf": ("leaves", "leafs"),
    "knife": ("knives", "knifes"),
    "bus": ("buses", "buss"),
    "baby": ("babies", "babys"),
    "wolf": ("wolves", "wolfs"),
}

# Simple science and everyday facts: key -> (question forms, answer sentence, answer, distractors).
# The answer is a number (int) or a keyword; distractors are wrong answers of the same kind that the
# judge treats as a contradiction when they appear.
SCIENCE: dict[str, tuple[tuple[str, ...], str, int | str, tuple[str, ...]]] = {
    "boil": (
        ("At what temperature does water boil?", "What temperature does water boil at?"),
        "Water boils at 100 degrees Celsius.",
        100,
        (),
    ),
    "freeze": (
        ("At what temperature does water freeze?", "What temperature does water freeze at?"),
        "Water freezes at 0 degrees Celsius.",
        0,
        (),
    ),
    "closest_planet": (
        ("Which planet is closest to the Sun?", "What is the closest planet to the Sun?"),
        "Mercury is the planet closest to the Sun.",
        "Mercury",
        ("Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    ),
    "largest_planet": (
        ("What is the largest planet?", "Which planet is the biggest?"),
        "Jupiter is the largest planet.",
        "Jupiter",
        ("Mercury", "Venus", "Earth", "Mars", "Saturn", "Uranus", "Neptune"),
    ),
    "red_planet": (
        ("Which planet is called the Red Planet?", "What is the Red Planet?"),
        "Mars is called the Red Planet.",
        "Mars",
        ("Mercury", "Venus", "Earth", "Jupiter", "Saturn", "Uranus", "Neptune"),
    ),
    "home_planet": (
        ("Which planet do we live on?", "What planet do people live on?"),
        "We live on the planet Earth.",
        "Earth",
        ("Mercury", "Venus", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    ),
    "planets": (
        ("How many planets are in the solar system?", "How many planets go around the Sun?"),
        "There are 8 planets in the solar system.",
        8,
        (),
    ),
    "week": (("How many days are in a week?", "How many days does a week have?"), "There are 7 days in a week.", 7, ()),
    "year_months": (
        ("How many months are in a year?", "How many months does a year have?"),
        "There are 12 months in a year.",
        12,
        (),
    ),
    "day_hours": (
        ("How many hours are in a day?", "How many hours does a day have?"),
        "There are 24 hours in a day.",
        24,
        (),
    ),
    "continents": (
        ("How many continents are there?", "How many continents does the Earth have?"),
        "There are 7 continents.",
        7,
        (),
    ),
    "breathe": (
        ("What gas do people need to breathe?", "Which gas do we breathe in to live?"),
        "People need oxygen to breathe.",
        "oxygen",
        ("nitrogen", "helium", "hydrogen", "carbon dioxide"),
    ),
    "plants": (
        ("What gas do plants take in from the air?", "Which gas do plants use to make food?"),
        "Plants take in carbon dioxide from the air.",
        "carbon dioxide",
        ("oxygen", "helium", "hydrogen", "nitrogen"),
    ),
    "bees": (
        ("What do bees make?", "What food do bees make?"),
        "Bees make honey.",
        "honey",
        ("milk", "bread", "cheese", "butter"),
    ),
    "ice": (
        ("What is frozen water called?", "What do we call frozen water?"),
        "Frozen water is called ice.",
        "ice",
        ("steam", "rain", "fog"),
    ),
    "steam": (
        ("What does water turn into when it boils?", "What is boiling water turning into?"),
        "Boiling water turns into steam.",
        "steam",
        ("ice", "snow"),
    ),
    "sun_star": (
        ("What is the closest star to the Earth?", "Which star is nearest to the Earth?"),
        "The Sun is the closest star to the Earth.",
        "Sun",
        ("Moon", "Sirius", "Polaris"),
    ),
    "moon": (
        ("What goes around the Earth once a month?", "What travels around the Earth every month?"),
        "The Moon goes around the Earth.",
        "Moon",
        ("Sun", "Mars"),
    ),
}

# Units: (big unit, small unit) -> factor, with singular forms.
UNIT_SINGULAR = {
    "kilometers": "kilometer",
    "meters": "meter",
    "centimeters": "centimeter",
    "kilograms": "kilogram",
    "grams": "gram",
    "hours": "hour",
    "minutes": "minute",
    "seconds": "second",
    "days": "day",
    "weeks": "week",
    "liters": "liter",
    "milliliters": "milliliter",
    "years": "year",
    "months": "month",
}
CONVERSIONS: dict[tuple[str, str], int] = {
    ("kilometers", "meters"): 1000,
    ("meters", "centimeters"): 100,
    ("kilograms", "grams"): 1000,
    ("hours", "minutes"): 60,
    ("minutes", "seconds"): 60,
    ("days", "hours"): 24,
    ("weeks", "days"): 7,
    ("liters", "milliliters"): 1000,
    ("years", "months"): 12,
}

# For list instructions: category -> (plural noun as asked, members the judge accepts).
LIST_CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "colours": ("colours", COLOURS),
    "animals": ("animals", tuple(ANIMALS)),
    "fruits": (
        "fruits",
        ("apple", "banana", "orange", "pear", "grape", "lemon", "plum", "cherry", "mango", "peach", "strawberry"),
    ),
    "countries": ("countries", tuple(COUNTRIES)),
    "planets": ("planets", ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")),
}

PEOPLE = ("Tom", "Anna", "Sam", "Lucy", "Ben", "Mia", "Leo", "Emma", "Max", "Nora")
ITEMS = ("apples", "pencils", "books", "marbles", "cookies", "stickers", "balloons", "cards")

NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)
