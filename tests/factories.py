"""What tests build: database rows, tasks, export datasets, tiny worlds and models, and the CLI and server
processes. Fixtures live in conftest.py files; everything a test makes by calling a function lives here."""

from __future__ import annotations

import itertools
import json
import random
import re
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from app.jobs import queue
from app.models import Annotation, Generation, Job, ModelVersion, Prompt, Task, TaskPosition, User, utcnow
from app.security import new_public_id
from app.services.exports import ExportFilters, iter_export
from app.services.jobs import enqueue_job
from app.services.prompts import prompt_hash
from app.services.tasks import import_task_specs, parse_task_items

ROOT = Path(__file__).resolve().parents[1]  # the repository


# ---- Database rows, made directly (service-level tests) ------------------------------------------------------------

_seq = itertools.count()


def make_annotator(db, username: str | None = None, *, role: str = "annotator", is_ai: bool = False) -> User:
    user = User(
        username=username or f"ann-{uuid.uuid4().hex[:8]}",
        role=role,
        password_hash=None,
        is_ai=is_ai,
        public_id=new_public_id(),
    )
    db.add(user)
    db.flush()
    return user


def make_prompt(db, text: str | None = None, *, messages=None, split: str = "train", tags=None) -> Prompt:
    if text is None and messages is None:
        text = f"prompt {next(_seq)} {uuid.uuid4().hex[:6]}"
    prompt = Prompt(
        text=text,
        messages=messages,
        content_hash=prompt_hash(text=text if messages is None else None, messages=messages),
        tags=tags or [],
        split=split,
        meta={},
    )
    db.add(prompt)
    db.flush()
    return prompt


def make_model(
    db,
    name: str = "policy-v1",
    *,
    kind: str = "policy",
    stage: str = "sft",
    path: str = "/nowhere",
    is_current: bool = False,
) -> ModelVersion:
    model = ModelVersion(name=name, kind=kind, stage=stage, path=path, is_current=is_current, metrics={})
    db.add(model)
    db.flush()
    return model


def make_generation(
    db,
    prompt: Prompt,
    text: str,
    *,
    model: ModelVersion | None = None,
    seed: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
) -> Generation:
    gen = Generation(
        prompt_id=prompt.id,
        model_version_id=model.id if model else None,
        text=text,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        source="model" if model else "imported",
    )
    db.add(gen)
    db.flush()
    return gen


def make_task(db, prompt: Prompt, gens: list[Generation], *, kind: str = "pairwise", overlap: int = 1) -> Task:
    task = Task(prompt_id=prompt.id, kind=kind, overlap=overlap, meta={})
    db.add(task)
    db.flush()
    for i, g in enumerate(gens):
        db.add(TaskPosition(task_id=task.id, position=i, generation_id=g.id))
    db.flush()
    return task


def _annotate(
    db,
    task: Task,
    user: User,
    *,
    kind: str,
    shown: list[int],
    source: str = "human",
    created_at: datetime | None = None,
    **fields,
) -> Annotation:
    ann = Annotation(
        task_id=task.id,
        user_id=user.id,
        source=source,
        kind=kind,
        positions=shown,
        idempotency_key=uuid.uuid4().hex,
        request_hash="0" * 64,
        meta=fields.pop("meta", {}),
        **fields,
    )
    if created_at is not None:
        ann.created_at = created_at
    db.add(ann)
    if source == "human":
        task.done_count += 1
        task.completed = task.done_count >= task.overlap
    db.flush()
    return ann


def annotate_pairwise(
    db,
    task: Task,
    user: User,
    *,
    chosen: Generation | None,
    choice: str = "chosen",
    strength: int | None = 2,
    shown: list[Generation] | None = None,
    **kw,
) -> Annotation:
    shown_ids = [g.generation_id for g in task.positions] if shown is None else [g.id for g in shown]
    return _annotate(
        db,
        task,
        user,
        kind="pairwise",
        shown=shown_ids,
        choice=choice,
        chosen_id=chosen.id if chosen else None,
        strength=strength if choice == "chosen" else None,
        **kw,
    )


