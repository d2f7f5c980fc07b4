"""Scheduled enforcement (SPEC §15): ``security on --at``, the panel's countdown and cancel.

The switch turns on at its time with nothing written then: each process's
snapshot knows the time (``IntegrationEntry.on``), as it knows when a key's
grace ends. Tested with the controlled clock (HTTP sync and async, the
WebSocket watcher, ``security_enabled``), the CLI, the panel, and two real
processes (a server and the CLI sharing one database).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import pytest
from django.test import AsyncClient, Client

import chat_security
from chat_security import keyring
from chat_security.exceptions import KeyStateError
from chat_security.models import AuditEntry, Integration, SecurityConfig
from chat_security.timefmt import countdown
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, security_off
from tests.test_admin_permissions import client_for
from tests.test_cli import cli
from tests.ws_helpers import expect_close, expect_identified, finish, guarded, open_socket

from . import test_two_processes as two
from .servers import ROOT, process_env, serving

secret, token_for, alice = chat_helpers.secret, chat_helpers.token_for, chat_helpers.alice

WHOAMI = "/chat/api/whoami"
AWHOAMI = "/chat/api/awhoami"
PANEL = "/admin/chat_security/securityconfig/"


def at(clock, seconds: float) -> datetime:
    """The controlled clock's now + ``seconds``, as an aware datetime."""
    return datetime.fromtimestamp(clock.t + seconds, tz=UTC)


def version() -> int:
    return SecurityConfig.objects.values_list("version", flat=True).get(pk=1)


def error_of(response) -> str | None:
    return json.loads(response.content).get("error") if response.status_code != 200 else None


# -- the store --------------------------------------------------------------------------


@pytest.mark.django_db
def test_schedule_is_stored_audited_and_replaced_by_a_switch_set_by_hand(clock):
    security_off()
    when = at(clock, 3600)
    SecurityConfig.schedule_on(when, "ops")
    row = Integration.objects.default()
    assert (row.enabled, row.enforce_at, row.scheduled_at()) == (False, when, when)
    assert SecurityConfig.load().enabled is False
    entry = AuditEntry.objects.get(action="schedule_security_on")
    assert (entry.actor, entry.detail) == ("ops", f"at {when.isoformat()}")
    clock.advance(3600)
    assert SecurityConfig.load().enabled is True  # due: on, nothing written
    assert Integration.objects.default().scheduled_at() is None
    SecurityConfig.set_enabled(False, "ops")  # by hand: the schedule goes
    assert Integration.objects.default().enforce_at is None
    assert SecurityConfig.load().enabled is False


@pytest.mark.django_db
def test_refusals_change_nothing(clock):
    SecurityConfig.load()
    with pytest.raises(KeyStateError, match="already on"):
        SecurityConfig.schedule_on(at(clock, 60))  # the switch is on
    security_off()
    before = (version(), AuditEntry.objects.count())
    with pytest.raises(KeyStateError, match="not in the future"):
        SecurityConfig.schedule_on(at(clock, 0))
    with pytest.raises(KeyStateError, match="time zone"):
        SecurityConfig.schedule_on(at(clock, 60).replace(tzinfo=None))
    with pytest.raises(KeyStateError, match="not scheduled"):
        SecurityConfig.cancel_schedule()
    with pytest.raises(KeyStateError, match="no integration"):
        SecurityConfig.schedule_on(at(clock, 60), integration="nope")
    assert (version(), AuditEntry.objects.count()) == before
    assert Integration.objects.default().enforce_at is None


@pytest.mark.django_db
def test_cancel(clock):
    security_off()
    SecurityConfig.schedule_on(at(clock, 60), "ops")
    SecurityConfig.cancel_schedule("ops")
    assert Integration.objects.default().enforce_at is None
    assert AuditEntry.objects.filter(action="cancel_scheduled_security", actor="ops").exists()
    clock.advance(120)
    assert SecurityConfig.load().enabled is False
    SecurityConfig.schedule_on(at(clock, 60))
    clock.advance(61)
    with pytest.raises(KeyStateError, match="already on"):
        SecurityConfig.cancel_schedule()  # too late: it is on


# -- every worker, with no write at the time --------------------------------------------


@pytest.mark.django_db
@pytest.mark.urls("tests.chat_urls")
def test_http_requires_a_token_from_the_time_on_with_nothing_written(secret, token_for, clock):
    security_off()
    SecurityConfig.schedule_on(at(clock, 10))
    token = token_for("alice")  # a token the engine will remember
    client = Client()
    session = client.session
    session["seen"] = True
    session.save()  # a request with a session cookie takes the other path
    client.cookies["sessionid"] = session.session_key
    assert client.get(WHOAMI).status_code == 200
    assert Client().get(WHOAMI).status_code == 200
    assert Client().get(WHOAMI, headers=bearer(token)).status_code == 200
    assert chat_security.security_enabled() is False
    written = version()
    clock.advance(9.9)
    assert Client().get(WHOAMI).status_code == 200
    clock.advance(0.1)
    assert error_of(Client().get(WHOAMI)) == "missing_token"
    assert error_of(client.get(WHOAMI)) == "missing_token"
    assert Client().get(WHOAMI, headers=bearer(token)).status_code == 200
    assert chat_security.security_enabled() is True
    assert version() == written  # nothing was written at the time
    snap = keyring.reread()  # as rebuilt at the time: on, no schedule left
    assert snap.enabled is True and snap.integrations["default"].enforce_at is None
    assert error_of(Client().get(WHOAMI)) == "missing_token"
    assert version() == written


