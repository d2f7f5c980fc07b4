"""Races on PostgreSQL, with real processes and threads (SPEC §12, issue 11).

* Two processes that generate or rotate at the same moment leave exactly one
  active secret (or service key).
* Eight threads verify through rotations and refuse no valid token.
* Usage counters from four processes add up exactly after their exit flush.

Marked ``postgres``: they run in the PostgreSQL lane (``scripts/test.sh`` runs
them there) and *fail* anywhere else; lane 1 deselects them with
``-m "not postgres"``. The SQLite version of the first race is
``tests/security/test_core_audit.py::test_concurrent_key_changes_serialise``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection, connections

from chat_security import tokens
from chat_security.exceptions import TokenError
from chat_security.models import Key

from .servers import ROOT, lane, manage, process_env
from .tokencraft import hs256

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _on_postgresql():
    if lane() != "pg":
        pytest.fail(
            "a PostgreSQL race test ran without PostgreSQL: run it in lane 2 "
            "(DJANGO_SETTINGS_MODULE=tests.settings_pg bash scripts/services.sh "
            ".venv/bin/python -m pytest -m postgres), or deselect it with -m 'not postgres'"
        )


@pytest.fixture
def env(tmp_path):
    env = process_env("tests.process_settings", tmp_path / "db.sqlite3")
    manage(env, "migrate", "--noinput", "-v0")
    return env


def status(env: dict[str, str]) -> list[dict]:
    """Every key as the ``status`` CLI reports it, read by another process."""
    return json.loads(manage(env, "chat_security", "status"))["keys"]


# Prepended to every process's script: set up Django on the lane's database, then
# wait at the start line until the test releases every process at once.
_START = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import django
    django.setup()
    from django.db import connection
    assert connection.vendor == "postgresql", connection.vendor
    start = Path(sys.argv[1])
    (start / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (start / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.002)
    """
)


def run_together(
    env: dict[str, str], script: str, argvs: list[list[str]], where: Path
) -> list[str]:
    """One process per argv, all released at the same moment; their outputs (each exits 0)."""
    where.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START + textwrap.dedent(script), str(where), *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(where.glob("ready-*"))) < len(procs):
            exited = [p for p in procs if p.poll() is not None]
            assert not exited and time.monotonic() < deadline, exited and exited[0].stderr.read()
            time.sleep(0.01)
        (where / "go").touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [out.strip() for out, _err in outputs]


# -- two processes change the keys at the same moment -----------------------------------------

WINDOW = 1.0  # seconds each change holds its transaction open after reading the active key

_CHANGE = """
from chat_security import models
from chat_security.exceptions import KeyStateError
from chat_security.models import Key

read_active = models.KeyManager._lock_active

def slow(self, kind, owner):
    global read_at
    rows = read_active(self, kind, owner)
    read_at = time.time()
    time.sleep(WINDOW)  # widen the window between reading the active key and writing its successor
    return rows

models.KeyManager._lock_active = slow
began = time.time()
try:
    if sys.argv[2] == "rotate":
        Key.objects.rotate_secret(grace=3600)
    elif sys.argv[2] == "service":
        Key.objects.generate_service_keypair(grace=3600)
    else:
        Key.objects.generate_secret()
    result = "ok"
except KeyStateError:
    result = "KeyStateError"
print(result, began, read_at)
""".replace("WINDOW", str(WINDOW))


@pytest.mark.parametrize(
    ("mode", "kind", "results", "keys"),
    [
        ("generate", "secret", ["KeyStateError", "ok"], 1),
        ("rotate", "secret", ["ok", "ok"], 3),
        ("service", "service_key", ["ok", "ok"], 2),
    ],
)
def test_two_processes_changing_keys_at_once_leave_one_active_key(
    env, tmp_path, mode, kind, results, keys
):
    if mode == "rotate":
        manage(env, "chat_security", "generate-secret")
    outputs = run_together(env, _CHANGE, [[mode], [mode]], tmp_path / "start")
    print(f"{mode}: {outputs}")  # result, when it began, when it read the active key
    runs = [(result, float(began), float(read)) for result, began, read in map(str.split, outputs)]
    assert sorted(result for result, _, _ in runs) == results
    began, read = [b for _, b, _ in runs], sorted(r for _, _, r in runs)
    # At the same moment: both were under way before the first one could commit ...
    assert max(began) < read[0] + WINDOW
    # ... and serialised: the second read the active key only after the first had committed.
    assert read[1] - read[0] >= WINDOW
    of_kind = [key for key in status(env) if key["kind"] == kind]
    assert len(of_kind) == keys
    assert [key["state"] for key in of_kind].count("active") == 1
    assert {key["state"] for key in of_kind} <= {"active", "grace"}


# -- eight threads verify while the secret rotates --------------------------------------------

THREADS = 8
ROTATIONS = 10


def token_for(key: Key, secret: str, sub: str) -> str:
    now = int(time.time())
    return hs256(secret, {"sub": sub, "iat": now, "exp": now + 3600}, kid=key.kid)


@pytest.mark.django_db(transaction=True)
def test_eight_threads_verifying_through_rotations_refuse_no_valid_token():
    assert connection.vendor == "postgresql"
    key, secret = Key.objects.generate_secret()
    # Every token here stays valid: its key is active, or in a grace of an hour.
    published = [token_for(key, secret, "user-0")]
    refused: list[tuple[int, str]] = []
    verified = Counter()
    stop = threading.Event()

    def verifier() -> None:
        try:
            while not stop.is_set():
                for n, token in enumerate(list(published)):
                    try:
                        tokens.verify(token)
                        verified[threading.get_ident()] += 1
                    except TokenError as exc:
                        refused.append((n, exc.code))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=verifier) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, ROTATIONS + 1):
            time.sleep(0.1)
            key, secret = Key.objects.rotate_secret(grace=3600)
            # Published once the rotation has committed, as a client would get the new secret.
            published.append(token_for(key, secret, f"user-{n}"))
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    print(f"{sum(verified.values())} verifications in {THREADS} threads, {ROTATIONS} rotations")
    assert refused == [], Counter(refused)  # (published token's index, error code): count
    assert len(verified) == THREADS and min(verified.values()) > ROTATIONS
    assert [k.state() for k in Key.objects.order_by("pk")] == ["grace"] * ROTATIONS + ["active"]


# -- four processes count uses, then exit -----------------------------------------------------

PROCESSES = 4
USES = 250

_COUNT = """
from chat_security import verify
tokens = sys.argv[3:]
for i in range(int(sys.argv[2])):
    verify(tokens[i % len(tokens)])
print("verified")
"""


def test_usage_counters_from_four_processes_add_up_after_their_exit_flush(env, tmp_path):
    cli = lambda *args: manage(env, "chat_security", *args).strip()  # noqa: E731
    old = json.loads(cli("generate-secret"))["kid"]
    old_token = cli("issue", "--sub", "alice")
    new = json.loads(cli("rotate-secret", "--grace", "3600"))["kid"]
    new_token = cli("issue", "--sub", "bob")
    # USAGE_FLUSH_SECONDS is an hour (tests/process_settings.py): each process writes its
    # counters once, when it exits, and the four exit at about the same moment.
    argv = [str(USES), old_token, new_token]
    assert run_together(env, _COUNT, [argv] * PROCESSES, tmp_path / "start") == ["verified"] * 4
    counts = {key["kid"]: key["use_count"] for key in status(env)}
    assert counts == {old: PROCESSES * USES // 2, new: PROCESSES * USES // 2}
    assert sum(counts.values()) == PROCESSES * USES
