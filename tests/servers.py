"""Real processes for tests: free ports, ``manage.py`` runs, servers started and stopped.

Every server listens on 127.0.0.1, waits are bounded, and the fixture that
starts a server stops it (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(settings: str, db: Path) -> dict[str, str]:
    """The environment of a process on ``settings`` with the SQLite file ``db``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE=settings, CHAT_SECURITY_TEST_DB=str(db), PYTHONPATH=str(ROOT))
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py ARGS`` in a process of its own; its stdout (fails the test on exit != 0)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def serving(env: dict[str, str], *command: str) -> Iterator[int]:
    """Run ``python COMMAND...`` with ``{port}`` filled in; yield the port once it listens."""
    port = free_port()
    args = [sys.executable, *(part.format(port=port) for part in command)]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{' '.join(command)} did not start listening on {port}")
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
