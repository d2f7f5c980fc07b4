"""The upgrade from the previous release (SPEC §13): its real database, migrated by this code.

"A database upgraded from the previous release has one integration, ``default``,
holding every existing key and the current mode. A token accepted before the
upgrade is accepted after it." Proved on a database the previous release made
itself, not on rows a test writes into this code's models:

1. The previous release's code (commit ``PREVIOUS_RELEASE``, the last one before
   integrations) is exported from this repository's history with ``git archive``.
   No git, or a clone without that commit (a shallow one), fails the test: CI
   runs in a full clone (``../shared/tools/fresh-ci``), so nothing here is skipped.
2. With that code, in processes of its own (``manage.py`` in the exported tree
   comes first on ``sys.path``, before this checkout's editable install; checked):
   ``migrate``, then its CLI makes a secret, registers a public key whose private
   key the test holds, makes a service key pair, turns security off (not the
   default, so a migration that forgets the mode shows), revokes ``alice``; tokens
   are issued by its ``issue`` and signed by the test (RS256 with and without
   ``kid``, HS256 without ``kid``, one carrying a ``user_payload`` for the service
   key), its ``verify`` accepts them all (alice's before her revocation, refused
   after), and two contacts are recorded through its public API.
3. With this code, on the same database: ``migrate``; ``verify`` gives every token
   the verdict it had (the same ``kid``; alice's ``token_revoked``); ``status``
   keeps every key and the mode (and, once it lists ``"integrations"``, shows
   exactly ``default`` holding them); ``issue`` still signs with the migrated
   secret; the contacts are found, also through a verified token, and none is
   duplicated; ``makemigrations --check`` finds nothing missing.

The database is the lane's: a SQLite file in lane 1, a PostgreSQL database of
its own in lane 2 (the production engine, where a migration can fail that SQLite
lets pass), so running in both lanes is no repetition.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe
from joserfc.jwk import RSAKey

from .servers import LANE_VARIABLES, lane, postgres_database

ROOT = Path(__file__).resolve().parent.parent
#: The previous release: the last commit before integrations (SPEC §13).
PREVIOUS_RELEASE = "a7e011f99ab0c4b34f49bba8eeef0d0f47b457bf"
#: What the previous release's demo site needs to run (``templates`` is its DIRS).
EXPORTED = ("manage.py", "chat_security", "demo_site", "templates")
TIMEOUT = 120  # seconds, for one manage.py process on a loaded CI machine
PRIVATE = {"cardNumber": "4111-1111-1111-1111", "note": "upgrade"}

#: ``shell -c`` code that records two contacts through the public API: bob's from his
#: verified token (as the chat API does), and an anonymous visitor's.
RECORD_CONTACTS = """
import json, chat_security, demo_site
from chat_security import ChatIdentity, contact_for, verify
bob = ChatIdentity.verified(verify(TOKEN)).contact
anon = contact_for(ChatIdentity.anonymous_visitor("visitor-1"))
print(json.dumps({
    "files": [chat_security.__file__, demo_site.__file__],
    "bob": [bob.pk, bob.email, bob.first_name, bob.last_name],
    "anon": anon.pk,
}))
"""

#: ``shell -c`` code that looks the contacts up again (and finds no others).
FIND_CONTACTS = """
import json, chat_security
from chat_security import ChatIdentity, find_contact, verify
from chat_security.models import Contact
bob = find_contact("bob")
anon = find_contact("visitor-1", anonymous=True)
via_token = ChatIdentity.verified(verify(TOKEN)).contact
print(json.dumps({
    "files": [chat_security.__file__],
    "bob": bob and [bob.pk, bob.email, bob.first_name, bob.last_name],
    "anon": anon and anon.pk,
    "via_token": via_token and via_token.pk,
    "contacts": Contact.objects.count(),
}))
"""


@dataclass
class Site:
    """``manage.py`` of one tree (``cwd``) on the test's database."""

    cwd: Path
    env: dict[str, str]

    def manage(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.manage(*args, stdin=stdin)
        assert done.returncode == 0, f"{self.cwd}: manage.py {' '.join(args)}\n{done.stderr}"
        return done.stdout

    def cli(self, *args: str, stdin: str | None = None) -> Any:
        """``chat_security ARGS``, whose stdout is one JSON object."""
        return json.loads(self.ok("chat_security", *args, stdin=stdin))

    def verify(self, token: str) -> dict[str, Any]:
        """The SPEC §7 verdict (exit 0 valid, 1 refused); the token comes on stdin."""
        done = self.manage("chat_security", "verify", "-", stdin=token)
        assert done.returncode in (0, 1), f"{self.cwd}: verify\n{done.stderr}"
        result = json.loads(done.stdout)
        assert result["valid"] is (done.returncode == 0), result
        return result

    def shell(self, code: str, **names: str) -> Any:
        """``shell -c`` with ``names`` as string constants; its last stdout line, as JSON."""
        assigned = "".join(f"{name} = {json.dumps(value)}\n" for name, value in names.items())
        out = self.ok("shell", "-v", "0", "-c", assigned + code)
        return json.loads(out.strip().splitlines()[-1])


@dataclass
class Previous:
    """What the previous release left in the database, and what it said about it."""

    site: Site
    tokens: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    kids: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    contacts: dict[str, Any] = field(default_factory=dict)


def export_previous_release(dest: Path) -> Path:
    """The previous release's tree, from this repository's history (fails, never skips)."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("the upgrade test needs git, to export the previous release from history")
    found = subprocess.run(
        [git, "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        timeout=60,
    )
    if found.returncode != 0:
        pytest.fail(
            f"the previous release (commit {PREVIOUS_RELEASE}) is not in the git history of "
            f"{ROOT}: the upgrade test needs a full git clone (if shallow: git fetch --unshallow)"
        )
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE, *EXPORTED],
        capture_output=True,
        timeout=60,
    )
    assert archive.returncode == 0, archive.stderr.decode(errors="replace")
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def database_env(where: Path) -> dict[str, str]:
    """The demo settings' environment on a database of this test's own, in the lane's engine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((*LANE_VARIABLES, "CHAT_SECURITY_")) and k != "PYTHONPATH"
    }
    if lane() == "pg":
        server = urlsplit(os.environ["DATABASE_URL"])
        name = postgres_database(where / "db")  # created empty, dropped after the session
        env["DATABASE_URL"] = urlunsplit(server._replace(path="/" + name))
    else:
        env["DATABASE_URL"] = f"sqlite:///{where / 'db.sqlite3'}"
    env.update(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        CACHE_URL="locmemcache://",
        SECRET_KEY="tests-upgrade-secret-key-0123456789-abcdefghijklmnop",
        CHAT_SECURITY_ENCRYPTION_KEYS="tests-upgrade-encryption-key-0123456789abcdef",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def signed(private_key: Any, claims: dict[str, Any], alg: str, kid: str | None) -> str:
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Previous:
    """A database made and used by the previous release, with the tokens it accepted."""
    where = tmp_path_factory.mktemp("upgrade")
    site = Site(export_previous_release(where / "old"), database_env(where))
    old = Previous(site)
    site.ok("migrate", "--noinput", "-v", "0")

    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = client_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secret = site.cli("generate-secret")
    public = site.cli("add-public-key", "-", stdin=pem.decode())
    service = site.cli("generate-service-keypair")
    assert site.cli("security", "off") == {"mode": "off"}
    old.kids = {"secret": secret["kid"], "public": public["kid"], "service": service["kid"]}

    now = int(time.time())
    life = {"iat": now, "exp": now + 3600}
    user_payload = jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM"},
        json.dumps(PRIVATE),
        RSAKey.import_key(service["public_key_pem"]),
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )
    bob_claims = {"email": "bob@example.com", "name": "Bob Builder"}
    old.tokens = {
        "issued": site.ok(
            "chat_security", "issue", "--sub", "bob", "--claims", json.dumps(bob_claims)
        ).strip(),
        "rs256_kid": signed(client_key, {"sub": "rita", **life}, "RS256", public["kid"]),
        "rs256_no_kid": signed(client_key, {"sub": "rob", **life}, "RS256", None),
        "hs256_no_kid": signed(secret["secret"], {"sub": "hugo", **life}, "HS256", None),
        "user_payload": site.ok(
            "chat_security",
            "issue",
            "--sub",
            "pia",
            "--claims",
            json.dumps({"user_payload": user_payload}),
        ).strip(),
        "revoked": site.ok("chat_security", "issue", "--sub", "alice").strip(),
    }
    with ThreadPoolExecutor() as pool:  # read-only processes of known code: side by side
        accepted = dict(zip(old.tokens, pool.map(site.verify, old.tokens.values()), strict=True))
    for name, result in accepted.items():  # "accepted before the upgrade", by the old verify
        assert result["valid"], (name, result)
    assert accepted["user_payload"]["identity"]["private_keys"] == sorted(PRIVATE)

    assert site.cli("revoke-user", "alice")["user_id"] == "alice"
    old.verdicts = {**accepted, "revoked": site.verify(old.tokens["revoked"])}
    assert old.verdicts["revoked"]["error"] == "token_revoked", old.verdicts["revoked"]

    old.contacts = site.shell(RECORD_CONTACTS, TOKEN=old.tokens["issued"])
    files = [Path(f) for f in old.contacts.pop("files")]
    assert all(f.is_relative_to(site.cwd) for f in files), f"not the exported release: {files}"
    assert old.contacts["bob"][1:] == ["bob@example.com", "Bob", "Builder"], old.contacts
    old.status = site.cli("status")
    assert old.status["mode"] == "off"
    assert {k["kid"] for k in old.status["keys"]} == set(old.kids.values())
    return old


