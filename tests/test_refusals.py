"""Recent failures (SPEC §15): what a refused chat request leaves behind, and never more.

``refusals`` decides what a refusal keeps: the user-agent family, the /24 or
/48 network, the kid and iss shortened, the integration it belongs to.
``usage`` keeps the newest ``FAILURE_SAMPLES`` per integration and thread and
writes them with its flush. The end-to-end tests refuse real requests through
the test client and Channels' communicator. (That no token material reaches
the table, the panel or the CLI: tests/test_refusals_material.py.)
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client

from chat_security import keyring, refusals, usage
from chat_security.conf import app_settings
from chat_security.exceptions import ERROR_CODES
from chat_security.models import FailureSample, Integration, Key, RevokedUser, TrafficStat
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, sign
from tests.test_cli import cli
from tests.ws_helpers import PATH, expect_close, expect_identified, guarded, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.chat_urls")]
secret, token_for = chat_helpers.secret, chat_helpers.token_for

WHOAMI = "/chat/api/whoami"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def failure(n: float, integration: str = "default", code: str = "expired") -> usage.Failure:
    return usage.Failure(
        at=n, integration=integration, code=code, kid=f"k{n}", iss="", channel="http",
        path=WHOAMI, user_agent="curl", network="192.0.2.0/24",
    )  # fmt: skip


def kept(integration: str = "default") -> list[float]:
    """The times of the stored samples of ``integration``, oldest first."""
    rows = FailureSample.objects.filter(integration=integration).order_by("at")
    return [row.at.timestamp() for row in rows]


def only_row() -> FailureSample:
    assert usage.flush_usage() is True
    rows = list(FailureSample.objects.all())
    assert len(rows) == 1, rows
    return rows[0]


# -- what a sample keeps ---------------------------------------------------------------


IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
ANDROID = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "


@pytest.mark.parametrize(
    ("header", "family"),
    [
        (FIREFOX, "Firefox"),
        (CHROME, "Chrome"),
        (CHROME + " Edg/126.0.2592.68", "Edge"),
        (ANDROID + "Chrome/126.0 Mobile Safari/537.36 EdgA/126.0", "Edge"),
        (CHROME + " OPR/111.0.0.0", "Opera"),
        (ANDROID + "SamsungBrowser/25.0 Chrome/121.0 Mobile Safari/537.36", "Samsung Internet"),
        (CHROME.replace("Chrome/", "HeadlessChrome/"), "Headless Chrome"),
        (IPHONE + "Version/17.5 Mobile/15E148 Safari/604.1", "Safari"),
        (IPHONE + "CriOS/126.0 Mobile/15E148 Safari/604.1", "Chrome"),
        (IPHONE + "FxiOS/127.0 Mobile/15E148 Safari/605.1.15", "Firefox"),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.32.3", "Python"),
        ("okhttp/4.12.0", "okhttp"),
        ("Dalvik/2.1.0 (Linux; U; Android 14)", "Android app"),
        ("MyChat/3 CFNetwork/1494.0.7 Darwin/23.4.0", "iOS app"),
        ("Go-http-client/2.0", "Go"),
        ("a customer's own bot 1.0", "Other"),
        ("", ""),
        (None, ""),
    ],
)
def test_user_agent_family(header, family):
    assert refusals.user_agent_family(header) == family


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        (" 203.0.113.77 ", "203.0.113.0/24"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::/48"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),  # IPv4 on a dual-stack socket
        ("::ffff:cb00:714d", "203.0.113.0/24"),  # the same, written in hex
        ("fe80::1%eth0", "fe80::/48"),
        ("[2001:db8::1]", "2001:db8::/48"),
        ("::1", "::/48"),
        ("not an address", ""),
        ("203.0.113.77:5000", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_network_of(address, network):
    assert refusals.network_of(address) == network


def test_a_long_kid_or_iss_is_shortened_to_printable_text():
    kid = "k" * 500
    assert refusals.shorten(kid, 64) == "k" * 63 + "…"
    assert len(refusals.shorten("i" * 101, 100)) == 100
    assert refusals.shorten("i" * 100, 100) == "i" * 100
    # Control, format (a right-to-left override) and unpaired surrogate characters.
    assert refusals.shorten("a\nb\u202ec\ud800d\x00", 64) == "a?b?c?d?"
    assert refusals.shorten(12345, 64) == "" and refusals.shorten(None, 64) == ""


@pytest.mark.parametrize(
    "name",
    [
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",  # an RFC 7638 thumbprint
        "0a7c3f1e9b2d4c6e8f0a1b3c5d7e9f1a2b3c4d5e",  # Google's kids are 40 hex digits
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI",
        "site-2026-01.primary",
    ],
)
def test_names_that_are_names_are_kept(name):
    assert refusals.shorten(name, 100) == name


@pytest.mark.parametrize(
    "value",
    [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "eyJzdWIiOiJ1LTEifQ",  # a payload alone
        "Bearer eyJhbGciOiJIUzI1NiJ9",
        "x" * 40 + "eyJhbGciOiJIUzI1",  # a token that starts where the kid is cut
        "AAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBB.CCCC",  # a JWS whatever its header
    ],
)
def test_a_name_that_looks_like_a_token_is_hidden(value):
    assert refusals.shorten(value, 64) == refusals.HIDDEN


def test_a_path_keeps_its_shape_without_a_token_in_it():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl"
    assert refusals.shorten_path(f"/chat/api/{token}/send") == "/chat/api/[token hidden]/send"
    assert refusals.shorten_path("/chat/api/" + "a" * 9000) == "/chat/api/" + "a" * 189 + "…"
    long_run = "/" + "A" * 100_000 + "." + "B" * 20  # linear, and cut long before
    assert len(refusals.shorten_path(long_run)) == refusals.PATH_LIMIT


def test_attribution_on_a_path_several_integrations_serve(clock):
    long_issuer = "https://accounts.example/" + "t" * 150  # issuers may be 255 long
    Integration.objects.add("ios", issuer="https://ios.example", paths=["/chat/api/"])
    Integration.objects.add("brand-b", issuer=long_issuer, paths=["/chat/api/"])
    snapshot = keyring.get_snapshot()
    names = snapshot.serving(WHOAMI)
    assert set(names) == {"default", "ios", "brand-b"}

    def under(iss):
        return refusals.counted_under(snapshot.integrations, names, iss)

    assert under("https://ios.example") == "ios"
    assert under(long_issuer) == "brand-b"  # as the token names it, not as it is shown
    assert under(None) == "default"  # default alone has no issuer: it takes the rest
    assert under(["https://ios.example"]) == "default"
    assert refusals.counted_under(None, names, "https://ios.example") == names[0]
    assert refusals.counted_under(snapshot.integrations, ("ios",), "x") == "ios"


# -- kept per thread, written by the flush ----------------------------------------------


def test_a_flush_writes_each_sample_once(clock):
    usage.record_failure(failure(1000.0))
    usage.record_failure(failure(1001.0))
    assert usage.pending()
    assert usage.flush_usage() is True
    assert usage.flush_usage() is True
    assert kept() == [1000.0, 1001.0]
    usage.record_failure(failure(1002.0))
    usage.flush_usage()
    assert kept() == [1000.0, 1001.0, 1002.0]
    row = FailureSample.objects.get(at=datetime.fromtimestamp(1002.0, tz=UTC))
    assert (row.kid, row.code, row.channel) == ("k1002.0", "expired", "http")
    assert (row.path, row.user_agent, row.network) == (WHOAMI, "curl", "192.0.2.0/24")
    assert not usage.pending()


def test_the_table_keeps_the_newest_per_integration_across_flushes(clock):
    with chat_settings(FAILURE_SAMPLES=5):
        for n in range(12):
            usage.record_failure(failure(1000.0 + n))
            usage.record_failure(failure(2000.0 + n, "ios"))
            if n % 4 == 3:
                usage.flush_usage()
        usage.flush_usage()
        assert kept() == [1007.0, 1008.0, 1009.0, 1010.0, 1011.0]
        assert kept("ios") == [2007.0, 2008.0, 2009.0, 2010.0, 2011.0]
        # Written late by another worker, an older refusal does not push out a newer one.
        usage.record_failure(failure(500.0))
        usage.flush_usage()
        assert kept() == [1007.0, 1008.0, 1009.0, 1010.0, 1011.0]


def test_memory_is_bounded_per_thread_and_integration(clock):
    with chat_settings(FAILURE_SAMPLES=7):
        for n in range(5000):
            usage.record_failure(failure(float(n), ("default", "ios", "web")[n % 3]))
        held = usage._tally().failures
        assert [len(held[name]) for name in ("default", "ios", "web")] == [7, 7, 7]
        usage.flush_usage()
    assert FailureSample.objects.count() == 21
    assert kept("web")[-1] == 4997.0


def test_threads_keep_their_own_and_the_table_the_newest(clock):
    """Only the owning thread appends; the flush copies. Every sample is written once,
    also when a flush runs between a thread numbering a sample and keeping it."""
    threads, each = 4, 150
    start = threading.Barrier(threads + 1)

    def refuse(t: int) -> None:
        start.wait()
        for n in range(each):
            usage.record_failure(failure(10_000.0 * (t + 1) + n, ("default", "ios")[n % 2]))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # as many thread switches as the interpreter allows
    try:
        with chat_settings(FAILURE_SAMPLES=1000):
            workers = [threading.Thread(target=refuse, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            start.wait()
            while any(w.is_alive() for w in workers):
                usage.flush_usage()
            for worker in workers:
                worker.join(timeout=60)
            assert usage.flush_usage() is True
    finally:
        sys.setswitchinterval(switch)
    times = kept() + kept("ios")
    assert len(times) == len(set(times)) == threads * each
    assert not usage.pending()


def test_a_flush_between_numbering_and_keeping_a_sample_loses_nothing(clock, monkeypatch):
    """The window a thread switch can open: a flush lands while a sample is being kept."""

    class FlushFirst(deque):
        def append(self, item):
            usage.flush_usage()  # another thread's flush, right here
            super().append(item)

    monkeypatch.setattr(usage, "deque", FlushFirst)
    worker = threading.Thread(target=usage.record_failure, args=(failure(1.0, "race"),))
    worker.start()
    worker.join(timeout=60)
    assert usage.pending()
    assert usage.flush_usage() is True
    assert kept("race") == [1.0]


def test_threads_flood_the_table_still_keeps_the_newest(clock):
    def refuse(t: int) -> None:
        for n in range(300):
            usage.record_failure(failure(1000.0 * t + n))

    with chat_settings(FAILURE_SAMPLES=10):
        workers = [threading.Thread(target=refuse, args=(t,)) for t in (1, 2, 3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        usage.flush_usage()
    assert kept() == [3290.0 + n for n in range(10)]


def test_failure_samples_zero_keeps_none(clock, monkeypatch):
    with chat_settings(FAILURE_SAMPLES=0):
        usage.record_failure(failure(1000.0))
        assert not usage.pending()
        usage.flush_usage()
        assert FailureSample.objects.count() == 0
    # Samples held when the setting turns 0 without a reset are not written either.
    usage.record_failure(failure(1001.0))
    monkeypatch.setattr(app_settings, "FAILURE_SAMPLES", 0)
    written: list[usage.Failure] = []
    monkeypatch.setattr(usage, "_write_failures", written.extend)
    assert usage.flush_usage() is True
    assert written == [] and not usage.pending()


def test_the_hourly_prune_trims_to_a_lowered_setting(clock, monkeypatch):
    for n in range(8):
        usage.record_failure(failure(1000.0 + n))
        usage.record_failure(failure(2000.0 + n, "ios"))
    usage.flush_usage()
    assert FailureSample.objects.count() == 16
    with chat_settings(FAILURE_SAMPLES=3):
        monkeypatch.setattr(usage._State, "pruned_at", float("-inf"))  # the prune is due
        assert usage.flush_usage() is True
        assert kept() == [1005.0, 1006.0, 1007.0] and kept("ios") == [2005.0, 2006.0, 2007.0]
    with chat_settings(FAILURE_SAMPLES=0):
        monkeypatch.setattr(usage._State, "pruned_at", float("-inf"))
        usage.flush_usage()
    assert FailureSample.objects.count() == 0


def test_recent_reads_the_newest_of_each_integration(clock, django_assert_num_queries):
    for n in range(6):
        for name in ("default", "ios", "web"):
            FailureSample.objects.create(
                integration=name, at=datetime.fromtimestamp(1000 + n, tz=UTC), code="expired"
            )
    with django_assert_num_queries(1):
        rows = refusals.recent(["default", "ios"], limit=4)
    assert len(rows) == 8 and {r.integration for r in rows} == {"default", "ios"}
    times = [r.at.timestamp() for r in rows]
    assert times == sorted(times, reverse=True)
    assert min(r.at.timestamp() for r in rows) == 1002
    assert len(refusals.recent()) == 18
    assert refusals.recent(limit=0) == []


# -- end to end: refused requests ------------------------------------------------------------


def forged(secret, clock, iss: str) -> str:
    """A token naming the secret's kid, signed with another secret."""
    claims = {"sub": "u-1", "iss": iss, "exp": int(clock.t) + 60}
    return sign("wrong-secret-" + "x" * 32, claims, kid=secret[0].kid)