def annotate_ranking(db, task: Task, user: User, *, ranking: list[Generation], **kw) -> Annotation:
    return _annotate(
        db,
        task,
        user,
        kind="ranking",
        shown=[p.generation_id for p in task.positions],
        ranking=[g.id for g in ranking],
        **kw,
    )


def annotate_rating(
    db, task: Task, user: User, *, ratings: dict[Generation, str], rewrite: str | None = None, **kw
) -> Annotation:
    return _annotate(
        db,
        task,
        user,
        kind="rating",
        shown=[p.generation_id for p in task.positions],
        ratings={str(g.id): v for g, v in ratings.items()},
        rewrite=rewrite,
        **kw,
    )


def pairwise_task(
    db,
    *,
    prompt_text: str | None = None,
    texts=("good answer", "bad"),
    model=None,
    overlap: int = 1,
    split: str = "train",
) -> tuple[Task, list[Generation]]:
    prompt = make_prompt(db, prompt_text, split=split)
    gens = [make_generation(db, prompt, t, model=model, seed=i) for i, t in enumerate(texts)]
    return make_task(db, prompt, gens, kind="pairwise" if len(gens) == 2 else "ranking", overlap=overlap), gens


def make_job(db, *, kind="train", status="queued", **fields) -> Job:
    """A job in any state, as the queue would leave it (claimed by worker w1 unless still queued)."""
    job = enqueue_job(db, kind=kind, config={"lr": 0.001})
    db.commit()
    if status != "queued":
        queue.claim_next(db, worker_id="w1")
        db.commit()
        db.refresh(job)
        for key, value in fields.items():
            setattr(job, key, value)
        if status != "running":
            job.status, job.finished_at = status, utcnow()
        db.commit()
    return job


# ---- Tasks through the real import service -------------------------------------------------------------------------


def task_line(
    kind: str = "pairwise",
    *,
    n: int | None = None,
    overlap: int = 1,
    priority: int = 0,
    prompt: str | None = None,
    responses: list[str] | None = None,
    **extra,
) -> dict:
    n = n or {"pairwise": 2, "ranking": 3, "rating": 2}[kind]
    tag = uuid.uuid4().hex[:8]
    return {
        "prompt": prompt or f"prompt {tag}",
        "responses": responses or [f"response {i} of {tag}" for i in range(n)],
        "kind": kind,
        "overlap": overlap,
        "priority": priority,
        **extra,
    }


def gold_line(kind: str = "pairwise", *, answer: dict | None = None, qualification: bool = False, **extra) -> dict:
    """A task line with a known answer (response indices): by default the first response is the right one."""
    default = {"pairwise": {"choice": "chosen", "chosen": 0}, "ranking": {"ranking": [0, 1, 2]}}
    answer = answer or default.get(kind) or {"ratings": ["good", "bad"]}
    gold = {"answer": answer, "qualification": qualification, "explanation": extra.pop("explanation", None)}
    return task_line(kind, gold=gold, **extra)


def answer_offer(db, user, offer, *, right: bool):
    """Answer the offered task, right or wrong against its gold answer (for regular tasks: a tie)."""
    from app.models import GoldAnswer
    from app.services.annotations import submit_annotation

    gold = db.get(GoldAnswer, offer.task_id)
    ids = [g for g, _ in offer.responses]
    if offer.kind == "pairwise":
        if gold is None:
            feedback = {"choice": "tie"}
        else:
            wanted = gold.answer["chosen_id"]
            feedback = {"choice": "chosen", "chosen_id": wanted if right else next(g for g in ids if g != wanted)}
            feedback["strength"] = 2
    elif offer.kind == "ranking":
        ranking = gold.answer["ranking"] if gold else ids
        feedback = {"ranking": ranking if right else list(reversed(ranking))}
    else:
        feedback = {"ratings": {str(g): "good" for g in ids}}
    result = submit_annotation(
        db, user=user, task_id=offer.task_id, feedback=feedback, idempotency_key=uuid.uuid4().hex, max_text_bytes=65536
    )
    db.commit()
    return result