@pytest.fixture(scope="module")
def upgraded(previous) -> Site:
    """This code's ``manage.py`` on the previous release's database, migrated."""
    site = Site(ROOT, previous.site.env)
    site.ok("migrate", "--noinput", "-v", "0")
    return site


def key_facts(keys: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What an upgrade must keep of each key in ``status`` (its use counters may move)."""
    return {k["kid"]: (k["kind"], k["state"], k["fingerprint"], k["grace_until"]) for k in keys}


def test_tokens_accepted_before_are_accepted_after(previous, upgraded):
    for name, token in previous.tokens.items():
        before, after = previous.verdicts[name], upgraded.verify(token)
        assert after["valid"] is before["valid"], (name, after)
        if before["valid"]:
            assert (after["kid"], after["header"], after["claims"]) == (
                before["kid"],
                before["header"],
                before["claims"],
            ), name
            # SPEC §7's identity fields as they were (a later release may add others).
            assert {k: after["identity"].get(k) for k in before["identity"]} == before[
                "identity"
            ], name
            # Once verify reports the integration (SPEC §13), it is the one they all moved to.
            assert after.get("integration", "default") == "default", (name, after)
        else:
            assert after["error"] == before["error"] == "token_revoked", (name, after)
    kinds = {"issued": "secret", "hs256_no_kid": "secret", "rs256_kid": "public"}
    for name, kind in kinds.items():
        assert previous.verdicts[name]["kid"] == previous.kids[kind], name
    assert previous.verdicts["rs256_no_kid"]["kid"] == previous.kids["public"]


def test_status_keeps_every_key_and_the_mode(previous, upgraded):
    status = upgraded.cli("status")
    before = key_facts(previous.status["keys"])
    listed = False
    if "keys" in status:  # SPEC §7, acting on default
        assert key_facts(status["keys"]) == before
        listed = True
    if "mode" in status:
        assert status["mode"] == "off"
    if "integrations" in status:  # SPEC §13: exactly default, holding every key, in the mode
        integrations = status["integrations"]
        if isinstance(integrations, dict):  # keyed by name
            integrations = [{"name": name, **value} for name, value in integrations.items()]
        assert [i["name"] for i in integrations] == ["default"], integrations
        assert integrations[0]["mode"] == "off", integrations
        assert key_facts(integrations[0]["keys"]) == before, integrations
        listed = True
    assert listed, f"status lists no keys: {status}"


def test_issue_signs_with_the_migrated_secret(previous, upgraded):
    token = upgraded.ok("chat_security", "issue", "--sub", "carol").strip()
    result = upgraded.verify(token)
    assert result["valid"], result
    assert result["kid"] == result["header"]["kid"] == previous.kids["secret"]


def test_contacts_are_found_and_not_duplicated(previous, upgraded):
    found = upgraded.shell(FIND_CONTACTS, TOKEN=previous.tokens["issued"])
    files = [Path(f) for f in found["files"]]
    assert all(f.is_relative_to(ROOT / "chat_security") for f in files), files
    assert found["bob"] == previous.contacts["bob"]
    assert found["via_token"] == previous.contacts["bob"][0]  # the same row, not a new one
    assert found["anon"] == previous.contacts["anon"]
    assert found["contacts"] == 2


def test_no_migration_is_missing(upgraded):
    done = upgraded.manage("makemigrations", "--check", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
