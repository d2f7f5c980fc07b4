"""The demo's ``/metrics`` (docs/demo.md): CHAT_SECURITY_METRICS in the environment
switches it on (default off: 404), read by demo_site/settings.py through
django-environ. Each case is a fresh process with the demo's own settings, as
``runserver`` or gunicorn would start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .servers import LANE_VARIABLES, ROOT

#: In the demo's settings: METRICS and what GET /metrics answers.
PROBE = """
import json
import django
django.setup()
from django.conf import settings
from django.test import Client
response = Client().get("/metrics", HTTP_HOST="127.0.0.1")
print(json.dumps({
    "METRICS": settings.CHAT_SECURITY["METRICS"],
    "status": response.status_code,
    "type": response["Content-Type"],
    "body": response.content.decode(errors="replace"),
}))
"""


@pytest.mark.parametrize(
    ("value", "on"), [(None, False), ("false", False), ("true", True)], ids=str
)
def test_the_demo_serves_metrics_only_when_the_environment_says(tmp_path, value, on):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(LANE_VARIABLES)
        and k not in ("CHAT_SECURITY_METRICS", "PROMETHEUS_MULTIPROC_DIR")
    }
    env["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"  # not the checkout's
    if value is not None:
        env["CHAT_SECURITY_METRICS"] = value
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["METRICS"] is on
    if not on:
        assert got["status"] == 404
        return
    assert got["status"] == 200, got["body"][:500]
    assert got["type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE chat_security_verifications_total counter" in got["body"]
