"""Prompt text format and the world's prompt sets (train and eval splits, disjoint).

A prompt is one user turn in the plain-text dialogue format the whole world uses:

    User: What is the capital of France?
    Assistant:

(`format_prompt`). The model's completion follows the colon after a space, and the trainer appends
EOS. `question_of` inverts it, so the judge can take either the formatted prompt or the bare
question.
"""

from __future__ import annotations

import random

from trainer.world import questions

USER = "User: "
ASSISTANT = "\nAssistant:"


def format_prompt(question: str) -> str:
    return f"{USER}{question}{ASSISTANT}"


def question_of(prompt: str) -> str:
    """The user's question inside a formatted prompt (a bare question is returned as it is)."""
    text = prompt.strip()
    if text.endswith(ASSISTANT.strip()):
        text = text[: -len(ASSISTANT.strip())].rstrip()
    if text.startswith(USER.strip()):
        text = text[len(USER.strip()) :].lstrip()
    return " ".join(text.split())


def _draw_unique(rng: random.Random, count: int, exclude: set[str]) -> list[tuple[questions.Kind, str]]:
    drawn: list[tuple[questions.Kind, str]] = []
    seen = set(exclude)
    attempts = 0
    while len(drawn) < count:
        attempts += 1
        if attempts > 200 * count + 1000:
            raise ValueError(f"the world has fewer than {count} distinct new questions")
        kind, _, text = questions.sample_question(rng)
        if text not in seen:
            seen.add(text)
            drawn.append((kind, text))
    return drawn


def prompt_sets(seed: int, n_train: int, n_eval: int) -> list[dict]:
    """Rows {"prompt_id", "prompt", "split", "tags"}: n_eval eval prompts, then n_train train
    prompts whose texts are all different from the eval ones."""
    eval_rows = _draw_unique(random.Random(f"{seed}-eval-prompts"), n_eval, set())
    train_rows = _draw_unique(random.Random(f"{seed}-train-prompts"), n_train, {t for _, t in eval_rows})
    rows = []
    for split, drawn in (("eval", eval_rows), ("train", train_rows)):
        for i, (kind, text) in enumerate(drawn):
            rows.append(
                {"prompt_id": f"{split}-{i:05d}", "prompt": format_prompt(text), "split": split, "tags": kind.tags}
            )
    return rows