def make_tasks(db, *lines: dict) -> list[int]:
    """Import these task lines (committed); returns their task ids in order."""
    result = import_task_specs(db, specs=parse_task_items(list(lines), max_text_bytes=64 * 1024))
    db.commit()
    return result.task_ids


def make_batch(db, *lines: dict, kind: str = "generate") -> tuple[Job, list[int]]:
    """A task batch: a job of `kind` and these task lines as its tasks (committed); (the job, its task ids)."""
    job = make_job(db, kind=kind)
    task_ids = make_tasks(db, *lines)
    for task_id in task_ids:
        db.get(Task, task_id).job_id = job.id
    db.commit()
    return job, task_ids


def jsonl(*lines: dict) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def make_annotators(db, n: int, *, is_ai: bool = False) -> list:
    """Users without a password (no argon2 cost): for service-level tests that never log in."""
    from app.models import User
    from app.security import new_public_id

    users = [
        User(
            username=f"ann-{uuid.uuid4().hex[:10]}",
            role="annotator",
            password_hash=None,
            is_ai=is_ai,
            public_id=new_public_id(),
        )
        for _ in range(n)
    ]
    db.add_all(users)
    db.commit()
    return users


# ---- A small annotation database that covers every export format ---------------------------------------------------


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build_dataset(db) -> SimpleNamespace:
    """Two humans and an AI judge over every kind of task; one undone annotation."""
    alice, bob = make_annotator(db, "alice"), make_annotator(db, "bob")
    judge = make_annotator(db, "judge", is_ai=True)
    model = make_model(db, "policy-v1")
    p1 = make_prompt(db, "What is 2+2?")
    g1a, g1b = make_generation(db, p1, "4", model=model, seed=11), make_generation(db, p1, "5", model=model, seed=12)
    t1 = make_task(db, p1, [g1a, g1b], overlap=2)
    a1 = annotate_pairwise(db, t1, alice, chosen=g1a, strength=3, shown=[g1b, g1a], created_at=T0, time_spent_ms=1200)
    a2 = annotate_pairwise(db, t1, bob, chosen=g1a, strength=1, created_at=T0 + timedelta(hours=1))
    p2 = make_prompt(db, "Name a colour.")
    g2a, g2b = make_generation(db, p2, "red", model=model), make_generation(db, p2, "blue", model=model)
    t2 = make_task(db, p2, [g2a, g2b], overlap=2)
    a3 = annotate_pairwise(db, t2, alice, chosen=None, choice="tie", created_at=T0 + timedelta(hours=2))
    a4 = annotate_pairwise(db, t2, bob, chosen=None, choice="both_bad", created_at=T0 + timedelta(hours=3))
    p3 = make_prompt(db, "Count to three.")
    g3 = [make_generation(db, p3, t, model=model) for t in ("1 2 3", "1 2", "one")]
    t3 = make_task(db, p3, g3, kind="ranking")
    a5 = annotate_ranking(db, t3, alice, ranking=[g3[0], g3[2], g3[1]], created_at=T0 + timedelta(hours=4))
    p4 = make_prompt(db, "Greet me.")
    g4a, g4b = (
        make_generation(db, p4, "Hello!", model=model),
        make_generation(db, p4, "=cmd|' /C calc'!A0", model=model),
    )
    t4 = make_task(db, p4, [g4a, g4b], kind="rating")
    a6 = annotate_rating(
        db,
        t4,
        bob,
        ratings={g4a: "good", g4b: "bad"},
        rewrite="Hello, nice to meet you!",
        critiques={str(g4b.id): "not a greeting"},
        created_at=T0 + timedelta(hours=5),
    )
    p5 = make_prompt(db, messages=[{"role": "system", "content": "Be short."}, {"role": "user", "content": "Sky?"}])
    g5a, g5b = make_generation(db, p5, "Blue."), make_generation(db, p5, "It is a long story about light.")
    t5 = make_task(db, p5, [g5a, g5b])
    a7 = annotate_pairwise(db, t5, judge, chosen=g5a, strength=2, source="ai", created_at=T0 + timedelta(hours=6))
    p6 = make_prompt(db, "Held out?", split="eval")
    g6a, g6b = make_generation(db, p6, "yes", model=model), make_generation(db, p6, "no", model=model)
    t6 = make_task(db, p6, [g6a, g6b])
    a8 = annotate_pairwise(db, t6, bob, chosen=g6b, strength=None, created_at=T0 + timedelta(hours=7))
    undone = annotate_pairwise(db, t6, alice, chosen=g6a, created_at=T0 + timedelta(hours=8))
    undone.deleted_at = T0 + timedelta(hours=8, minutes=1)
    db.commit()
    return SimpleNamespace(**locals())


