"""Prometheus metrics (SPEC §15), in one process: chat_security.metrics.

Counters are read from the scrape the site mounts (``/metrics``,
tests/metrics_urls.py), parsed by prometheus_client's own parser. The
registry is the process's, shared by every test, so each test compares the
scrape after with the scrape before. Four gunicorn workers in multi-process
mode are in tests/test_metrics_workers.py.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from django.core.checks import Error
from django.http import HttpResponse
from django.test import Client, RequestFactory
from joserfc.jwk import RSAKey
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from chat_security import checks, metrics, usage
from chat_security.exceptions import ERROR_CODES
from chat_security.middleware import ChatSecurityMiddleware
from chat_security.models import Integration, Key, SecurityConfig
from chat_security.remote import sources
from tests.chat_helpers import bearer, chat_settings, sign
from tests.jwks_server import jwks_server
from tests.servers import ROOT
from tests.tokencraft import rsa_key
from tests.ws_helpers import expect_close, expect_identified, finish, guarded, open_socket

__all__ = ["jwks_server"]

VERIFICATIONS = "chat_security_verifications_total"
SOCKETS = "chat_security_websocket_connections"
FETCHES = "chat_security_key_fetches_total"
GRACE = "chat_security_key_grace_remaining_seconds"
OUTCOME_LABELS = {"accepted", "rejected", "anonymous"}


@pytest.fixture
def metrics_on(settings):
    settings.ROOT_URLCONF = "tests.metrics_urls"
    with chat_settings(METRICS=True):
        assert metrics.enabled() and usage.observe is not None
        yield
    assert not metrics.enabled() and usage.observe is None


def scrape(client: Client | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of the ``/metrics`` answer: (name, sorted labels) -> value."""
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def count(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def verifications(samples: dict, integration: str, outcome: str, code: str = "") -> float:
    return count(samples, VERIFICATIONS, integration=integration, outcome=outcome, code=code)


def grown(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """The series of ``name`` that moved between two scrapes, by their labels."""
    keys = {k for k in after if k[0] == name}
    moved = {k[1]: after[k] - before.get(k, 0.0) for k in keys}
    return {labels: n for labels, n in moved.items() if n}


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def two_integrations(db, clock):
    """``default`` on with a secret; ``brand-b`` (paths /b/api/) off: lets visitors in."""
    key, value = Key.objects.generate_secret(actor="tests")
    Integration.objects.add("brand-b", paths=["/b/api/"], actor="tests")
    SecurityConfig.set_enabled(False, actor="tests", integration="brand-b")

    def token(sub: str = "u-1", **claims) -> str:
        payload = {"sub": sub, "iat": int(clock.t), "exp": int(clock.t) + 3600, **claims}
        return sign(value, payload, kid=key.kid)

    return token


def test_http_requests_count_by_integration_outcome_and_code(metrics_on, two_integrations):
    client = Client()
    before = scrape(client)
    for _ in range(3):
        assert client.get("/chat/api/worker", headers=bearer(two_integrations())).status_code == 200
    for token, code in (
        (None, "missing_token"),
        ("not-a-token", "malformed"),
        (two_integrations() + "x", "invalid_signature"),
        (two_integrations() + "x", "invalid_signature"),
    ):
        response = client.get("/chat/api/worker", headers=bearer(token) if token else {})
        assert response.status_code == 401 and response.json()["error"] == code
    for _ in range(2):
        client.get("/b/api/anything")  # brand-b lets the visitor in (the view is a 404)
    after = scrape(client)

    assert grown(before, after, VERIFICATIONS) == {
        (("code", ""), ("integration", "default"), ("outcome", "accepted")): 3,
        (("code", "missing_token"), ("integration", "default"), ("outcome", "rejected")): 1,
        (("code", "malformed"), ("integration", "default"), ("outcome", "rejected")): 1,
        (("code", "invalid_signature"), ("integration", "default"), ("outcome", "rejected")): 2,
        (("code", ""), ("integration", "brand-b"), ("outcome", "anonymous")): 2,
    }


def test_a_path_no_integration_guards_counts_nothing(metrics_on, two_integrations):
    client = Client()
    before = scrape(client)
    client.get("/", headers=bearer("not-a-token"))
    assert grown(before, scrape(client), VERIFICATIONS) == {}


def test_metrics_off_count_nothing_and_the_view_is_not_found(settings, two_integrations):
    settings.ROOT_URLCONF = "tests.metrics_urls"
    assert usage.observe is None and not metrics.enabled()
    before = REGISTRY.get_sample_value(
        VERIFICATIONS, {"integration": "default", "outcome": "accepted", "code": ""}
    )
    client = Client()
    assert client.get("/chat/api/worker", headers=bearer(two_integrations())).status_code == 200
    assert client.get("/metrics").status_code == 404
    after = REGISTRY.get_sample_value(
        VERIFICATIONS, {"integration": "default", "outcome": "accepted", "code": ""}
    )
    assert after == before  # None in a process where metrics never came on


# -- WebSocket ------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def read(name: str, **labels: str) -> float:
    # The key-grace collector reads the key snapshot: the database, so not on the loop.
    return await database_sync_to_async(_sample)(name, **labels)


@pytest.mark.django_db(transaction=True)
async def test_websockets_count_outcomes_and_open_connections(clock):
    with chat_settings(METRICS=True):
        key, value = await database_sync_to_async(Key.objects.generate_secret)(actor="tests")
        token = sign(value, {"sub": "u-1", "iat": int(clock.t), "exp": int(clock.t) + 60},
                     kid=key.kid)  # fmt: skip
        accepted = {"integration": "default", "outcome": "accepted", "code": ""}
        refused = {"integration": "default", "outcome": "rejected", "code": "malformed"}
        anonymous = {"integration": "default", "outcome": "anonymous", "code": ""}
        start = {n: await read(VERIFICATIONS, **labels)
                 for n, labels in (("a", accepted), ("r", refused), ("n", anonymous))}  # fmt: skip
        open_before = await read(SOCKETS, integration="default")

        app = guarded()
        first = await open_socket(app, token)
        await expect_identified(first, "u-1")
        second = await open_socket(app, token, via="identify")
        await expect_identified(second, "u-1")
        assert await read(SOCKETS, integration="default") == open_before + 2
        bad = await open_socket(app, "not-a-token")
        await expect_close(bad, 4401, "malformed")
        await finish(first)
        assert await read(SOCKETS, integration="default") == open_before + 1

        await database_sync_to_async(SecurityConfig.set_enabled)(False, actor="tests")
        visitor = await open_socket(app)
        await expect_identified(visitor, None)
        assert await read(SOCKETS, integration="default") == open_before + 2
        await finish(second)
        await finish(visitor)

        assert await read(SOCKETS, integration="default") == open_before
        assert await read(VERIFICATIONS, **accepted) == start["a"] + 2
        assert await read(VERIFICATIONS, **refused) == start["r"] + 1
        assert await read(VERIFICATIONS, **anonymous) == start["n"] + 1


# -- key fetches and keys in grace --------------------------------------------------------------


def test_key_fetches_count_by_outcome(metrics_on, jwks_server, settings, clock, db):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "JWKS_PRIVATE_HOSTS": ["127.0.0.1"]}
    public = RSAKey.import_key(rsa_key().public_key()).as_dict(private=False)
    jwks_server.set_jwks({"keys": [{**public, "kid": "k1", "use": "sig"}]})
    Integration.objects.add("idp", paths=["/idp/"], actor="tests")
    sources.add_jwks_url(jwks_server.url(), "idp", actor="tests")
    before = scrape()

    assert sources.refresh("idp").ok
    assert sources.refresh("idp").ok
    jwks_server.set_route("/jwks", status=500, body="oops")
    assert not sources.refresh("idp").ok

    assert grown(before, scrape(), FETCHES) == {
        (("integration", "idp"), ("outcome", "ok")): 2,
        (("integration", "idp"), ("outcome", "error")): 1,
    }


def test_seconds_until_each_keys_grace_ends_only_for_keys_in_grace(metrics_on, db, clock):
    old, _ = Key.objects.generate_secret(actor="tests")
    active, _ = Key.objects.rotate_secret(grace=3600, actor="tests")
    Integration.objects.add("ios", paths=["/ios/"], actor="tests")
    ios_old, _ = Key.objects.generate_secret(actor="tests", integration="ios")
    Key.objects.rotate_secret(grace=60, actor="tests", integration="ios")

    def grace() -> dict[tuple, float]:
        return {labels: v for (name, labels), v in scrape().items() if name == GRACE}

    assert grace() == {
        (("integration", "default"), ("kid", old.kid)): 3600.0,
        (("integration", "ios"), ("kid", ios_old.kid)): 60.0,
    }
    clock.advance(600)  # ios's old key has left its grace; default's has 3000 s left
    assert grace() == {(("integration", "default"), ("kid", old.kid)): 3000.0}
    Key.objects.revoke(old.kid, actor="tests")  # revoked in grace: no longer in grace
    assert grace() == {}
    assert active.kid not in json.dumps(list(scrape()))  # an active key is never a series


# -- the view ---------------------------------------------------------------------------------


def test_the_scrape_parses_in_both_formats_and_only_answers_get(metrics_on, two_integrations):
    client = Client()
    client.get("/chat/api/worker", headers=bearer(two_integrations()))
    response = client.get("/metrics")
    assert response["Cache-Control"] == "no-store"
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"chat_security_verifications", "chat_security_key_fetches", GRACE} <= names
    assert SOCKETS in names

    asked = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert asked["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(asked.content.decode())}
    assert families["chat_security_verifications"].type == "counter"
    assert client.post("/metrics").status_code == 405
    assert client.head("/metrics").status_code == 200


def test_a_scrape_still_answers_when_the_key_store_cannot_be_read(metrics_on, db, monkeypatch):
    from chat_security import keyring
    from chat_security.exceptions import KeyStoreUnavailable

    def unreadable():
        raise KeyStoreUnavailable("down")

    monkeypatch.setattr(keyring, "get_snapshot", unreadable)
    samples = scrape()
    assert not [k for k in samples if k[0] == GRACE]


# -- bounded labels ---------------------------------------------------------------------------


def test_a_flood_of_distinct_users_kids_and_issuers_adds_a_bounded_number_of_series(
    metrics_on, two_integrations
):
    """10,000 distinct user ids (and jti) accepted, 10,000 distinct kids and 10,000
    distinct issuers refused: three series more, and none of those values in any label."""
    for name in ("brand-x", "brand-y"):  # a path two serve: the token's iss picks one
        Integration.objects.add(name, issuer=f"https://{name}.example", paths=["/shared/"])
        Key.objects.generate_secret(actor="tests", integration=name)
    view = ChatSecurityMiddleware(lambda request: HttpResponse())
    factory = RequestFactory()
    before = scrape()
    flood = 10_000
    for i in range(flood):
        token = two_integrations(f"user-{i}", jti=f"jti-{i}")
        assert view(factory.get("/chat/api/x", headers=bearer(token))).status_code == 200
        forged = sign("x" * 32, {"sub": "u", "exp": 2_000_000_000}, kid=f"kid-{i}")
        assert view(factory.get("/chat/api/x", headers=bearer(forged))).status_code == 401
        stranger = sign("x" * 32, {"sub": "u", "iss": f"https://evil-{i}.example"})
        assert view(factory.get("/shared/x", headers=bearer(stranger))).status_code == 401
    after = scrape()

    assert grown(before, after, VERIFICATIONS) == {
        (("code", ""), ("integration", "default"), ("outcome", "accepted")): flood,
        (("code", "unknown_key"), ("integration", "default"), ("outcome", "rejected")): flood,
        (("code", "unknown_issuer"), ("integration", "brand-x"), ("outcome", "rejected")): flood,
    }
    new_series = {k for k in after if k not in before}
    assert len(new_series) <= 6  # each new series' _total and _created at most
    text = Client().get("/metrics").content.decode()
    for fragment in ("user-", "jti-", "kid-", "evil-"):
        assert fragment not in text
    series = [dict(labels) for name, labels in after if name == VERIFICATIONS]
    assert {s["outcome"] for s in series} <= OUTCOME_LABELS
    assert {s["code"] for s in series} <= {"", metrics.OTHER, *ERROR_CODES}
    assert len(metrics._children) <= metrics.MAX_INTEGRATIONS * len(metrics.OUTCOMES)


def test_label_values_outside_the_bounded_sets_count_as_other(metrics_on, monkeypatch):
    monkeypatch.setattr(metrics, "_children", {})
    monkeypatch.setattr(metrics._State, "integrations", set())
    monkeypatch.setattr(metrics, "MAX_INTEGRATIONS", 3)
    for name in ("default", "ios", "web", "fourth", "Not A Slug", "x" * 51, None):
        usage.count_request("signed", integration=name)  # type: ignore[arg-type]
    usage.count_request("no-such-outcome", integration="ios")
    usage.count_request("unknown_key", integration="ios")

    assert metrics._State.integrations == {"default", "ios", "web"}
    assert set(metrics._children) == {
        ("signed", "default"), ("signed", "ios"), ("signed", "web"), ("unknown_key", "ios"),
    }  # fmt: skip
    assert metrics.integration_label("fourth") == metrics.OTHER
    assert _sample(VERIFICATIONS, integration="ios", outcome="rejected", code=metrics.OTHER) >= 1


# -- switching on, the setting, and the import ------------------------------------------------


def test_the_metrics_check(settings, monkeypatch):
    def errors() -> list[str]:
        return [m.id for m in checks.check_settings() if isinstance(m, Error)]

    assert "chat_security.E028" not in errors()
    for bad in ("yes", 1, None):
        settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "METRICS": bad}
        assert errors().count("chat_security.E028") == 1
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "METRICS": True}
    assert "chat_security.E028" not in errors()
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None)
    [missing] = [m for m in checks.check_settings() if m.id == "chat_security.E028"]
    assert "prometheus_client is not installed" in missing.msg
    assert "chat-security[metrics]" in missing.hint


