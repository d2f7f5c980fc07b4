"""The database goes away under load, then comes back (SPEC §12, issue 11 deliverable 4).

Two gunicorn workers verify a mix of valid, expired and forged tokens while
the test database becomes unreachable: a SQLite file moved away (lane 1), or
a PostgreSQL database that refuses connections with its sessions terminated
(lane 2). Every answer must be right or 503: never a 500, never a bad token
accepted. When the database is back, the same worker processes answer
correctly again without a restart.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from .servers import _admin_connection, lane, manage, process_env, serving

WORKERS = 2
GUNICORN = ("-m", "gunicorn", "demo_site.wsgi:application", "--workers", str(WORKERS),
            "--bind", "127.0.0.1:{port}", "--log-level", "critical")  # fmt: skip


@pytest.fixture
def env(tmp_path):
    env = process_env("tests.worker_settings", tmp_path / "db.sqlite3")
    env["CHAT_SECURITY_TEST_CACHE"] = str(tmp_path / "cache")
    env["CHAT_SECURITY_TEST_POLL"] = "1"  # ask the database every KEY_CACHE_SECONDS
    manage(env, "migrate", "--noinput", "-v0")
    return env


@contextlib.contextmanager
def database_down(env):
    """The workers' database is unreachable inside the block."""
    if env["CHAT_SECURITY_TEST_LANE"] == "pg":
        name = env["CHAT_SECURITY_TEST_DB"]
        with _admin_connection() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            try:
                yield
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    else:
        path = Path(env["CHAT_SECURITY_TEST_DB"])
        away = path.with_suffix(".away")
        path.rename(away)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # the empty file a failed connection left
            away.rename(path)


def ask(base: str, token: str) -> tuple[int, str | None, int | None]:
    request = urllib.request.Request(
        base + "/chat/api/worker",
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, None, json.loads(response.read())["pid"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}").get("error"), None


def test_database_outage_under_load_is_503_never_wrong_and_recovers(env):
    secret = json.loads(manage(env, "chat_security", "generate-secret"))
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 3600}
    headers = {"kid": secret["kid"]}
    tokens = {
        "valid": jwt.encode(claims, secret["secret"], algorithm="HS256", headers=headers),
        "expired": jwt.encode(
            {**claims, "iat": now - 7200, "exp": now - 3600},
            secret["secret"],
            algorithm="HS256",
            headers=headers,
        ),
        "forged": jwt.encode(claims, "not-the-secret-" * 3, algorithm="HS256", headers=headers),
    }
    right = {
        "valid": (200, None),
        "expired": (401, "expired"),
        "forged": (401, "invalid_signature"),
    }
    with serving(env, *GUNICORN) as port:
        base = f"http://127.0.0.1:{port}"
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < WORKERS and time.monotonic() < deadline:
            for kind, token in tokens.items():
                status, code, pid = ask(base, token)
                assert (status, code) == right[kind]
                if pid is not None:
                    pids.add(pid)
        assert len(pids) == WORKERS  # both workers seen before the outage

        seen: dict[str, set[tuple[int, str | None]]] = {k: set() for k in tokens}
        with database_down(env):
            deadline = time.monotonic() + 4  # > KEY_CACHE_SECONDS + the retry backoff
            while time.monotonic() < deadline:
                for kind, token in tokens.items():
                    status, code, _pid = ask(base, token)
                    assert status != 500
                    assert (status, code) in (right[kind], (503, "unavailable")), (kind, status)
                    seen[kind].add((status, code))
        # The outage was noticed: valid tokens got 503, never a guess.
        assert (503, "unavailable") in seen["valid"], seen

        recovered_pids, deadline = set(), time.monotonic() + 10
        while time.monotonic() < deadline and recovered_pids != pids:
            status, code, pid = ask(base, tokens["valid"])
            if status == 200:
                recovered_pids.add(pid)
        # Every worker answers again, and they are the processes from before the outage.
        assert recovered_pids == pids
    print(f"{lane()}: answers during the outage:", {k: sorted(v) for k, v in seen.items()})
