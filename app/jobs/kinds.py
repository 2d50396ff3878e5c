"""Imports every module that registers job kinds or periodic hooks, so the worker and its child know them.

Resource modules register their own kinds (e.g. app/services/generation.py registers "generate"); add the
module's name to KIND_MODULES below. Extra modules (tests, plug-ins) come from RLHF_JOB_MODULES, a
comma-separated list of module names.
"""

from __future__ import annotations

import importlib
import os

# Modules of this code base that define job kinds or periodic hooks.
KIND_MODULES: tuple[str, ...] = (
    "app.services.rounds.job",
    "app.services.schedule",
    "app.services.generation",
    "app.services.ai_feedback",
    "app.services.world_build",
)

EXTRA_MODULES_ENV = "RLHF_JOB_MODULES"


def kind_modules() -> list[str]:
    extra = [m.strip() for m in os.environ.get(EXTRA_MODULES_ENV, "").split(",") if m.strip()]
    return [*KIND_MODULES, *extra]


def load_kinds() -> list[str]:
    """Import the kind modules; an import error propagates (a worker that cannot load its kinds must not start)."""
    modules = kind_modules()
    for name in modules:
        importlib.import_module(name)
    return modules
