"""The import contracts in pyproject.toml (import-linter, also run by `make test`): the code keeps every one, and
each one can fail: on a copy of the code with one offending import per contract, every contract is BROKEN."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.factories import ROOT

LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"

# One offending module per contract: (file to write in the copy, its code).
LEAKS = {
    "trainer is a library and never imports the service": ("trainer/leak_app.py", "import app.models\n"),
    # a stage module importing another (written over best_of_n.py in the copy)
    "trainer stage modules are leaves (independent of each other)": (
        "trainer/best_of_n.py",
        "import trainer.generate\n",
    ),
    "domain is the shared vocabulary and imports neither the service nor the trainer": (
        "domain/leak_trainer.py",
        "import trainer.config\n",
    ),
    "app layers: entry points over routes over services over the data model": (
        "app/services/leak_route.py",
        "import app.web.home\n",
    ),
    "services never render HTML nor answer HTTP": ("app/services/leak_html.py", "import app.templating\n"),
    "routes never run SQL (queries live in services)": ("app/api/leak_sql.py", "import sqlalchemy\n"),
    "the annotate hot path never imports routes": ("app/annotate/leak_route.py", "import app.api.tasks\n"),
}


def _contracts() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [c["name"] for c in config["tool"]["importlinter"]["contracts"]]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_contract_is_kept_by_the_code():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in _contracts():
        assert f"{name} KEPT" in result.stdout


def test_every_contract_has_a_leak_to_catch():
    assert sorted(LEAKS) == sorted(_contracts())


def test_every_contract_catches_its_leak(tmp_path):
    for package in ("app", "trainer", "domain"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, code in LEAKS.values():
        (tmp_path / path).write_text(code)
    result = _lint(tmp_path)
    assert result.returncode != 0
    for name in LEAKS:
        assert f"{name} BROKEN" in result.stdout, result.stdout