def assert_row(row: FailureSample, **expected: str) -> None:
    assert {name: getattr(row, name) for name in expected} == expected


def test_a_refused_http_request_leaves_its_sample(secret, clock):
    token = forged(secret, clock, "https://shop.example")
    response = Client().get(
        WHOAMI, headers={**bearer(token), "User-Agent": FIREFOX}, REMOTE_ADDR="203.0.113.77"
    )
    assert response.status_code == 401
    row = only_row()
    assert row.at == datetime.fromtimestamp(clock.t, tz=UTC)
    assert_row(
        row, integration="default", code="invalid_signature", kid=secret[0].kid,
        iss="https://shop.example", channel="http", path=WHOAMI, user_agent="Firefox",
        network="203.0.113.0/24",
    )  # fmt: skip


async def test_a_refused_async_request_leaves_its_sample(secret, clock):
    response = await AsyncClient().get(WHOAMI, headers={"User-Agent": "curl/8.5.0"})
    assert response.status_code == 401
    row = await database_sync_to_async(only_row)()
    assert_row(row, code="missing_token", kid="", iss="", user_agent="curl", network="127.0.0.0/24")


def test_an_ipv6_client_is_kept_as_its_48(secret, clock):
    response = Client().get(WHOAMI, headers=bearer("not-a-jwt"), REMOTE_ADDR="2001:db8:abcd:12::7")
    assert response.status_code == 401
    assert_row(only_row(), code="malformed", kid="", user_agent="", network="2001:db8:abcd::/48")


