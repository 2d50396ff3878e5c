"""Import-linter contracts in pyproject.toml (also run by make test): trainer/ never imports app/; the annotate hot
path (app/annotate) never imports routes (app.api, app.web)."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_contract_is_kept_by_the_code():
    result = _lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trainer is a library and never imports the service KEPT" in result.stdout
    assert "the annotate hot path never imports routes KEPT" in result.stdout


def _skeleton(root: Path, leak: tuple[str, str]) -> None:
    """Empty packages for every module the contracts name, plus one module `leak[0]` that imports `leak[1]`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = set(config["root_packages"])
    for contract in config["contracts"]:
        names.update(contract.get("source_modules", []), contract.get("forbidden_modules", []))
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            package = root.joinpath(*parts[:depth])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").write_text("")
    module, imported = leak
    root.joinpath(*module.split(".")).with_suffix(".py").write_text(f"import {imported}\n")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")


def test_contract_catches_a_trainer_module_importing_app(tmp_path):
    """The same contract, on a copy where trainer imports app, is broken: the check can fail."""
    _skeleton(tmp_path, ("trainer.leak", "app"))
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0 and "trainer is a library and never imports the service BROKEN" in result.stdout


def test_contract_catches_the_annotate_hot_path_importing_a_route(tmp_path):
    """On a copy where app.annotate imports app.api, the annotate contract is broken."""
    _skeleton(tmp_path, ("app.annotate.leak", "app.api"))
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0 and "the annotate hot path never imports routes BROKEN" in result.stdout
