"""A real OpenID Connect provider for the tests: django-oauth-toolkit in a process of its own.

Nobody on this project wrote the provider: it is django-oauth-toolkit (DOT) with
OpenID Connect on, configured by ``tests.idp.settings`` (its own settings, its
own SQLite database in a temporary directory) and served by ``runserver`` on
127.0.0.1. Setup runs in subprocesses too: the pytest process keeps
``tests.settings``.

Use::

    from tests.idp.provider import OIDCProvider, oidc_provider  # the fixture

    __all__ = ["oidc_provider"]  # ruff: an imported fixture is used, not redefined

    def test_something(oidc_provider):
        token = oidc_provider.id_token("alice", "alice-password")
        oidc_provider.issuer        # "http://127.0.0.1:<port>/o"
        oidc_provider.client_id     # the ID token's "aud"
        oidc_provider.subject("alice")  # the ID token's "sub" (the user's id there)

or ``with OIDCProvider() as idp: ...`` (a module-scoped fixture of your own, say).

What it offers (see each member's docstring):

* ``issuer`` — ``http://127.0.0.1:<port>/o``, exactly the discovery document's
  ``issuer`` and every ID token's ``iss``; ``discovery_url`` is
  ``issuer + "/.well-known/openid-configuration"``, ``jwks_uri`` is
  ``issuer + "/.well-known/jwks.json"``.
* ``client_id`` / ``client_secret`` / ``redirect_uri`` — the one registered
  client (confidential, authorization code + PKCE, RS256).
* ``users`` — username → password (default: alice and bob); ``subject(username)``
  is a user's ``sub`` there (its primary key, as a string). The ID token also
  carries ``name`` ("Alice Example"), ``preferred_username`` ("alice") and
  ``email`` ("alice@example.com"): scope ``openid profile email``, see
  ``tests.idp.validators``.
* ``tokens(username, password)`` — the token endpoint's JSON after the
  authorization-code flow with PKCE, driven over HTTP the way a site and a
  browser would (log in through the login form, authorize, read the code from
  the redirect, exchange it). ``id_token(...)`` is its ``id_token``: an RS256
  JWT whose header carries ``kid`` (the RFC 7638 thumbprint of the key, as the
  JWKS publishes it). DOT's ``access_token`` is opaque (not a JWT) unless an
  ``ACCESS_TOKEN_GENERATOR`` is configured, so the ID token is the one to send
  to the chat.
* ``discovery()``, ``jwks()`` — the documents as the provider serves them now.
* ``signing_kid`` — the kid of the key that signs new tokens; ``inactive_kids``
  — the rotated-out kids still published; ``published_kids`` — the kids in
  the JWKS as served now (signing key first). DOT serves the JWKS with
  ``Cache-Control: max-age=3600``.
* ``rotate_key(keep_old=True)`` — a new RSA key signs from now on; the old one
  stays published as inactive (``keep_old=False``: only the new key is
  published). ``drop_inactive_keys()`` — stop publishing the rotated-out keys,
  signing key unchanged. Both restart the provider process (same port, same
  database) and return once it answers: for a fraction of a second the
  provider refuses connections, so fetch from it after they return.
* ``stop()`` — terminates the process (kill after a bounded wait) and removes
  the temporary directory; idempotent.

Also: ``port``, ``base_url`` (``http://127.0.0.1:<port>``), ``dir`` (the
temporary directory: database, key files, ``server.log``), ``startup_seconds``.
A step that does not go as a site expects raises ``IdPError``. Startup
(migrate, users, client, then the server) takes about two seconds; a rotation
about half a second.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from tests.servers import LANE_VARIABLES, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS = "tests.idp.settings"
#: Bounded waits, in seconds.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0

DEFAULT_USERS = {"alice": "alice-password", "bob": "bob-password"}


class IdPError(AssertionError):
    """The provider did not start, or a step of the flow did not go as a site expects."""


def _new_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def kid_of(pem: str) -> str:
    """The kid DOT gives a key (RFC 7638 thumbprint, SHA-256, as jwcrypto computes it)."""
    return str(jwk.JWK.from_pem(pem.encode("ascii")).thumbprint())


class OIDCProvider:
    """A started django-oauth-toolkit OpenID Connect provider on 127.0.0.1 (see the module doc).

    The constructor does everything: temporary directory, signing key,
    database (users and client), server process; it returns once the discovery
    document answers. Always call ``stop()`` (or use it as a context manager).
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        client_id: str = "chat-site",
        redirect_uri: str = "http://127.0.0.1/callback",
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(32)
        self.redirect_uri = redirect_uri
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/o"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.jwks_uri = f"{self.issuer}/.well-known/jwks.json"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="chat-idp-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._key_files: list[Path] = []  # every key made; the names never repeat
        self._signing: Path = self._write_key()
        self._inactive: list[Path] = []
        self._subjects: dict[str, str] = {}
        self.startup_seconds = 0.0
        try:
            started = time.monotonic()
            self._bootstrap()
            self._start()
            self.startup_seconds = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    # -- the process ---------------------------------------------------------------

    def _write_key(self) -> Path:
        path = self.dir / f"key-{len(self._key_files) + 1}.pem"
        path.write_text(_new_key_pem(), "ascii")
        path.chmod(0o600)
        self._key_files.append(path)
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(LANE_VARIABLES)}
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS,
            PYTHONPATH=str(ROOT),
            IDP_DATA_DIR=str(self.dir),
            IDP_ISSUER=self.issuer,
            IDP_SIGNING_KEY_FILE=str(self._signing),
            IDP_INACTIVE_KEY_FILES=os.pathsep.join(str(p) for p in self._inactive),
        )
        return env

    def _bootstrap(self) -> None:
        spec = {
            "users": self.users,
            "client": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uri": self.redirect_uri,
            },
        }
        done = subprocess.run(
            [sys.executable, "-m", "tests.idp.bootstrap"],
            input=json.dumps(spec),
            env=self._env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise IdPError(f"the provider's setup failed:\n{done.stderr[-3000:]}")
        self._subjects = json.loads(done.stdout)["subjects"]

    def _log_tail(self) -> str:
        log = self.dir / "server.log"
        return log.read_text("utf-8", "replace")[-3000:] if log.exists() else ""

    def _start(self) -> None:
        with open(self.dir / "server.log", "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "runserver",
                    f"127.0.0.1:{self.port}",
                    "--noreload",
                    "--skip-checks",
                ],
                cwd=ROOT,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                answer = requests.get(self.discovery_url, timeout=1.0)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self._proc.poll() is not None:
                raise IdPError(
                    f"the provider exited ({self._proc.returncode}):\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise IdPError(f"the provider did not answer in {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _end_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def _restart(self) -> None:
        self._end_process()
        self._start()

    def stop(self) -> None:
        """End the provider process and remove its directory (safe to call twice)."""
        try:
            self._end_process()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> OIDCProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- keys ----------------------------------------------------------------------

    @property
    def signing_kid(self) -> str:
        """The kid of the key that signs new ID tokens (and heads their header)."""
        return kid_of(self._signing.read_text("ascii"))

    @property
    def inactive_kids(self) -> list[str]:
        """The kids of the rotated-out keys that are still published."""
        return [kid_of(p.read_text("ascii")) for p in self._inactive]

    def rotate_key(self, keep_old: bool = True) -> str:
        """Sign with a new RSA key from now on; return its kid.

        ``keep_old``: the key that signed until now stays in the JWKS (as DOT's
        ``OIDC_RSA_PRIVATE_KEYS_INACTIVE``), beside any kept before; else the
        JWKS holds the new key alone. Restarts the provider on the same port
        and database; returns once it answers.
        """
        old = self._signing
        self._signing = self._write_key()
        self._inactive = [old, *self._inactive] if keep_old else []
        self._restart()
        return self.signing_kid

    def drop_inactive_keys(self) -> None:
        """Stop publishing the rotated-out keys (the signing key stays); restarts the provider."""
        self._inactive = []
        self._restart()

    # -- documents -----------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """The discovery document (``<issuer>/.well-known/openid-configuration``)."""
        answer = requests.get(self.discovery_url, timeout=HTTP_TIMEOUT)
        answer.raise_for_status()
        return dict(answer.json())

    def jwks(self) -> dict[str, Any]:
        """The JWKS document as served now."""
        answer = requests.get(self.jwks_uri, timeout=HTTP_TIMEOUT)
        answer.raise_for_status()
        return dict(answer.json())

    @property
    def published_kids(self) -> list[str]:
        """The kids in the JWKS, in its order (the signing key first)."""
        return [key["kid"] for key in self.jwks()["keys"]]

    def subject(self, username: str) -> str:
        """The ``sub`` of ``username``'s ID tokens: the user's primary key at the provider."""
        return self._subjects[username]

    # -- the flow ------------------------------------------------------------------

    def tokens(self, username: str, password: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The token response of the authorization-code flow with PKCE, as a site gets it.

        A browser session asks ``/o/authorize/``, is sent to the login page,
        logs in through the form (with its CSRF token), is sent back and gets
        redirected to ``redirect_uri`` with a code, which is not followed: the
        "site" reads the code and the state from the Location, then exchanges
        the code at ``/o/token/`` with the PKCE verifier and its client
        credentials (HTTP Basic). Raises ``IdPError`` if any step goes
        otherwise (wrong password included).
        """
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
            .rstrip(b"=")
            .decode("ascii")
        )
        state = secrets.token_urlsafe(16)
        nonce = nonce or secrets.token_urlsafe(16)
        authorize = f"{self.issuer}/authorize/?" + urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        with requests.Session() as browser:
            # Not logged in yet: the provider sends the browser to its login page.
            first = browser.get(authorize, allow_redirects=False, timeout=HTTP_TIMEOUT)
            login_url = self._redirect(first, "the login page")
            page = browser.get(login_url, timeout=HTTP_TIMEOUT)
            found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            if page.status_code != 200 or found is None:
                raise IdPError(f"no login form at {login_url} ({page.status_code})")
            query = parse_qs(urlsplit(login_url).query)
            logged_in = browser.post(
                login_url,
                data={
                    "csrfmiddlewaretoken": found.group(1),
                    "username": username,
                    "password": password,
                    "next": query.get("next", [""])[0],
                },
                allow_redirects=False,
                timeout=HTTP_TIMEOUT,
            )
            back = self._redirect(logged_in, "the authorization endpoint after logging in")
            # Logged in: the provider redirects to the site's callback with a code.
            answer = browser.get(back, allow_redirects=False, timeout=HTTP_TIMEOUT)
            callback = self._redirect(answer, "the redirect URI")
        if not callback.startswith(self.redirect_uri + "?"):
            raise IdPError(f"redirected to {callback!r}, not to the redirect URI")
        params = parse_qs(urlsplit(callback).query)
        if params.get("state") != [state] or "code" not in params:
            raise IdPError(f"the callback carries no code for this state: {callback!r}")
        exchanged = requests.post(
            f"{self.issuer}/token/",
            data={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
            auth=(self.client_id, self.client_secret),
            timeout=HTTP_TIMEOUT,
        )
        if exchanged.status_code != 200:
            raise IdPError(f"the token endpoint said {exchanged.status_code}: {exchanged.text}")
        return dict(exchanged.json())

    def id_token(self, username: str, password: str, *, nonce: str | None = None) -> str:
        """An ID token (RS256 JWT) for ``username``, obtained through ``tokens``."""
        return str(self.tokens(username, password, nonce=nonce)["id_token"])

    def _redirect(self, answer: requests.Response, towards: str) -> str:
        if answer.status_code != 302 or "Location" not in answer.headers:
            raise IdPError(
                f"expected a redirect to {towards}, got {answer.status_code}: {answer.text[:300]}"
            )
        return urljoin(answer.url, answer.headers["Location"])


@pytest.fixture
def oidc_provider() -> Iterator[OIDCProvider]:
    """A started provider (users alice and bob) for one test; always stopped after it."""
    provider = OIDCProvider()
    try:
        yield provider
    finally:
        provider.stop()