def test_a_refusal_counts_under_the_integration_its_iss_picks(secret, clock):
    Integration.objects.add("ios", issuer="https://ios.example", paths=["/chat/api/"])
    key, value = Key.objects.generate_secret("t", integration="ios")
    claims = {"sub": "u-1", "iss": "https://ios.example", "exp": int(clock.t) - 3600}
    expired = sign(value, claims, kid=key.kid)
    assert Client().get(WHOAMI, headers=bearer(expired)).status_code == 401
    assert_row(
        only_row(), integration="ios", code="expired", kid=key.kid, iss="https://ios.example"
    )


def with_client(app, address: str):
    """The app as an ASGI server would call it for a client at ``address``."""

    async def wrapped(scope, receive, send):
        return await app({**scope, "client": (address, 50000)}, receive, send)

    return wrapped


@pytest.mark.parametrize("via", ["subprotocol", "identify"])
async def test_a_refused_socket_leaves_its_sample(secret, clock, via):
    token = forged(secret, clock, "https://app.example")
    app = with_client(guarded(), "::ffff:198.51.100.23")
    comm = await open_socket(app, token, via=via, headers=[(b"user-agent", CHROME.encode())])
    await expect_close(comm, 4401, "invalid_signature")
    assert_row(
        await database_sync_to_async(only_row)(), integration="default",
        code="invalid_signature", kid=secret[0].kid, iss="https://app.example",
        channel="websocket", path=PATH, user_agent="Chrome", network="198.51.100.0/24",
    )  # fmt: skip


