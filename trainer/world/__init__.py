"""The embedded world: a small, checkable world of facts, arithmetic, unit conversions and short
instructions, with its own pretraining corpus, SFT demonstrations, prompt sets, gold judge and
simulated annotators, so the whole RLHF loop runs offline on a laptop CPU. Never imports `app`.

Dialogue format (one convention everywhere, TRL's string prompt/completion):
    prompt     = "User: <question>\\nAssistant:"        (trainer.world.prompts.format_prompt)
    completion = " <answer>"                             (leading space; the trainer appends EOS)
The model sees prompt + completion exactly.

Files written by `build_world(size, out_dir, seed)` (JSONL, UTF-8, one object a line; the same size
and seed give the same bytes):
    pretrain.jsonl       {"text"}: encyclopedia-like paragraphs, arithmetic and conversion sheets,
                         counting stories, and single-turn dialogues "User: ...\\nAssistant: ..." whose
                         answers differ in correctness, helpfulness, length and politeness
    sft.jsonl            {"prompt", "completion"}: demonstrations, all correct; 45% ideal (friendly,
                         one sentence), the rest plain, terse, long-winded, hedging or rude
    prompts.jsonl        {"prompt_id", "prompt", "split": "train"|"eval", "tags": [category, kind]}
                         prompt ids "train-00000"/"eval-00000"; eval question texts never appear in
                         the corpus or SFT data; prompts_train.jsonl and prompts_eval.jsonl hold one
                         split each
    world.json           manifest: size preset, seed, row counts, sha256 of each file
`prepare_models` adds tokenizer/, pretrained/ and sft/ (trainer outputs) and `<dir>.stamp.json`.

Measured (seed 0): `small` (0.56M parameters, 1024-token vocabulary, 70k pretraining documents for 3
epochs, 10k SFT demonstrations) used 10 CPU-minutes (5 min 33 s wall on 2 cores, `rlhf demo --prepare-only`)
for data + tokenizer + pretrain + SFT; its SFT model answers 89% of the 200 eval prompts in the intended format
(EOS, one turn, an answer of the kind asked; temperature 0.7), with a gold mean score of 0.79 and 75% of answers
correct, so RLHF has room on both correctness and style. `tiny` (~80k parameters) uses about 20 CPU-seconds.

Modules: facts (the tables), questions (question kinds: templates, answers, checks), styles (answer
styles), prompts (format, splits), corpus (pretraining and SFT rows), judge (the gold judge
`score(prompt, response)`), annotators (simulated people), build (files, models, format share).
CLI: `python -m trainer.world build --size tiny|small --out DIR` and `... measure --out DIR`.
"""

from trainer.world.build import SIZES, build_all, build_world, measure_format, prepare_models
from trainer.world.judge import assess, ideal_response, in_format, score
from trainer.world.prompts import format_prompt, question_of

__all__ = [
    "SIZES",
    "assess",
    "build_all",
    "build_world",
    "format_prompt",
    "ideal_response",
    "in_format",
    "measure_format",
    "prepare_models",
    "question_of",
    "score",
]
