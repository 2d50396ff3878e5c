"""Shared fixtures: a fresh migrated database per test (SQLite, or PostgreSQL for `backend`-parametrized tests),
settings pointing at a temporary data dir, app clients, users and tokens.

Backends: tests that take the `backend` fixture run on SQLite and on PostgreSQL. PostgreSQL is mandatory under
CI=true (an unreachable server fails the test instead of skipping it).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.factories import csrf_from, session_csrf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: tiny models gain nothing from more, and on a shared 2-core machine a second spinning
# thread slows training ~10x. Child processes (`python -m trainer` in CLI tests) inherit the env var.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

PG_ADMIN_URL = os.environ.get("RLHF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _clear_caches() -> None:
    from app import db, settings

    for fn in (settings.get_settings, db.get_engine, db.get_read_engine, db.get_sessionmaker, db.get_read_sessionmaker):
        fn.cache_clear()


def _dispose_engines() -> None:
    from app import db

    for fn in (db.get_engine, db.get_read_engine):
        if fn.cache_info().currsize:
            fn().dispose()


# ---- migrated templates, built once per session -------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    from app.migrations_runner import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


def _pg_admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database; each test gets a copy (CREATE DATABASE ... TEMPLATE)."""
    from sqlalchemy import text

    from app.migrations_runner import upgrade

    try:
        engine = _pg_admin_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        if CI:
            pytest.fail(f"PostgreSQL is mandatory under CI and unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    name = f"rlhf_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)
    upgrade(url)
    yield name
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _new_pg_database(template: str) -> tuple[str, str]:
    from sqlalchemy import text

    name = f"rlhf_t_{uuid.uuid4().hex[:12]}"
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    engine.dispose()
    return name, re.sub(r"/[^/]*$", f"/{name}", PG_ADMIN_URL)


def _drop_pg_database(name: str) -> None:
    from sqlalchemy import text

    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# ---- the embedded tiny world, built once per test run (shared by xdist workers through a file lock) -----------


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """`trainer.world` at size tiny: data, tokenizer, pretrained and SFT models. Set RLHF_TEST_WORLD_DIR to keep
    it between runs (its stages are cached by their inputs, so a stale one is rebuilt)."""
    from filelock import FileLock

    from trainer.world import build_all

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, shared by its xdist workers
    shared = Path(os.environ.get("RLHF_TEST_WORLD_DIR") or base / "tiny-world")
    shared.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(shared) + ".lock"):
        build_all("tiny", shared)
    return shared


# ---- per-test database and settings -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    """Override with `@pytest.mark.parametrize("backend", BACKENDS, indirect=True)` to run on both."""
    return request.param


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def db_url(request, backend, tmp_path) -> Iterator[str]:
    if backend == "postgres":
        template = request.getfixturevalue("pg_template")
        name, url = _new_pg_database(template)
        yield url
        _dispose_engines()
        _drop_pg_database(name)
    else:
        path = tmp_path / "rlhf.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(monkeypatch, db_url, data_dir):
    """Settings for this test: its own data dir and database; caches cleared before and after."""
    monkeypatch.setenv("RLHF_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RLHF_DATABASE_URL", db_url)
    monkeypatch.setenv("RLHF_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("RLHF_OFFLINE_ASSETS", "1")
    _clear_caches()
    from app.settings import get_settings

    yield get_settings()
    _dispose_engines()
    _clear_caches()


@pytest.fixture
def db(settings):
    """A session on this test's database (commit explicitly to make data visible to the app)."""
    from app.db import get_sessionmaker

    session = get_sessionmaker()()
    yield session
    session.close()


# ---- app, users, clients ------------------------------------------------------------------------------------


@pytest.fixture
def app(settings):
    from app.main import create_app

    return create_app()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def make_user(db):
    """make_user(role="annotator", username=None, password="password123") -> User (committed)."""
    from app.services.users import create_user

    def make(role: str = "annotator", username: str | None = None, password: str = "password123"):
        user = create_user(db, username=username or f"{role}-{uuid.uuid4().hex[:8]}", role=role, password=password)
        db.commit()
        return user

    return make


@pytest.fixture
def make_token(db):
    """make_token(user) -> the bearer token string."""
    from app.services.users import create_token

    def make(user) -> str:
        _row, token = create_token(db, user=user)
        db.commit()
        return token

    return make


@pytest.fixture
def login(client):
    """login(user, password="password123") -> CSRF token of the logged-in session (client keeps the cookie)."""

    def do(user, password: str = "password123") -> str:
        page = client.get("/login")
        token = csrf_from(page.text)
        response = client.post(
            "/login",
            data={"username": user.username, "password": password, "csrf_token": token, "next": "/"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return session_csrf(client)

    return do


@pytest.fixture
def api(client, make_user, make_token):
    """api(role="annotator") -> (user, headers) with a bearer token for /api/v1."""

    def make(role: str = "annotator"):
        user = make_user(role)
        return user, {"Authorization": f"Bearer {make_token(user)}"}

    return make


# ---- tiny trained assets, built once per session through the real trainer stages; tests must not modify them ----
#
#    tiny_corpus_file   text file, one short document a line (a few hundred lines)
#    tiny_tokenizer_dir tokenizer stage output (vocab 400, PAD != EOS, chat template)
#    tiny_lm_dir        pretrain stage output (n_layer=2, n_head=2, n_embd=32, context=64); emits EOS after a line

CORPUS_WORDS = ["cat", "dog", "bird", "sat", "ran", "flew", "on", "the", "mat", "log", "tree", "red", "big", "small"]


def make_corpus_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if i % 2:
            lines.append(f"question: what is {a} plus {b}? answer: {a + b}")
        else:
            lines.append(" ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 8))) + ".")
    return lines


@pytest.fixture(scope="session")
def tiny_corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_corpus_lines(400)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_corpus_file) -> Path:
    from trainer.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    return train_tokenizer(TokenizerConfig(input=[str(tiny_corpus_file)], vocab_size=400, out=str(out)))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, tiny_corpus_file, tiny_tokenizer_dir) -> Path:
    from trainer.pretrain import PretrainConfig, train_pretrain

    out = tmp_path_factory.mktemp("lm") / "lm"
    cfg = PretrainConfig(
        tokenizer=str(tiny_tokenizer_dir),
        data=[str(tiny_corpus_file)],
        out=str(out),
        n_layer=2,
        n_head=2,
        n_embd=32,
        context=64,
        batch_size=16,
        lr=3e-3,
        max_steps=80,
        warmup_steps=5,
        device="cpu",
        seed=0,
    )
    return train_pretrain(cfg)