def export_lines(db, fmt, **kw):
    include_ties = kw.pop("include_ties", False)
    rewrites = kw.pop("rewrites", "include")
    return [
        line
        for batch in iter_export(db, fmt=fmt, filters=ExportFilters(**kw), include_ties=include_ties, rewrites=rewrites)
        for line in batch
    ]


# ---- A tiny arithmetic world for round tests (gold_score is its gold judge) ----------------------------------------


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
            prompts[split].append(make_prompt(db, PROMPT.format(a=a, b=b), split=split))
    return prompts


def label_preferences(db, prompts, *, annotator, model=None, source: str = "human", flip_every: int = 0):
    """One pairwise task per prompt (right vs wrong sum, in alternating positions), the right one chosen.
    `flip_every` > 0 chooses the wrong one on every n-th task (label noise)."""
    annotations = []
    for i, prompt in enumerate(prompts):
        a, b = map(int, re.findall(r"\d+", prompt.text)[:2])
        right = make_generation(db, prompt, f" {a + b}", model=model, seed=2 * i)
        wrong = make_generation(db, prompt, f" {a + b + 3 + i % 5}", model=model, seed=2 * i + 1)
        pair = [right, wrong] if i % 2 else [wrong, right]
        task = make_task(db, prompt, pair, kind="pairwise")
        chosen = wrong if flip_every and i % flip_every == flip_every - 1 else right
        annotations.append(annotate_pairwise(db, task, annotator, chosen=chosen, source=source))
    return annotations


def labelled_world(db, policy_path="/models/sft", *, train: int, eval: int, noise_every: int = 0):
    """A current SFT policy at `policy_path`, `train` + `eval` prompts, and one human preference per train prompt
    (every `noise_every`-th one wrong). Commits."""
    human = make_annotator(db)
    policy = register_policy(db, policy_path)
    prompts = make_prompts(db, train=train, eval=eval)
    label_preferences(db, prompts["train"], annotator=human, flip_every=noise_every)
    db.commit()
    return policy, prompts


def tiny_round_config(**overrides) -> dict:
    """A PPO round small enough for a test: a few reward epochs, two PPO steps, few eval prompts."""
    config = {
        "algo": "ppo",
        "min_pairs": 10,
        "seed": 0,
        "reward": {"epochs": 3, "early_stopping_patience": 0, "batch_size": 8, "lr": 2e-3},
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


# ---- Tiny Hugging Face model directories for app tests -------------------------------------------------------------

ARITHMETIC_CORPUS = [f"question: what is {a} plus {b}? answer: {a + b}" for a in range(12) for b in range(12)]


def build_arithmetic_tokenizer(root: Path) -> Path:
    from trainer.tokenizer import TokenizerConfig, train_tokenizer

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(ARITHMETIC_CORPUS) + "\n", encoding="utf-8")
    return train_tokenizer(TokenizerConfig(input=[str(corpus)], vocab_size=300, out=str(root / "tokenizer")))


