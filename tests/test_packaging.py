"""The package as a user gets it: built, installed from the wheel, pasted into a new project.

One module, one clean virtual environment outside the checkout (it cannot
import the checkout): the sdist and the wheel are built with ``python -m
build``, the wheel is installed there, and the README's own code blocks (read
from README.md, so the docs cannot drift from this test) are applied to a
fresh ``django-admin startproject mysite``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "dist", "build", "*.egg-info",
    "db.sqlite3", "artifacts", "*.pyc",
)  # fmt: skip
#: README fences the test applies: ```python mysite/views.py, ```html templates/x.html
FENCE = re.compile(r"^```(\w+) ([^\s`]+)\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.packaging


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist and wheel of a copy of the checkout (the wheel is built from the sdist)."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", src, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("chat_security-*.whl")
    (sdist,) = (tmp / "dist").glob("chat_security-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> Path:
    """A clean virtual environment with only the wheel (and its dependencies) installed."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", where, cwd=where.parent)
    run(where / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
        built["wheel"], cwd=where.parent)  # fmt: skip
    return where


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def test_the_wheel_carries_migrations_templates_static_and_types(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    for needed in (
        "chat_security/py.typed",
        "chat_security/migrations/0001_initial.py",
        "chat_security/migrations/0002_contact_token_time.py",
        "chat_security/templates/chat_security/visitor_details.html",
        "chat_security/templates/admin/chat_security/panel/secret.html",
        "chat_security/static/chat_security/admin.css",
        "chat_security/templatetags/chat_security.py",
        "chat_security/management/commands/chat_security.py",
    ):
        assert needed in names, needed
    # Every module of the checkout, subpackages (admin/, websocket/) included.
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "chat_security").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert not any(n.startswith(("tests/", "demo_site/", "benchmarks/")) for n in names)
    with tarfile.open(built["sdist"]) as archive:
        sdist = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"README.md", "pyproject.toml", "chat_security/py.typed"} <= sdist


def test_the_readme_works_in_a_fresh_project(venv, tmp_path):
    env = clean_env(venv)
    python = venv / "bin" / "python"
    where = run(
        python, "-c", "import chat_security; print(chat_security.__file__)", cwd=tmp_path, env=env
    )
    # The wheel, not the checkout:
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout

    project = tmp_path / "mysite"
    project.mkdir()
    run(venv / "bin" / "django-admin", "startproject", "mysite", project, cwd=tmp_path, env=env)
    readme = (ROOT / "README.md").read_text()
    shell_blocks = []
    for lang, target, body in FENCE.findall(readme):
        if lang == "bash" and target == "run":
            shell_blocks.append(body)
            continue
        path = project / target
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text() if path.exists() else ""
        path.write_text(existing + ("\n\n" if existing else "") + body)
    applied = {t for lang, t, _ in FENCE.findall(readme) if lang != "bash"}
    assert {"mysite/settings.py", "mysite/urls.py", "mysite/views.py"} <= applied
    assert shell_blocks, "the README has no ```bash run block"

    manage = (python, "manage.py")
    key = run(*manage, "chat_security", "generate-encryption-key", cwd=project, env=env)
    env["CHAT_SECURITY_ENCRYPTION_KEYS"] = key.stdout.strip()
    outputs = [
        run("bash", "-euo", "pipefail", "-c", block, cwd=project, env=env) for block in shell_blocks
    ]
    printed = "".join(o.stdout for o in outputs)
    generated = json.loads(next(line for line in printed.splitlines() if '"secret"' in line))
    warnings = "".join(o.stderr for o in outputs)
    assert "chat_security.W" not in warnings, warnings  # check --deploy: ready to go live

    token = run(*manage, "chat_security", "issue", "--sub", "alice", cwd=project, env=env)
    env.update(TOKEN=token.stdout.strip(), SECRET=generated["secret"], KID=generated["kid"])
    flows = run(*manage, "shell", "-c", FLOWS, cwd=project, env=env)
    assert "FLOWS OK" in flows.stdout


#: Driven with Django's test client inside the new project (manage.py shell).
FLOWS = """
import os, time, jwt
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.test import Client

client = Client()
def whoami(token=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    return client.get("/chat/api/whoami", headers=headers)

r = whoami()
assert r.status_code == 401 and r.json()["error"] == "missing_token", r.content
r = whoami(os.environ["TOKEN"])
assert r.status_code == 200 and r.json() == {"user_id": "alice", "verified": True}, r.content
now = int(time.time())
expired = jwt.encode({"sub": "alice", "iat": now - 7200, "exp": now - 3600},
                     os.environ["SECRET"], algorithm="HS256", headers={"kid": os.environ["KID"]})
r = whoami(expired)
assert r.status_code == 401 and r.json()["error"] == "expired", r.content

client.force_login(get_user_model().objects.create_user("bob", password="not-used-1"))
r = client.get("/chat/")
assert r.status_code == 200, r.status_code
assert "private" in r["Cache-Control"] and "public" not in r["Cache-Control"], r["Cache-Control"]
assert 'var ConvrsUser = "ey' in r.content.decode(), r.content
print("FLOWS OK")
"""
