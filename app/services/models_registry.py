"""The model registry: policies and reward models (any local Hugging Face directory), with lineage.

A directory is registered only when the head its config.json declares matches its kind (a policy directory is
not a reward model: loading it as one would only add an untrained score head) and after it loads:
`AutoModelForCausalLM` for a policy,
`AutoModelForSequenceClassification` for a reward model, and `AutoTokenizer` for both. The check runs in a
subprocess (`python -m app.services.models_registry --check DIR KIND`), so the web process never imports torch
or transformers and a broken model cannot take it down.

A LoRA adapter directory (what `peft` saves: `adapter_config.json`, the trainer's output under `--lora-r`) registers
like a whole model: its task type stands for the head (CAUSAL_LM a policy, SEQ_CLS a reward model), it is checked
with peft's `AutoPeftModelFor...`, and the registered model its config names as base is recorded (`base_model_id`).
Everything that reads a model directory (the trainer's stages, generation) takes either. `merge_adapter` writes the
base with the adapter merged in as a plain `save_pretrained` directory and registers it.

One model per kind is current (a partial unique index holds that in the database). The first model registered
of a kind becomes current; `promote` makes another one current; `rollback` goes back to the current one's
parent (or, without a parent of that kind, to the newest older model of that kind).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import ModelVersion
from app.services.errors import ServiceError
from domain.vocabulary import MODEL_KINDS, REGISTERED_STAGES, one_of

CHECK_TIMEOUT_S = 600
LOADERS = {"policy": "AutoModelForCausalLM", "reward": "AutoModelForSequenceClassification"}
ADAPTER_LOADERS = {"policy": "AutoPeftModelForCausalLM", "reward": "AutoPeftModelForSequenceClassification"}
ADAPTER_CONFIG = "adapter_config.json"  # as trainer.adapters names it (the service does not import the trainer)
# peft's task type of each kind's adapter
ADAPTER_TASKS = {"policy": ("CAUSAL_LM",), "reward": ("SEQ_CLS",)}
# The architecture names (config.json "architectures") of each kind's head.
HEADS = {
    "policy": ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"),
    "reward": ("ForSequenceClassification",),
}
HEAD_WORDS = {"policy": "a language-modelling head", "reward": "a score head (…ForSequenceClassification)"}


class ModelError(ServiceError):
    """Bad input for a registry operation; the message is safe to show."""


def check_loads(*, path: Path, kind: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raise ModelError with the reason unless `path` loads as a model of `kind` (and its tokenizer)."""
    if kind not in LOADERS:
        raise ModelError(f"kind must be policy or reward, not {kind!r}")
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory")
    adapter = is_adapter(path)
    if adapter:
        adapter_base_path(path)  # its base must be there
    elif not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json (expected a save_pretrained directory)")
    mismatch = adapter_mismatch(path, kind) if adapter else head_mismatch(path, kind)
    if mismatch:
        raise ModelError(mismatch)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "app.services.models_registry", "--check", str(path), kind],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: loading took more than {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if x.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        loader = (ADAPTER_LOADERS if adapter else LOADERS)[kind]
        raise ModelError(f"{path} does not load as a {kind} model ({loader}): {reason}")


def is_adapter(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _adapter_config(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelError(f"{path}: {ADAPTER_CONFIG} is not readable JSON") from None
    if not isinstance(spec, dict) or not spec.get("base_model_name_or_path"):
        raise ModelError(f"{path}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return spec


def adapter_base_path(path: Path) -> Path:
    """The base directory an adapter names (a relative path read against the adapter's own directory)."""
    base = Path(_adapter_config(path)["base_model_name_or_path"]).expanduser()
    base = (base if base.is_absolute() else Path(path) / base).resolve()
    if not base.is_dir():
        raise ModelError(f"{path}: its base model {base} is missing")
    return base


def adapter_mismatch(path: Path, kind: str) -> str | None:
    """Why an adapter's task type does not fit `kind`; None when it does or declares none."""
    task = _adapter_config(path).get("task_type")
    if not task or task in ADAPTER_TASKS[kind]:
        return None
    other = next(k for k in ADAPTER_TASKS if k != kind)
    what = f"a {other} adapter" if task in ADAPTER_TASKS[other] else f"an adapter for {task}"
    return f"{path} is {what}, not a {kind} model: a {kind} adapter has task type {ADAPTER_TASKS[kind][0]}"


def head_mismatch(path: Path, kind: str) -> str | None:
    """Why the architectures config.json declares do not fit `kind`; None when they do or none are declared
    (the load check then decides)."""
    try:
        declared = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: the load check says why
    if not declared or any(str(a).endswith(HEADS[kind]) for a in declared):
        return None
    names = ", ".join(map(str, declared))
    other = next(k for k in HEADS if k != kind)
    what = f"a {other} model" if any(str(a).endswith(HEADS[other]) for a in declared) else "not a model of any kind"
    return f"{path} is {what} ({names}), not a {kind} model: a {kind} model has {HEAD_WORDS[kind]}"


def register_model(
    session: Session,
    *,
    path: str | Path,
    name: str,
    kind: str,
    stage: str = "pretrained",
    parent_id: int | None = None,
    job_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    check: bool = True,
) -> ModelVersion:
    problem = one_of("kind", kind, MODEL_KINDS) or one_of("stage", stage, REGISTERED_STAGES)
    if problem:
        raise ModelError(problem)
    if not name or len(name) > 128:
        raise ModelError("name must be 1-128 characters")
    path = Path(path).expanduser().resolve()
    if check:
        # before any query: the check takes seconds, and a transaction open across it would hold SQLite's writer
        # gate (every annotator waits) or keep a PostgreSQL connection idle in transaction
        check_loads(path=path, kind=kind)
    if parent_id is not None and session.get(ModelVersion, parent_id) is None:
        raise ModelError(f"no model {parent_id} (parent)", status=404)
    base_model_id = None
    if is_adapter(path):
        base = str(adapter_base_path(path))
        base_model_id = session.scalar(
            select(ModelVersion.id).where(ModelVersion.path == base).order_by(ModelVersion.id.desc()).limit(1)
        )
    has_current = session.scalar(
        select(ModelVersion.id).where(ModelVersion.kind == kind, ModelVersion.is_current.is_(True))
    )
    model = ModelVersion(
        name=name,
        kind=kind,
        stage=stage,
        path=str(path),
        parent_id=parent_id,
        base_model_id=base_model_id,
        job_id=job_id,
        metrics=metrics or {},
        is_current=has_current is None,
    )
    session.add(model)
    session.flush()
    return model


def list_models(session: Session, *, kind: str | None = None) -> list[ModelVersion]:
    stmt = select(ModelVersion).order_by(ModelVersion.id)
    if kind is not None:
        stmt = stmt.where(ModelVersion.kind == kind)
    return list(session.scalars(stmt))


def get_model(session: Session, *, model_id: int) -> ModelVersion:
    model = session.get(ModelVersion, model_id)
    if model is None:
        raise ModelError(f"no model {model_id}", status=404)
    return model


def current_model(session: Session, *, kind: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.kind == kind, ModelVersion.is_current.is_(True)))


def promote(session: Session, *, model_id: int) -> ModelVersion:
    """Make this model the current one of its kind."""
    model = get_model(session, model_id=model_id)
    if model.kind == "policy" and model.stage == "imported":
        raise ModelError(f"model {model_id} stands for imported responses, not a policy that can generate")
    # Clear first, then set: the one-current-per-kind index must hold after every statement.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.kind == model.kind, ModelVersion.id != model.id, ModelVersion.is_current.is_(True))
        .values(is_current=False)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    model.is_current = True
    session.flush()
    return model


def rollback(session: Session, *, kind: str = "policy") -> ModelVersion:
    """Make the current model's parent (or the newest older model of the kind) current again."""
    current = current_model(session, kind=kind)
    if current is None:
        raise ModelError(f"no current {kind} model to roll back from")
    target = session.get(ModelVersion, current.parent_id) if current.parent_id is not None else None
    if target is None or target.kind != kind:
        target = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.kind == kind, ModelVersion.id < current.id, ModelVersion.stage != "imported")
            .order_by(ModelVersion.id.desc())
            .limit(1)
        )
    if target is None:
        raise ModelError(f"{kind} model {current.id} has no earlier version to roll back to")
    return promote(session, model_id=target.id)


def imported_model(session: Session) -> ModelVersion:
    """The registry entry that imported responses point at (model `imported`), created on first use."""
    model = session.scalar(
        select(ModelVersion).where(ModelVersion.name == "imported", ModelVersion.stage == "imported")
    )
    if model is None:
        model = ModelVersion(name="imported", kind="policy", stage="imported", path="", metrics={}, is_current=False)
        session.add(model)
        session.flush()
    return model


def merge_adapter(
    session: Session, *, model_id: int, out: str | Path | None = None, name: str | None = None
) -> ModelVersion:
    """Write adapter model `model_id` merged into its base (peft merge_and_unload) as a plain save_pretrained
    directory (default: beside the adapter, `DIR-merged`), and register it: same kind and stage, the adapter as
    parent. Runs in a subprocess, as the load check does (the service never imports torch)."""
    model = get_model(session, model_id=model_id)
    source = Path(model.path)
    if not is_adapter(source):
        raise ModelError(f"model {model_id} is a whole model, not a LoRA adapter: nothing to merge")
    target = Path(out).expanduser().resolve() if out else source.with_name(f"{source.name}-merged")
    if target.exists():
        raise ModelError(f"{target} already exists; choose another output directory", status=409)
    name = name or f"{model.name}-merged"[:128]
    kind, stage, parent_id = model.kind, model.stage, model.id
    session.rollback()  # no transaction held across the subprocess (see register_model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "app.services.models_registry", "--merge", str(source), str(target), kind],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"{source}: merging took more than {CHECK_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if x.strip()]
        raise ModelError(f"{source}: cannot merge: {lines[-1] if lines else proc.returncode}")
    # the merge subprocess loaded it and saved it with save_pretrained: no second load check
    return register_model(session, path=target, name=name, kind=kind, stage=stage, parent_id=parent_id, check=False)


def model_to_dict(model: ModelVersion) -> dict[str, Any]:
    return {
        "id": model.id,
        "name": model.name,
        "kind": model.kind,
        "stage": model.stage,
        "path": model.path,
        "parent_id": model.parent_id,
        "base_model_id": model.base_model_id,
        "job_id": model.job_id,
        "current": model.is_current,
        "metrics": model.metrics,
        "created_at": model.created_at.isoformat() if model.created_at else None,
    }


def _load(path: str, kind: str):
    import transformers

    if is_adapter(Path(path)):
        import peft

        transformers.logging.set_verbosity_error()  # a reward adapter's base has no head yet: the adapter brings it
        extra = {"num_labels": 1} if kind == "reward" else {}
        return getattr(peft, ADAPTER_LOADERS[kind]).from_pretrained(path, local_files_only=True, **extra)
    return getattr(transformers, LOADERS[kind]).from_pretrained(path, local_files_only=True)


def _check_main(path: str, kind: str) -> int:
    """The subprocess side of check_loads: load the model and its tokenizer, print a line, exit 0."""
    import transformers

    try:
        model = _load(path, kind)
        transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # any loading failure is the reason shown to the user
        print(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", file=sys.stderr)
        return 1
    params = sum(p.numel() for p in model.parameters())
    print(f"ok {type(model).__name__} {params} parameters")
    return 0


def _merge_main(source: str, target: str, kind: str) -> int:
    """The subprocess side of merge_adapter: base + adapter merged, saved whole with the tokenizer beside it."""
    import shutil
    import tempfile

    import transformers

    try:
        merged = _load(source, kind).merge_and_unload()
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        if merged.config.pad_token_id is None:
            merged.config.pad_token_id = tok.pad_token_id  # a reward model pools at the last non-PAD token
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{Path(target).name}.tmp-", dir=Path(target).parent))
        merged.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        for extra in ("likelihood_feature.json",):  # a reward model's likelihood feature travels with it
            if (Path(source) / extra).is_file():
                shutil.copy(Path(source) / extra, tmp / extra)
        os.rename(tmp, target)
    except Exception as exc:  # any failure is the reason shown to the user
        print(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", file=sys.stderr)
        return 1
    print(f"ok merged {type(merged).__name__} into {target}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        sys.exit(_check_main(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 5 and sys.argv[1] == "--merge":
        sys.exit(_merge_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    print(
        "usage: python -m app.services.models_registry --check DIR policy|reward | --merge DIR OUT policy|reward",
        file=sys.stderr,
    )
    sys.exit(2)