async def test_a_socket_refused_before_the_engine_leaves_its_sample(secret, clock):
    """A token in the URL, and no identify message in time: refused without verifying."""
    app = with_client(guarded(), "192.0.2.9")
    comm = await open_socket(app, None, path=PATH + "?token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
    await expect_close(comm, 4401, "malformed")
    row = await database_sync_to_async(only_row)()
    assert_row(row, code="malformed", kid="", path=PATH, network="192.0.2.0/24")
    await database_sync_to_async(FailureSample.objects.all().delete)()
    with chat_settings(WEBSOCKET_IDENTIFY_TIMEOUT=0.2):
        comm = await open_socket(app)
        await expect_close(comm, 4401, "missing_token")
        row = await database_sync_to_async(only_row)()  # before the settings reset
    assert_row(row, code="missing_token", channel="websocket", user_agent="")


@pytest.mark.parametrize("ending", ["token_revoked", "expired"])
async def test_an_open_socket_cut_later_leaves_its_sample_and_is_not_counted_twice(
    secret, clock, ending
):
    """A socket ended after it identified (the user revoked, its token expired) leaves a
    sample; it was counted once, as signed, when it identified."""
    key, value = secret
    token = sign(value, {"sub": "u-1", "iss": "https://app.example", "exp": int(clock.t) + 60},
                 kid=key.kid)  # fmt: skip
    app = with_client(guarded(), "203.0.113.5")
    with chat_settings(KEY_CACHE_SECONDS=0.2):  # the watcher ticks every 0.1 s
        comm = await open_socket(app, token, headers=[(b"user-agent", CHROME.encode())])
        await expect_identified(comm, "u-1")
        if ending == "token_revoked":
            await database_sync_to_async(RevokedUser.objects.revoke)("u-1")
        else:
            clock.advance(60 + app_settings.LEEWAY + 1)
        await expect_close(comm, 4401, ending, timeout=3)
        row = await database_sync_to_async(only_row)()
    assert_row(
        row, integration="default", code=ending, kid=key.kid, iss="https://app.example",
        channel="websocket", path=PATH, user_agent="Chrome", network="203.0.113.0/24",
    )  # fmt: skip
    counted = await database_sync_to_async(
        lambda: sorted(TrafficStat.objects.values_list("outcome", "count"))
    )()
    assert counted == [("signed", 1)]


# -- the CLI: the same rows ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_cli_prints_the_kept_refusals_newest_first(clock):
    Integration.objects.add("ios", actor="t")
    for n, (name, code) in enumerate([("default", "expired"), ("ios", "unknown_issuer"),
                                      ("default", "invalid_signature")]):  # fmt: skip
        FailureSample.objects.create(
            integration=name, at=datetime.fromtimestamp(1_800_000_000 + n, tz=UTC), code=code,
            kid="k-é", iss="https://shop.example", channel="websocket", path="/ws/chat/",
            user_agent="Safari", network="2001:db8:abcd::/48",
        )  # fmt: skip
    done = cli("failures")
    assert done.code == 0 and done.out.isascii()
    listed = done.json["failures"]
    assert [(r["integration"], r["code"]) for r in listed] == [
        ("default", "invalid_signature"), ("ios", "unknown_issuer"), ("default", "expired")
    ]  # fmt: skip
    assert listed[0] == {
        "integration": "default", "at": "2027-01-15T08:00:02+00:00", "code": "invalid_signature",
        "explanation": ERROR_CODES["invalid_signature"], "kid": "k-é",
        "iss": "https://shop.example", "channel": "websocket", "path": "/ws/chat/",
        "user_agent": "Safari", "network": "2001:db8:abcd::/48",
    }  # fmt: skip
    assert [r["code"] for r in cli("failures", "--integration", "ios").json["failures"]] == [
        "unknown_issuer"
    ]


@pytest.mark.django_db
def test_the_cli_refuses_an_unknown_integration(clock):
    cli("failures", "--integration", "nope").assert_bad_input("no integration named 'nope'")
    assert cli("failures").json == {"failures": []}
