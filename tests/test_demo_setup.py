from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from chat_security.models import Key, KeyKind
from tests.chat_helpers import stored_secret

from .servers import LANE_VARIABLES


def run() -> str:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_demo_setup_creates_logins_and_keys_once(clock):
    first = run()
    User = get_user_model()
    admin, alice, bob = (User.objects.get(username=n) for n in ("admin", "alice", "bob"))
    assert admin.is_superuser and admin.is_staff and admin.check_password("admin-demo-2026")
    assert not alice.is_staff and alice.check_password("alice-demo-2026")
    assert (alice.get_full_name(), alice.email) == ("Alice Example", "alice@example.com")
    assert bob.check_password("bob-demo-2026")
    secret = Key.objects.get(kind=KeyKind.SECRET)
    service = Key.objects.get(kind=KeyKind.SERVICE_KEY)
    assert secret.state() == "active" and service.state() == "active"

    assert "http://127.0.0.1:8000/" in first
    for login in ("admin-demo-2026", "alice-demo-2026", "bob-demo-2026"):
        assert login in first
    assert stored_secret(secret) not in first
    # Each login's user id: the sub its tokens carry (issue --sub needs it, not the name).
    for user in (admin, alice, bob):
        assert re.search(rf"{user.username} +/ \S+ +user id {user.pk} ", first), first
    # The hint names the project's interpreter: after scripts/demo.sh, plain "python" has no Django.
    assert ".venv/bin/python manage.py chat_security security off" in first

    second = run()
    assert User.objects.count() == 3
    assert list(Key.objects.values_list("kid", flat=True).order_by("kid")) == sorted(
        [secret.kid, service.kid]
    )
    assert "none (all exist)" in second and "http://127.0.0.1:8000/" in second


@pytest.mark.django_db
def test_demo_setup_keeps_existing_users_and_keys(clock, django_user_model):
    django_user_model.objects.create_user("alice", password="changed-by-alice")
    key, _value = Key.objects.generate_secret()
    run()
    assert django_user_model.objects.get(username="alice").check_password("changed-by-alice")
    assert list(Key.objects.filter(kind=KeyKind.SECRET)) == [key]


def test_demo_script_prints_each_system_check_warning_once(tmp_path):
    """The manage.py steps of scripts/demo.sh before runserver print no check output.

    runserver runs the system checks itself, so demo.W001 appears once, not three times.
    """
    root = Path(__file__).resolve().parent.parent
    script = (root / "scripts" / "demo.sh").read_text()
    steps = [
        shlex.split(line.split("#")[0])[2:]
        for line in script.splitlines()
        if line.startswith(".venv/bin/python manage.py")
    ]
    assert [step[0] for step in steps] == ["migrate", "demo_setup"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(LANE_VARIABLES)}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    env["ADDR"] = "127.0.0.1:8000"
    for step in steps:
        step = [os.path.expandvars(a) for a in step]
        done = subprocess.run(
            [sys.executable, "manage.py", *step], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "demo.W001" not in done.stdout + done.stderr
    check = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=root, env=env, capture_output=True, text=True
    )
    assert (check.stdout + check.stderr).count("demo.W001") == 1


def test_the_demo_reads_its_private_identity_provider_hosts_from_the_environment():
    """SPEC §14: CHAT_SECURITY_JWKS_PRIVATE_HOSTS, comma-separated; none by default."""
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(LANE_VARIABLES)}
    env["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
    show = "from django.conf import settings; print(settings.CHAT_SECURITY['JWKS_PRIVATE_HOSTS'])"
    for value, expected in (
        (None, "[]"),
        ("keycloak.internal,10.0.0.5", "['keycloak.internal', '10.0.0.5']"),
    ):
        env.pop("CHAT_SECURITY_JWKS_PRIVATE_HOSTS", None)
        if value is not None:
            env["CHAT_SECURITY_JWKS_PRIVATE_HOSTS"] = value
        done = subprocess.run(
            [sys.executable, "-c", show], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
