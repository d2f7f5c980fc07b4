"""Real processes for tests: free ports, ``manage.py`` runs, servers started and stopped.

Every server listens on 127.0.0.1, waits are bounded, and the fixture that
starts a server stops it (terminate, then kill).

The processes of one test share one database of their own, in the suite's lane:
a SQLite file (lane 1), or a PostgreSQL database created on the lane's server
with Redis as cache and channel layer (lane 2, ``tests.settings_pg``; see
``tests.process_settings``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
#: Variables that choose a process's settings, database, cache and channel layer (the
#: demo's settings read the last three): a test that sets up a process of its own drops them.
LANE_VARIABLES = ("DJANGO_", "DATABASE_URL", "CACHE_URL", "REDIS_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lane() -> str:
    """``"pg"`` when the suite runs on PostgreSQL (``tests.settings_pg``), else ``"sqlite"``."""
    engine = settings.DATABASES["default"]["ENGINE"]
    return "pg" if engine == "django.db.backends.postgresql" else "sqlite"


def process_env(settings_module: str, db: Path) -> dict[str, str]:
    """The environment of a process on ``settings_module`` with the database named by ``db``.

    Lane 1: the SQLite file ``db``. Lane 2: a PostgreSQL database created for
    ``db`` on first use, so the processes of one test share it and no two tests do.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE=settings_module, PYTHONPATH=str(ROOT))
    if lane() == "pg":
        env.update(CHAT_SECURITY_TEST_LANE="pg", CHAT_SECURITY_TEST_DB=postgres_database(db))
    else:
        env.update(CHAT_SECURITY_TEST_LANE="sqlite", CHAT_SECURITY_TEST_DB=str(db))
    return env


_created: dict[Path, str] = {}


def _admin_connection():
    import psycopg

    from tests.settings_pg import postgres

    server = postgres(os.environ["DATABASE_URL"])
    return psycopg.connect(
        host=server["HOST"],
        port=server["PORT"],
        user=server["USER"],
        password=server["PASSWORD"],
        dbname=server["NAME"],
        autocommit=True,
    )


def postgres_database(db: Path) -> str:
    """The name of the PostgreSQL database that stands for ``db``, created empty on first use."""
    if db not in _created:
        name = f"process_{uuid.uuid4().hex[:16]}"
        with _admin_connection() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        if not _created:
            atexit.register(_drop_databases)
        _created[db] = name
    return _created[db]


def _drop_databases() -> None:
    """At the end of the session (every server has stopped): leave the server as found."""
    import psycopg

    with contextlib.suppress(psycopg.Error), _admin_connection() as connection:
        for name in _created.values():
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _created.clear()


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