def tiny_gpt2_config(tok, *, n_layer: int = 1, n_embd: int = 16, n_positions: int = 128, **extra):
    """A GPT-2 config small enough for a test (2 heads), its vocabulary and special tokens the tokenizer's."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def build_arithmetic_model(root: Path, tokenizer_dir: Path, *, kind: str, name: str) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_gpt2_config(tok, num_labels=1)
    model = GPT2LMHeadModel(config) if kind == "policy" else GPT2ForSequenceClassification(config)
    out = root / name
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


# ---- A synthetic word world for the RL stages (good words, bad words) ----------------------------------------------

GOOD = [f"g{c}" for c in "abcdefghij"]
BAD = [f"b{c}" for c in "abcdefghij"]
NEUTRAL = [f"n{c}" for c in "abcdefgh"]
WORDS = GOOD + BAD + NEUTRAL
EOS, PAD = "<|endoftext|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
    "<|endoftext|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_word_tokenizer(out: Path):
    """Byte-level BPE where every synthetic word (with its leading space) is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(300)]
    corpus += ["<|user|> <|assistant|> <|system|>"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, min_frequency=2, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD, model_max_length=256
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def build_tiny_lm(out: Path, *, n_layer: int = 2, n_embd: int = 32, seed: int = 0, dropout: float = 0.1) -> Path:
    """GPT-2 with 2 layers, d=32 (dropout on in the config: RL code must switch it off itself)."""
    import torch
    from transformers import GPT2LMHeadModel

    out = Path(out)
    tok = build_word_tokenizer(out)
    cfg = tiny_gpt2_config(
        tok, n_layer=n_layer, n_embd=n_embd, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def synthetic_pair(rng: random.Random, n_words: int = 8, good_frac: float = 0.8) -> dict:
    prompt = " ".join(rng.choice(NEUTRAL) for _ in range(4))

    def resp(main, other):
        return " " + " ".join(rng.choice(main if rng.random() < good_frac else other) for _ in range(n_words))

    return {"prompt": prompt, "chosen": resp(GOOD, BAD), "rejected": resp(BAD, GOOD)}


def run_metrics(out: Path) -> list[dict]:
    """A stage's metrics.jsonl lines with the peak memory of its final line checked and set apart: it measures the
    machine (the process's high-water mark), so two runs with the same seed agree on every other number."""
    from trainer.outputs import PEAK_MEMORY_METRIC

    lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1][PEAK_MEMORY_METRIC] > 0
    for line in lines:
        line.pop(PEAK_MEMORY_METRIC, None)
    return lines


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def good_word_reward(prompt: str, response: str) -> float:
    """A judge for `--judge py:`: fraction of good words in the response."""
    words = response.split()
    return sum(w in GOOD for w in words) / max(len(words), 1)


# ---- Browser sessions: CSRF tokens ---------------------------------------------------------------------------------


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def session_csrf(client) -> str:
    """The CSRF token of the client's current session, read from its signed cookie."""
    from app.security import SessionSigner

    cookie = client.cookies.get("rlhf_session")
    session = SessionSigner("test-secret-key", 3600).loads(cookie)
    assert session is not None and session.user_id is not None
    return session.csrf


# ---- Processes: the `rlhf` CLI and servers as tests start them ---------------------------------------------


def rlhf_command() -> list[str]:
    """The installed console script, else the module (a checkout run without `pip install -e`)."""
    script = Path(sys.executable).parent / "rlhf"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, *, timeout: float, what: str = "condition", interval: float = 0.05, on_timeout=None):
    """Poll until `condition()` is truthy and return its value; on timeout fail, with `on_timeout()` (a log) said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")


# ---- Who holds a transaction open ----------------------------------------------------------------------------------


def transaction_held(db_url: str) -> bool:
    """Whether a connection keeps a transaction open on this database: on SQLite the writer gate is taken (every
    transaction of the default engine takes it); on PostgreSQL a connection has sat idle in a transaction for more
    than a moment (a live one is between two statements for far less)."""
    import fcntl

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if db_url.startswith("sqlite"):
        with open(db_url.removeprefix("sqlite:///") + ".write-gate", "a+b") as handle:  # a separate open file
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                        "state = 'idle in transaction' AND now() - state_change > interval '300 milliseconds'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def wait_in_page(page, expression: str, *, timeout: float = 10.0) -> None:
    """Waits until a JS expression is truthy in the page. Playwright's wait_for_function evals its predicate inside
    the page, which the Content-Security-Policy refuses (no 'unsafe-eval'); page.evaluate goes through the devtools
    protocol, which it does not."""
    wait_for(lambda: page.evaluate(f"Boolean({expression})"), timeout=timeout, interval=0.1, what=expression)
