"""What ``bench_request.py`` and ``served/`` share: the machine line, the token, the stack.

The token is ~760 bytes, signed with any key: ``sub`` (or another
identity, e.g. simplejwt's ``user_id``/``token_type``), ``iat``, ``exp``,
``jti``, a ``userData`` object and ``agentData`` items, as a site's backend
would sign them. An RS256 signature is ~300 characters longer than an HS256
one, so an RS256 token carries fewer extras to stay the same size.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import cryptography
import django
import jwt

#: What ``django-admin startproject`` puts in a new project (the benchmarks' baseline).
STARTPROJECT_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
STARTPROJECT_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
STARTPROJECT_TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def whoami(request: Any) -> Any:
    """The small JSON view both benchmarks serve (under ``/chat/api/`` it is guarded)."""
    from django.http import JsonResponse

    identity = getattr(request, "chat_identity", None)
    return JsonResponse(
        {
            "user_id": identity.user_id if identity else None,
            "verified": bool(identity and not identity.anonymous),
            "status": "ok",
            "unread": 3,
            "server": "bench",
        }
    )


TOKEN_BYTES = (740, 780)
TARGET = sum(TOKEN_BYTES) // 2

AGENT_DATA: list[dict[str, Any]] = [
    {"label": "Plan", "value": "Premium", "type": "status"},
    {"label": "Balance", "value": 4250.75, "type": "currency", "currency": "GBP"},
    {"label": "Branch", "value": "London Bridge"},
    {"label": "Customer since", "value": "2019-03-14", "type": "date"},
    {"label": "Cards", "value": 2, "type": "number"},
    {"label": "Phone", "value": "+44 20 7946 0018", "type": "phone"},
    {"label": "Review", "value": "Pending", "type": "status", "color": "warning"},
]
#: Added in this order while the token stays under ``TARGET`` (what would overshoot is skipped).
EXTRAS: list[tuple[str, Any]] = [
    ("userData", ("plan", "Premium")),
    ("agentData", AGENT_DATA[0]),
    ("userData", ("customerSince", "2019-03-14")),
    ("userData", ("accountNumber", "GB29 0042 1187")),
    *(("agentData", item) for item in AGENT_DATA[1:]),
]


def temporary_site(prefix: str) -> str:
    """Before ``django.setup()``: the request settings on an SQLite file in a temporary
    folder (removed at exit); returns the folder."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["CHAT_BENCH_DB"] = os.path.join(folder, "bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.request_settings"
    return folder


def machine_line() -> str:
    """CPU model, cores, versions and load average: what to quote beside the figures."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "?",
            )
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Django {django.get_version()}, PyJWT {jwt.__version__}, "
        f"cryptography {cryptography.__version__}, load average {load}"
    )


class TokenMaker:
    """Signs tokens of one shape; ``make(serial)`` differs from others only in ``jti``."""

    def __init__(
        self,
        key: Any,
        algorithm: str,
        kid: str | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.key, self.algorithm = key, algorithm
        self.headers = {"kid": kid} if kid else None
        self.identity = identity or {"sub": "user-48213"}
        self.extras: list[tuple[str, Any]] = []
        self.pad = ""
        for extra in EXTRAS:  # bounded by the list
            self.extras.append(extra)
            if len(self.make(0)) > TARGET:
                self.extras.pop()
        for width in range(1, 200):  # bounded; ~4/3 characters a step
            if len(self.make(0)) >= TARGET:
                break
            self.pad = "x" * width
        size = len(self.make(0))
        if not TOKEN_BYTES[0] <= size <= TOKEN_BYTES[1]:
            raise SystemExit(f"token size {size} cannot be brought into {TOKEN_BYTES}")

    def claims(self, serial: int, now: int | None = None) -> dict[str, Any]:
        now = int(time.time()) if now is None else now
        user: dict[str, Any] = {"name": "Alice Example", "email": "alice.example@example.com"}
        agent: list[dict[str, Any]] = []
        for where, value in self.extras:
            if where == "userData":
                user[value[0]] = value[1]
            else:
                agent.append(value)
        if self.pad:
            user["note"] = self.pad
        return {
            **self.identity,
            "iat": now,
            "exp": now + 3600,
            "jti": f"{serial:032x}",  # distinct per serial, same length (a uuid4 hex's)
            "userData": user,
            "agentData": agent,
        }

    def make(self, serial: int, now: int | None = None) -> str:
        return jwt.encode(
            self.claims(serial, now), self.key, algorithm=self.algorithm, headers=self.headers
        )
