"""The package as a user gets it: installed the documented ways, pasted into a new project, served.

Every test works in clean virtual environments outside the checkout (they
cannot import it), with a copy of the checkout named ``chat_security`` for the
recipes' ``/path/to/chat_security``, and runs the recipes of the README and of
the documentation site (``docs/websocket.md``, ``docs/production.md``), read
from the pages by ``tests/readme.py``, so the docs cannot drift from this module:

- the wheel form (``install`` blocks): ``python -m build`` makes the sdist and
  the wheel, the wheel is installed with the ``channels`` extra, then
  ``uvicorn[standard]``; the file blocks go into a fresh ``django-admin
  startproject mysite``, its ``run`` blocks run there, and the ``serve`` block
  serves it to a real HTTP and WebSocket client;
- the path form with an extra (``checkout``);
- the Production recipe (``production``), from a checkout: its install line,
  its settings checked with ``check --deploy`` (which loads the PostgreSQL
  driver) and its two servers started. The two lines that need a PostgreSQL
  server (``migrate``, ``check --database default``) are not run: this lane
  has none (``scripts/test.sh`` runs this module in lane 1 only).

Servers listen on 127.0.0.1 only, every wait is bounded, and the test that
starts a server stops it (its whole process group).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import readme
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "dist", "build", "*.egg-info",
    "db.sqlite3", "artifacts", "*.pyc", ".env",
)  # fmt: skip
START_SECONDS = 60  # for a server to listen: four workers on a loaded CI machine are slow
WAIT_SECONDS = 10  # for an answer

pytestmark = pytest.mark.packaging


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def checkout(where: Path) -> Path:
    """A copy of the checkout, ``where/chat_security``: the recipes' ``/path/to/chat_security``."""
    src = where / "chat_security"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    return src


