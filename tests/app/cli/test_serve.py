"""`rlhf serve` (and so `rlhf demo`, which runs it): uvicorn believes X-Forwarded-* only from configured proxies."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import csrf_from

MAX_FAILURES = 3  # each failed login costs an argon2 verification: few of them


def _serve(serve_live, monkeypatch, **env: str) -> str:
    """Run `rlhf serve` in this process with uvicorn's options as it passes them, on a live server; its URL."""
    import uvicorn
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.settings import get_settings

    for name, value in {"RLHF_LOGIN_MAX_FAILURES": str(MAX_FAILURES), **env}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    launched: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: launched.append(serve_live(target, **options)))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 0 and len(launched) == 1, result.output
    return launched[0]


def _failed_logins(url: str, forwarded_for: list[str]) -> list[int]:
    """One failed login per forged address (each for a username of its own): their statuses."""
    with httpx.Client(base_url=url, timeout=60) as http:
        token = csrf_from(http.get("/login").text)
        return [
            http.post(
                "/login",
                data={"username": f"ghost{i}", "password": "nope-nope", "csrf_token": token},
                headers={"X-Forwarded-For": address},
            ).status_code
            for i, address in enumerate(forwarded_for)
        ]


def test_a_forged_x_forwarded_for_from_loopback_does_not_dodge_the_login_throttle(settings, serve_live, monkeypatch):
    """Before: uvicorn's default believes X-Forwarded-For from 127.0.0.1, so a local client naming a new address in
    each request was never throttled per address."""
    url = _serve(serve_live, monkeypatch)
    statuses = _failed_logins(url, [f"203.0.113.{i}" for i in range(MAX_FAILURES + 1)])
    assert statuses == [401] * MAX_FAILURES + [429]  # all counted against the connection's own address


def test_configured_proxies_are_believed(settings, serve_live, monkeypatch):
    """Behind a configured proxy each forwarded client has a throttle of its own."""
    url = _serve(serve_live, monkeypatch, RLHF_FORWARDED_ALLOW_IPS="127.0.0.1, ::1")
    assert _failed_logins(url, ["203.0.113.7"] * MAX_FAILURES + ["203.0.113.8"]) == [401] * (MAX_FAILURES + 1)
    assert _failed_logins(url, ["203.0.113.7"]) == [429]


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "1.2.3.4,nope"])
def test_a_bad_proxy_address_is_refused(monkeypatch, value):
    from pydantic import ValidationError

    from app.settings import Settings

    monkeypatch.setenv("RLHF_FORWARDED_ALLOW_IPS", value)
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings()


def test_serve_names_a_bad_proxy_setting_and_exits_2(tmp_path):
    import os
    import subprocess
    import sys

    from tests.factories import ROOT

    env = {**os.environ, "RLHF_DATA_DIR": str(tmp_path), "RLHF_FORWARDED_ALLOW_IPS": "localhost"}
    env.pop("RLHF_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: RLHF_FORWARDED_ALLOW_IPS: Value error, 'localhost' is not an IP address, a network or *"
    ]