def test_without_prometheus_client_metrics_stay_off_and_say_why(monkeypatch, caplog):
    monkeypatch.setattr(metrics._State, "metrics", None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="chat_security.metrics"):
        assert metrics.enable() is False
    assert usage.observe is None and not metrics.enabled()
    assert "chat-security[metrics]" in caplog.text and "stay off" in caplog.text


SCRIPT = """
import json
import os
import sys
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import tests.settings as base
base.CHAT_SECURITY = {**base.CHAT_SECURITY, "METRICS": %s}
base.ROOT_URLCONF = "tests.metrics_urls"
import django
django.setup()
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
from chat_security import usage
from chat_security.models import Key
import jwt
key, value = Key.objects.generate_secret()
import time
now = int(time.time())
token = jwt.encode({"sub": "u", "iat": now, "exp": now + 600}, value, headers={"kid": key.kid})
client = Client()
answers = [
    client.get("/chat/api/worker", headers={"Authorization": "Bearer " + token}).status_code,
    client.get("/chat/api/worker", headers={"Authorization": "Bearer bad"}).status_code,
    client.get("/metrics").status_code,
]
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "prometheus_client")
print(json.dumps({"answers": answers, "loaded": loaded, "observing": usage.observe is not None}))
"""


@pytest.mark.parametrize("on", [False, True])
def test_prometheus_client_is_imported_only_when_metrics_are_on(on):
    """A fresh process: the app, a verified and a refused request through the middleware,
    and the scrape URL. Off, prometheus_client is never imported."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT % on],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["answers"] == [200, 401, 200 if on else 404]
    assert seen["observing"] is on
    if on:
        assert "prometheus_client" in seen["loaded"]
    else:
        assert seen["loaded"] == []