def new_venv(where: Path) -> Path:
    venv = where / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv, cwd=where)
    return venv


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def bash(script: str, *, cwd: Path, env: dict[str, str], src: Path | None = None):
    """A recipe block run as pasted, with the checkout's path filled in."""
    if src is not None:
        script = script.replace(readme.CHECKOUT, str(src))
    return run("bash", "-euo", "pipefail", "-c", script, cwd=cwd, env=env)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serving(command: str, *, cwd: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """A recipe's server command on a free port (for its ``80xx``); yields the port once it listens.

    ``command`` may start with the shell lines it needs (``export ...``); the
    server is its last line. It runs in a process group of its own, which is
    stopped on the way out (gunicorn's and uvicorn's workers included).
    """
    port = free_port()
    *prelude, server = command.strip().splitlines()
    server, found = re.subn(r"\b80\d\d\b", str(port), server)
    assert found == 1, f"no port 80xx to replace in {server!r}"
    script = "\n".join([*prelude, f"exec {server}"])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-euc", script], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_SECONDS
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{server} did not listen on {port}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def http(url: str, *, token: str | None = None, payload: object = None, host: str | None = None):
    """``(status, body)`` of a GET, or of a JSON POST when ``payload`` is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host:
        headers["Host"] = host
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(errors="replace")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel form: the ``install`` blocks run in order in a fresh virtual environment."""
    where = tmp_path_factory.mktemp("wheel")
    src = checkout(where)
    venv = new_venv(where)
    blocks = readme.shell("install")
    assert len(blocks) >= 2, "the README's wheel install, docs/websocket.md's ASGI server install"
    for block in blocks:
        bash(block, cwd=where, env=clean_env(venv), src=src)
    (wheel,) = (src / "dist").glob("chat_security-*.whl")
    (sdist,) = (src / "dist").glob("chat_security-*.tar.gz")
    return {"venv": venv, "wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def project(installed, tmp_path_factory) -> dict:
    """A fresh ``startproject mysite`` with the recipes' files and ``run`` blocks applied."""
    venv = installed["venv"]
    env = clean_env(venv)
    python = venv / "bin" / "python"
    where = tmp_path_factory.mktemp("project")
    project = where / "mysite"
    project.mkdir()
    run(venv / "bin" / "django-admin", "startproject", "mysite", project, cwd=where, env=env)
    for block in readme.files():
        path = project / block.target
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text() if path.exists() and not block.replace else ""
        path.write_text(existing + ("\n\n" if existing else "") + block.body)
    applied = {b.target for b in readme.files()}
    assert {
        "mysite/settings.py", "mysite/urls.py", "mysite/views.py", "templates/chat.html",
        "mysite/consumers.py", "mysite/asgi.py",
    } <= applied  # fmt: skip

    manage = (python, "manage.py", "chat_security")
    key = run(*manage, "generate-encryption-key", cwd=project, env=env)
    env["CHAT_SECURITY_ENCRYPTION_KEYS"] = key.stdout.strip()
    outputs = [bash(block, cwd=project, env=env) for block in readme.shell("run")]
    assert outputs, "no page has a ```bash run block"
    printed = "".join(o.stdout for o in outputs)
    generated = json.loads(next(line for line in printed.splitlines() if '"secret"' in line))
    warnings = "".join(o.stderr for o in outputs)
    assert "chat_security.W" not in warnings, warnings  # check --deploy: ready to go live
    issued = run(*manage, "issue", "--sub", "alice", cwd=project, env=env)
    return {
        "dir": project, "env": env, "python": python, "token": issued.stdout.strip(),
        "secret": generated["secret"], "kid": generated["kid"],
    }  # fmt: skip


def test_the_wheel_carries_migrations_templates_static_and_types(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
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
    with tarfile.open(installed["sdist"]) as archive:
        sdist = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"README.md", "pyproject.toml", "chat_security/py.typed"} <= sdist


def imported_from(venv: Path, cwd: Path) -> str:
    """Where the venv's Python imports ``chat_security`` from (``channels``, the extra, too)."""
    probe = "import channels, chat_security; print(chat_security.__file__)"
    return run(venv / "bin" / "python", "-c", probe, cwd=cwd, env=clean_env(venv)).stdout


def test_the_wheel_form_installs_the_extra(installed, tmp_path):
    where = imported_from(installed["venv"], tmp_path)
    # The wheel, not the checkout (nor the copy the wheel was built from):
    assert str(installed["venv"]) in where and str(ROOT) not in where


def test_the_checkout_form_installs_the_extra(tmp_path):
    src = checkout(tmp_path)
    venv = new_venv(tmp_path)
    (block,) = readme.shell("checkout")
    bash(block, cwd=tmp_path, env=clean_env(venv), src=src)
    assert str(venv) in imported_from(venv, tmp_path)


def test_the_readme_works_in_a_fresh_project(project):
    env = dict(project["env"], TOKEN=project["token"], SECRET=project["secret"], KID=project["kid"])
    flows = run(project["python"], "manage.py", "shell", "-c", FLOWS, cwd=project["dir"], env=env)
    assert "FLOWS OK" in flows.stdout


#: Driven with Django's test client inside the new project (manage.py shell).
FLOWS = """
import os, time, jwt
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth import get_user_model
from django.test import Client

client = Client(enforce_csrf_checks=True)  # CSRF checked, as for a browser
bearer = {"Authorization": "Bearer " + os.environ["TOKEN"]}
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

# A Bearer POST is not a CSRF refusal (the view is @csrf_exempt); a bad body is the view's 400.
r = client.post("/chat/api/messages", {"text": "hello"}, content_type="application/json",
                headers=bearer)
assert r.status_code == 201 and r.json() == {"from": "alice", "text": "hello"}, r.content[:300]
r = client.post("/chat/api/messages", "[]", content_type="application/json", headers=bearer)
assert r.status_code == 400 and r.json() == {"error": "bad_request"}, r.content[:300]

# Not logged in: LOGIN_URL, a page the new project has.
r = client.get("/chat/")
assert r.status_code == 302 and r["Location"] == "/admin/login/?next=/chat/", r.get("Location")
assert client.get(r["Location"]).status_code == 200

client.force_login(get_user_model().objects.create_user("bob", password="not-used-1"))
r = client.get("/chat/")
assert r.status_code == 200, r.status_code
assert "private" in r["Cache-Control"] and "public" not in r["Cache-Control"], r["Cache-Control"]
assert 'var ConvrsUser = "ey' in r.content.decode(), r.content
print("FLOWS OK")
"""


def chat_socket(port: int, token: str):
    """The recipe's ``ws/chat/``, the token as a subprotocol, as a page on the site opens it."""
    return connect(
        f"ws://127.0.0.1:{port}/ws/chat/",
        subprotocols=["chat-security", token],
        origin=f"http://127.0.0.1:{port}",  # AllowedHostsOriginValidator
        open_timeout=WAIT_SECONDS,
    )


def test_the_readme_serves_http_and_websockets_in_a_fresh_project(project, tmp_path):
    (command,) = readme.shell("serve")
    token = project["token"]
    with serving(command, cwd=project["dir"], env=project["env"], log=tmp_path / "log") as port:
        base = f"http://127.0.0.1:{port}"
        # Through the real server and Django's CsrfViewMiddleware, as a widget posts:
        status, body = http(f"{base}/chat/api/messages", token=token, payload={"text": "hi"})
        assert (status, json.loads(body)) == (201, {"from": "alice", "text": "hi"}), body[:300]

        with chat_socket(port, token) as ws:
            assert ws.subprotocol == "chat-security"  # the token is never echoed
            identified = json.loads(ws.recv(timeout=WAIT_SECONDS))
            assert identified["type"] == "identified", identified
            assert identified["user"] == {"id": "alice", "verified": True}, identified
            ws.send(json.dumps({"type": "message", "text": "hello"}))
            echo = json.loads(ws.recv(timeout=WAIT_SECONDS))
            assert echo == {"type": "message", "from": "alice", "text": "hello"}, echo

        with chat_socket(port, "not.a.token") as ws:
            refusal = json.loads(ws.recv(timeout=WAIT_SECONDS))
            assert (refusal["type"], refusal["error"]) == ("error", "malformed"), refusal
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=WAIT_SECONDS)
            assert ws.close_code == 4401


#: Stands for the placeholder in the Production recipe (docs/production.md).
KEY_PLACEHOLDER = "<output of: manage.py chat_security generate-encryption-key>"
#: The Production recipe's lines that need a PostgreSQL server, which this lane has none of.
NEEDS_POSTGRES = (
    "python manage.py migrate",
    "python manage.py check --deploy --database default",
)


def test_the_production_recipe_installs_and_serves_from_a_checkout(tmp_path):
    src = checkout(tmp_path)
    venv = new_venv(tmp_path)
    env = clean_env(venv)
    (block,) = readme.shell("production")
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    installs = [line for line in lines if line.startswith("pip install ")]
    exports = [line.replace(KEY_PLACEHOLDER, secrets.token_urlsafe(32)) for line in lines
               if line.startswith("export ")]  # fmt: skip
    servers = [line for line in lines if line.startswith(("gunicorn ", "uvicorn "))]
    postgres = [line for line in lines if line.startswith(NEEDS_POSTGRES)]
    # Every line is one of these: a line added to the recipe is run here or fails here.
    assert len(installs) + len(exports) + len(servers) + len(postgres) == len(lines), lines
    assert installs and servers and len(postgres) == len(NEEDS_POSTGRES), lines

    bash("\n".join(installs), cwd=src, env=env)
    # Without PostgreSQL: the recipe's check minus --database. It reads the settings
    # from the exports and loads the database backend, which needs the driver.
    checked = bash("\n".join([*exports, "python manage.py check --deploy"]), cwd=src, env=env)
    assert "chat_security.E" not in checked.stderr, checked.stderr
    run(venv / "bin" / "python", "-c", "import psycopg, redis", cwd=src, env=env)

    for n, server in enumerate(servers):
        command = "\n".join([*exports, server])
        with serving(command, cwd=src, env=env, log=tmp_path / f"server{n}.log") as port:
            # A page that needs no database: Django answers through this server.
            status, body = http(f"http://127.0.0.1:{port}/no-such-page/", host="chat.example.com")
            assert status == 404 and "Not Found" in body, (server, status, body[:300])