@pytest.mark.django_db
def test_the_snapshot_is_rebuilt_at_the_time(clock):
    security_off()
    SecurityConfig.schedule_on(at(clock, 30))
    snap = keyring.get_snapshot()
    assert snap.rebuild_at == clock.t + 30
    assert keyring.fresh_snapshot() is snap
    clock.advance(30)
    assert keyring.fresh_snapshot() is None  # async callers go through get_snapshot


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.chat_urls")
async def test_async_requests_too(secret, clock):
    from channels.db import database_sync_to_async

    await database_sync_to_async(security_off)()
    await database_sync_to_async(SecurityConfig.schedule_on)(at(clock, 5))
    assert (await AsyncClient().get(AWHOAMI)).status_code == 200
    assert (await AsyncClient().get(AWHOAMI)).status_code == 200  # in the loop, warm
    clock.advance(5)
    assert error_of(await AsyncClient().get(AWHOAMI)) == "missing_token"


@pytest.mark.django_db
@pytest.mark.urls("tests.chat_urls")
def test_another_integration_schedules_alone(secret, clock):
    Integration.objects.add("ios", paths=["/chat/api/ios/"])
    SecurityConfig.set_enabled(False, integration="ios")
    security_off()
    SecurityConfig.schedule_on(at(clock, 10), integration="ios")
    clock.advance(10)
    snap = keyring.get_snapshot()
    assert snap.integrations["ios"].on(clock.t) is True
    assert snap.integrations["default"].on(clock.t) is False
    assert Client().get(WHOAMI).status_code == 200  # default's path


@pytest.mark.django_db(transaction=True)
async def test_open_anonymous_sockets_are_closed_at_the_time(secret, token_for, clock):
    """As when an admin switches security on by hand (SPEC §10): missing_token."""
    from channels.db import database_sync_to_async

    await database_sync_to_async(security_off)()
    await database_sync_to_async(SecurityConfig.schedule_on)(at(clock, 60))
    with chat_settings(KEY_CACHE_SECONDS=0.2):
        anonymous = await open_socket(guarded())
        verified = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(anonymous, None)
        await expect_identified(verified, "u-1")
        assert await anonymous.receive_nothing(0.4)
        started = time.monotonic()
        clock.advance(60)
        await expect_close(anonymous, 4401, "missing_token", timeout=2)
        assert time.monotonic() - started <= 0.2 + 1
        assert await verified.receive_nothing(0.3)
        await finish(anonymous)
        await finish(verified)


def test_the_tag_page_says_on_from_the_time(secret, clock, alice):
    """The demo's dashboard (the page with ``{% chat_identity_token %}``) shows the switch
    from the snapshot: off before the time, on after it, with nothing written."""
    security_off()
    SecurityConfig.schedule_on(at(clock, 60))
    client = Client()
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "var ConvrsUser" in page and "security is <strong>off</strong>" in page
    clock.advance(60)
    page = client.get("/").content.decode()
    assert "var ConvrsUser" in page and "security is <strong>on</strong>" in page


# -- the command line -------------------------------------------------------------------


@pytest.mark.django_db
def test_cli_schedule_status_and_cancel(clock):
    security_off()
    when = at(clock, 7200).isoformat().replace("+00:00", "Z")
    result = cli("security", "on", "--at", when)
    assert result.code == 0, result.err
    iso = at(clock, 7200).isoformat()
    assert result.json == {"mode": "off", "enforce_at": iso}
    status = cli("status").json
    assert status["integrations"][0]["enforce_at"] == iso
    assert cli("security", "cancel").json == {"mode": "off", "enforce_at": None}
    assert cli("status").json["integrations"][0]["enforce_at"] is None
    cli("security", "on", "--at", "2027-01-16T01:00:00+01:00")
    assert cli("security", "off").json == {"mode": "off"}  # as it always printed ...
    assert cli("status").json["integrations"][0]["enforce_at"] is None  # ... and it cleared it
    cli("security", "on", "--at", when)
    clock.advance(7200)
    status = cli("status").json
    assert (status["mode"], status["integrations"][0]["enforce_at"]) == ("on", None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("security", "on", "--at", "2027-02-01T09:00:00"), ("time zone",)),
        (("security", "on", "--at", "next tuesday"), ("ISO 8601",)),
        (("security", "on", "--at", "2020-01-01T00:00:00Z"), ("not in the future",)),
        (("security", "off", "--at", "2027-02-01T09:00:00Z"), ("--at",)),
        (("security", "cancel"), ("not scheduled",)),
        (("security", "on", "--at", "2027-02-01T09:00:00Z", "--integration", "x"), ("x",)),
    ],
)
def test_cli_bad_input(args, words, clock):
    security_off()
    before = (version(), AuditEntry.objects.count())
    cli(*args).assert_bad_input(*words)
    assert (version(), AuditEntry.objects.count()) == before


