"""The whole documented API under schemathesis, as an admin and as an annotator: cases generated from the OpenAPI
schema, valid and invalid, seeded (derandomized) so that a run is repeatable, and not one answer is a server
error (schemathesis' not_a_server_error check). Each operation gets a fresh user and token, so an operation that
revokes or deactivates does not blind the ones after it."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.factories import make_annotator, make_tasks, task_line

EXAMPLES = 6  # per operation, role and mode: the whole run stays well under a minute
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.fixture
def schema(app, client, db):
    make_tasks(db, task_line(overlap=3), task_line(kind="ranking"), task_line(kind="rating"))
    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.app = app
    return loaded


def fuzz(operation, mode: GenerationMode, role: str, headers: dict[str, str], counts: dict, failures: list) -> None:
    """EXAMPLES seeded cases of one operation in one mode, with the role's token."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    def run(case):
        counts["cases"] += 1
        case.headers = {**(case.headers or {}), **headers}
        where = f"{role} {mode.value} {operation.label}"
        try:
            response = case.call()
        except Exception as exc:  # the test client re-raises what the app let through (a 500)
            failures.append(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0])
            return
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except AssertionError as exc:
            failures.append(f"{where}: {exc}".splitlines()[0] + f" {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation with no input has no invalid case


@pytest.mark.slow
def test_no_operation_answers_a_server_error_to_an_admin_or_an_annotator(schema, db, make_token):
    def caller(role: str) -> dict[str, str]:
        """A fresh user (no password: hashing one costs more than the operation's cases) and bearer token."""
        user = make_annotator(db, role=role)
        db.commit()
        return {"Authorization": f"Bearer {make_token(user)}"}

    failures: list[str] = []
    counts = {"operations": 0, "cases": 0}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        counts["operations"] += 1
        for role in ("admin", "annotator"):
            headers = caller(role)
            for mode in MODES:
                fuzz(operation, mode, role, headers, counts, failures)
    elapsed = time.monotonic() - started
    print(
        f"schemathesis: {counts['operations']} operations, {counts['cases']} cases, {len(failures)} server errors "
        f"in {elapsed:.1f} s"
    )
    assert counts["operations"] >= 30 and counts["cases"] > counts["operations"] * 2 * len(MODES)
    assert not failures, "\n".join(sorted(set(failures)))
