"""Data for round tests: a tiny arithmetic world on top of the trainer's tiny LM (tests/trainer/conftest.py).

Prompts "question: what is A plus B? answer:"; a pairwise task per train prompt between the right sum and a
wrong one, which a human annotator prefers right (a synthetic, learnable preference). `gold_score` is the gold
judge of this world (used as `py:tests.app.rounds_support:gold_score`).
"""

from __future__ import annotations

import random
import re

from app.models import ModelVersion
from tests.app import factories

PROMPT = "question: what is {a} plus {b}? answer:"
_NUMBERS = re.compile(r"-?\d+")


def gold_score(prompt: str, response: str) -> float:
    """1 for the right sum as the first number of the response, else 0."""
    m = re.search(r"what is (\d+) plus (\d+)", prompt)
    found = _NUMBERS.search(response)
    if m is None or found is None:
        return 0.0
    return float(int(found.group()) == int(m.group(1)) + int(m.group(2)))


def register_policy(db, path, *, name: str = "tiny-sft", stage: str = "sft") -> ModelVersion:
    model = ModelVersion(name=name, kind="policy", stage=stage, path=str(path), is_current=True, metrics={})
    db.add(model)
    db.flush()
    return model


def make_prompts(db, *, train: int, eval: int, seed: int = 0):
    rng = random.Random(seed)
    seen, prompts = set(), {"train": [], "eval": []}
    for split, count in (("train", train), ("eval", eval)):
        while len(prompts[split]) < count:
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            if (a, b) in seen:
                continue
            seen.add((a, b))
            prompts[split].append(factories.make_prompt(db, PROMPT.format(a=a, b=b), split=split))
    return prompts


def label_preferences(db, prompts, *, annotator, model=None, source: str = "human", flip_every: int = 0):
    """One pairwise task per prompt (right vs wrong sum, in alternating positions), the right one chosen.
    `flip_every` > 0 chooses the wrong one on every n-th task (label noise)."""
    annotations = []
    for i, prompt in enumerate(prompts):
        a, b = map(int, re.findall(r"\d+", prompt.text)[:2])
        right = factories.make_generation(db, prompt, f" {a + b}", model=model, seed=2 * i)
        wrong = factories.make_generation(db, prompt, f" {a + b + 3 + i % 5}", model=model, seed=2 * i + 1)
        pair = [right, wrong] if i % 2 else [wrong, right]
        task = factories.make_task(db, prompt, pair, kind="pairwise")
        chosen = wrong if flip_every and i % flip_every == flip_every - 1 else right
        annotations.append(factories.annotate_pairwise(db, task, annotator, chosen=chosen, source=source))
    return annotations


def labelled_world(db, policy_path="/models/sft", *, train: int, eval: int, noise_every: int = 0):
    """A current SFT policy at `policy_path`, `train` + `eval` prompts, and one human preference per train prompt
    (every `noise_every`-th one wrong). Commits."""
    human = factories.make_annotator(db)
    policy = register_policy(db, policy_path)
    prompts = make_prompts(db, train=train, eval=eval)
    label_preferences(db, prompts["train"], annotator=human, flip_every=noise_every)
    db.commit()
    return policy, prompts


def tiny_round_config(**overrides) -> dict:
    """A round small enough for a test: a few reward epochs, two PPO steps, few eval prompts."""
    config = {
        "min_pairs": 10,
        "seed": 0,
        "reward": {"epochs": 3, "batch_size": 8, "lr": 2e-3},
        "ppo": {"max_steps": 2, "batch_size": 8, "lr": 1e-4, "max_new_tokens": 6, "ppo_epochs": 1},
        "dpo": {"epochs": 1, "batch_size": 8, "lr": 1e-4},
        "eval_prompts": 6,
        "eval_max_new_tokens": 6,
        "report_samples": 0,
        "next_tasks": {"prompts": 3, "k": 2, "max_new_tokens": 6},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
