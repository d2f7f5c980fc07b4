"""Key-store changes made by one process, obeyed by another: two real processes, one database.

Regression tests for issue 8 (defects 1 and 6): a server process serves the
chat API while CLI processes change keys and the mode; the change must be in
force on the server within ``KEY_CACHE_SECONDS`` (1 s in these settings), and
a worker's usage counters must reach the database when it exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from .servers import ROOT, manage, process_env, serving

KEY_CACHE_SECONDS = 1.0  # tests/process_settings.py
SLACK = 0.5  # polling interval + a loaded CI machine


@pytest.fixture
def env(tmp_path):
    env = process_env("tests.process_settings", tmp_path / "db.sqlite3")
    manage(env, "migrate", "--noinput", "-v0")
    return env


def cli(env: dict[str, str], *args: str) -> str:
    return manage(env, "chat_security", *args)


@pytest.fixture
def server(env):
    with serving(
        env, str(ROOT / "manage.py"), "runserver", "--noreload", "127.0.0.1:{port}"
    ) as port:
        yield f"http://127.0.0.1:{port}"


def get(base: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(base + "/chat/api/messages")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(base: str, token: str | None, expected: tuple[int, str | None]) -> float:
    """Seconds until the server answers ``expected`` (status, error code); bounded."""
    start = time.monotonic()
    while time.monotonic() - start < KEY_CACHE_SECONDS + 5:
        status, body = get(base, token)
        if (status, body.get("error")) == expected:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"the server never answered {expected}")


def secret_and_token(env: dict[str, str]) -> tuple[str, str]:
    """A new secret's kid and a token for alice signed with it, both from the CLI."""
    kid = json.loads(cli(env, "generate-secret"))["kid"]
    return kid, cli(env, "issue", "--sub", "alice").strip()


def test_changes_made_by_the_cli_are_obeyed_by_the_server_within_the_interval(env, server):
    base = server
    kid, token = secret_and_token(env)
    assert wait_for(base, token, (200, None)) <= KEY_CACHE_SECONDS + SLACK
    assert get(base)[1]["error"] == "missing_token"
    taken = {}
    for change, token_sent, expected in (
        (("security", "off"), None, (200, None)),
        (("security", "on"), None, (401, "missing_token")),
        (("revoke-user", "alice"), token, (401, "token_revoked")),
        # kid goes into grace, then is revoked while the new secret stays usable
        (("rotate-secret", "--grace", "1"), token, (401, "token_revoked")),
        (("revoke", kid), token, (401, "key_retired")),
    ):
        cli(env, *change)
        taken[" ".join(change)] = wait_for(base, token_sent, expected)
    print("seconds until the server obeyed:", {k: round(v, 2) for k, v in taken.items()})
    assert max(taken.values()) <= KEY_CACHE_SECONDS + SLACK


WORKER = """
import sys
import django
django.setup()
from chat_security import verify
for _ in range(3):
    verify(sys.argv[1])
print("verified")
"""


def test_a_worker_that_exits_writes_its_usage_counters(env):
    kid, token = secret_and_token(env)
    # USAGE_FLUSH_SECONDS is an hour: nothing is written while the worker runs,
    # everything when it exits normally (as gunicorn and uvicorn workers do on SIGTERM).
    done = subprocess.run(
        [sys.executable, "-c", WORKER, token],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "verified" in done.stdout, done.stderr
    assert use_counts(env) == {kid: 3}


def use_counts(env: dict[str, str]) -> dict[str, int]:
    """Every key's ``use_count`` in the database, as another process reads it."""
    return {key["kid"]: key["use_count"] for key in json.loads(cli(env, "status"))["keys"]}