@pytest.mark.django_db
def test_cli_refuses_to_schedule_while_on(clock):
    SecurityConfig.load()
    cli("security", "on", "--at", "2027-02-01T09:00:00Z").assert_bad_input("already on")


# -- the panel --------------------------------------------------------------------------


def test_countdown():
    assert [countdown(s) for s in (5, 60, 2 * 3600 + 13 * 60 + 5, 3600, 86400 * 3 + 7200)] == [
        "5 s",
        "1 min",
        "2 h 13 min",
        "1 h",
        "3 days 2 h",
    ]


@pytest.mark.django_db
def test_panel_schedule_countdown_and_cancel(clock):
    security_off()
    client = client_for("admin")
    page = client.get(PANEL).content.decode()
    assert "Turn on at (UTC)" in page and 'type="datetime-local"' in page
    when = at(clock, 2 * 3600 + 13 * 60 + 30)
    response = client.post(
        PANEL + "security/schedule/", {"at": when.strftime("%Y-%m-%dT%H:%M")}, follow=True
    )
    page = response.content.decode()
    minute = when.replace(second=0)
    assert Integration.objects.default().enforce_at == minute
    assert f"will turn on at {minute:%H:%M} UTC" in page or f"{minute:%Y-%m-%d %H:%M} UTC" in page
    assert re.search(r"Security turns on in 2 h 13 min \(at <time datetime=", page), page
    assert "Cancel the scheduled switch-on" in page
    assert AuditEntry.objects.filter(action="schedule_security_on", actor="admin").exists()
    response = client.post(PANEL + "security/cancel/", follow=True)
    assert "was cancelled" in response.content.decode()
    assert Integration.objects.default().enforce_at is None
    assert "Security turns on in" not in response.content.decode()


@pytest.mark.django_db
def test_panel_refuses_a_past_time_inline_and_shows_no_form_while_on(clock):
    security_off()
    client = client_for("admin")
    past = at(clock, -3600).strftime("%Y-%m-%dT%H:%M")
    response = client.post(PANEL + "security/schedule/", {"at": past})
    assert response.status_code == 200
    assert "is not in the future" in response.content.decode()
    assert client.post(PANEL + "security/schedule/", {"at": "soon"}).status_code == 200
    assert Integration.objects.default().enforce_at is None
    response = client.post(PANEL + "security/cancel/")
    assert "not scheduled" in response.content.decode()
    SecurityConfig.set_enabled(True)
    assert "Turn on at (UTC)" not in client.get(PANEL).content.decode()


@pytest.mark.django_db
def test_panel_another_integration(clock):
    Integration.objects.add("ios", paths=["/ios/"])
    SecurityConfig.set_enabled(False, integration="ios")
    client = client_for("admin")
    when = at(clock, 600).strftime("%Y-%m-%dT%H:%M")
    response = client.post(PANEL + "security/schedule/", {"at": when, "integration": "ios"})
    assert response.status_code == 302
    assert response["Location"].endswith("#integration-ios-security")
    assert Integration.objects.get(name="ios").enforce_at is not None
    assert Integration.objects.default().enforce_at is None


# -- two real processes -----------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    env = process_env("tests.process_settings", tmp_path / "db.sqlite3")
    two.manage(env, "migrate", "--noinput", "-v0")
    return env


def test_a_server_process_enforces_at_the_time_scheduled_by_the_cli(env):
    """The CLI schedules 3 s ahead; the server refuses a token-less request from then
    on (within KEY_CACHE_SECONDS), never before."""
    two.cli(env, "generate-secret")
    two.cli(env, "security", "off")
    with serving(env, str(ROOT / "manage.py"), "runserver", "--noreload", "127.0.0.1:{port}") as p:
        base = f"http://127.0.0.1:{p}"
        assert two.get(base)[0] == 200
        when = time.time() + 3
        stamp = datetime.fromtimestamp(when, tz=UTC).isoformat()
        assert json.loads(two.cli(env, "security", "on", "--at", stamp))["mode"] == "off"
        assert json.loads(two.cli(env, "status"))["integrations"][0]["enforce_at"] == stamp
        seen: list[tuple[float, float, int, str | None]] = []
        deadline = when + two.KEY_CACHE_SECONDS + 3
        while time.time() < deadline:
            sent = time.time()
            status, body = two.get(base)
            seen.append((sent, time.time(), status, body.get("error")))
            if status == 401:
                break
            time.sleep(0.05)
    refused = [s for s in seen if s[2] != 200]
    assert refused, "the server never required a token"
    sent, received, status, error = refused[0]
    assert (status, error) == (401, "missing_token")
    assert received >= when  # never before the time
    assert sent <= when + two.KEY_CACHE_SECONDS + two.SLACK
    assert all(r[2] == 200 for r in seen if r[1] < when)
    assert json.loads(two.cli(env, "status"))["mode"] == "on"
