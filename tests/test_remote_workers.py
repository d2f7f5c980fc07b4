"""One fetch for all workers (SPEC §14, issue 19 item 3): four gunicorn workers, one IdP.

The identity provider is a JWKS server in a process of its own that counts
the requests it answers (tests/jwks_server.py). The workers share the
database (and the cache, as tests/test_workers.py's do). The timings are
short so the test runs in well under a minute: cooldown 2 s, refresh 4 s,
stale limit 20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from .jwks_server import jwks_server_process
from .servers import ROOT, manage, process_env, serving
from .test_workers import SERVERS, WORKERS, ask, pids_seen

COOLDOWN, REFRESH, STALE = 2.0, 4.0, 20.0
SETTINGS = {
    "JWKS_PRIVATE_HOSTS": ["127.0.0.1"],
    "JWKS_COOLDOWN_SECONDS": COOLDOWN,
    "JWKS_REFRESH_SECONDS": REFRESH,
    "JWKS_MAX_STALE": STALE,
}


class Keys:
    def __init__(self) -> None:
        self.private = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
                        for kid in ("k1", "k2", "ghost")}  # fmt: skip

    def jwks(self, *kids: str) -> dict:
        return {"keys": [{**RSAKey.import_key(self.private[k].public_key()).as_dict(),
                          "kid": k, "use": "sig"} for k in kids]}  # fmt: skip

    def token(self, kid: str, sub: str = "alice") -> str:
        now = int(time.time())
        payload = {"sub": sub, "iat": now, "exp": now + 600}
        key = self.private["ghost" if kid.startswith("ghost") else kid]
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def env(tmp_path):
    env = process_env("tests.worker_settings", tmp_path / "db.sqlite3")
    env["CHAT_SECURITY_TEST_JWKS"] = json.dumps(SETTINGS)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "createcachetable")
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "chat_security", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def until(base: str, token: str, expected: tuple[int, str | None], within: float) -> float:
    """Seconds until 8 answers per worker in a row are ``expected`` (bounded)."""
    start, streak = time.monotonic(), 0
    while time.monotonic() - start < within:
        status, _pid, code = ask(base, token)
        streak = streak + 1 if (status, code) == expected else 0
        if streak >= 8 * WORKERS:
            return time.monotonic() - start
    pytest.fail(f"the workers never all answered {expected} within {within} s")


def test_four_workers_share_one_fetch_and_the_last_good_set(env, tmp_path):
    keys = Keys()
    with jwks_server_process(tmp_path / "idp", routes={"/jwks": {"json": keys.jwks("k1")}}) as idp:
        added = json.loads(manage(env, "chat_security", "add-jwks-url", idp.url()))
        added_at = time.monotonic()
        assert [k["kid"] for k in added["keys"]] == ["k1"]
        with serving(env, *SERVERS["gunicorn"]) as port:
            base = f"http://127.0.0.1:{port}"
            pids_seen(base, keys.token("k1"))  # all four workers verify with the fetched set
            # The CLI's fetch; the workers read the stored set, and refresh it once
            # per JWKS_REFRESH_SECONDS between them all, not once per worker.
            assert idp.count() <= 1 + int((time.monotonic() - added_at) / REFRESH)

            # The IdP rotates: k2 is published. A flood of tokens with kids nobody
            # publishes, from 8 clients at once, makes one fetch per cooldown.
            idp.set_route("/jwks", json=keys.jwks("k1", "k2"))
            time.sleep(COOLDOWN + 0.1)
            before, start = idp.count(), time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda i: ask(base, keys.token(f"ghost-{i}")), range(200)))
            flood = time.monotonic() - start
            fetches = idp.count() - before
            print(f"flood: 200 unknown kids in {flood:.2f} s, {fetches} fetch(es)")
            assert {(status, code) for status, _pid, code in answers} == {(401, "unknown_key")}
            assert 1 <= fetches <= 1 + int(flood / COOLDOWN)
            # That fetch stored k2: every worker accepts it within KEY_CACHE_SECONDS.
            until(base, keys.token("k2"), (200, None), within=5)

            # The IdP removes k1: refused everywhere after the next refresh.
            idp.set_route("/jwks", json=keys.jwks("k2"))
            refreshed = json.loads(manage(env, "chat_security", "refresh-keys"))
            assert refreshed["ok"] and refreshed["removed"] == ["k1"]
            until(base, keys.token("k1"), (401, "unknown_key"), within=5)

            # The IdP misbehaves: every failed fetch keeps the last good set.
            for route, said in (
                ({"garbage": 64}, "JSON"),
                ({"redirect": "https://elsewhere.example/jwks"}, "redirect"),
                ({"size": 10 * 1024 * 1024}, "256 KiB"),
                ({"drip": 64, "interval": 0.5}, "5 s"),
                ({"status": 500, "body": "oops"}, "500"),
            ):
                idp.set_route("/jwks", **route)
                done = cli(env, "refresh-keys")
                assert done.returncode == 1, done.stderr
                assert said in json.loads(done.stdout)["error"], done.stdout
                assert ask(base, keys.token("k2"))[0] == 200

            # Down past JWKS_MAX_STALE (from the last good fetch): 503 on every worker.
            status = json.loads(manage(env, "chat_security", "status"))
            fetched_at = status["integrations"][0]["key_source"]["fetched_at"]
            assert fetched_at is not None
            waited = until(base, keys.token("k2"), (503, "unavailable"), within=STALE + 5)
            print(f"stale: every worker answered 503 after {waited:.1f} s more")
            # Back: within a cooldown and an interval, every worker serves again.
            idp.set_route("/jwks", json=keys.jwks("k2"))
            until(base, keys.token("k2"), (200, None), within=COOLDOWN + 5)
