"""chat_security.websocket: SPEC §10 through Channels' WebsocketCommunicator.

Every test drives the middleware in front of a tiny echo consumer
(tests/ws_helpers.py). Database work runs in ``database_sync_to_async``, as
it would under a real ASGI server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db.models import F
from django.db.utils import OperationalError

from chat_security import keyring, propagation, tokens, websocket
from chat_security.exceptions import ERROR_CODES, KeyStoreUnavailable
from chat_security.models import Integration, Key, RevokedUser, SecurityConfig
from chat_security.session import SUBJECT_SESSION_KEY
from tests import chat_helpers
from tests.chat_helpers import chat_settings, security_off, sign
from tests.tokencraft import hs256
from tests.ws_helpers import (
    PATH,
    expect_close,
    expect_identified,
    finish,
    guarded,
    guarded_with_session,
    open_socket,
)

pytestmark = pytest.mark.django_db(transaction=True)
secret, token_for = chat_helpers.secret, chat_helpers.token_for

TRANSPORTS = ("subprotocol", "identify")
FAST = {"KEY_CACHE_SECONDS": 0.2}  # the watcher ticks every 0.1 s


def in_db(fn, *args, **kwargs):
    return database_sync_to_async(fn)(*args, **kwargs)


# -- one refusal per §4 code, by both transports -------------------------------------
# Each case prepares the store (in the database thread) and returns the token.


def _now(clock) -> int:
    return int(clock.t)


def _valid(s, c, sub="u-1", **claims) -> str:
    key, value = s
    payload = {"sub": sub, "iat": _now(c), "exp": _now(c) + 3600, **claims}
    return sign(value, payload, kid=key.kid)


def _key_retired(s, c):
    token = _valid(s, c)
    Key.objects.rotate_secret(grace=0)
    return token


def _not_configured(s, c):
    Key.objects.all().delete()
    return sign("x" * 32, {"sub": "u-1", "exp": _now(c) + 60})


def _revoked(s, c):
    token = _valid(s, c)
    c.advance(5)
    RevokedUser.objects.revoke("u-1")
    return token


def _unknown_issuer(s, c):
    """A socket that takes the tokens of two integrations; the token's iss names neither."""
    Integration.objects.add("ios", issuer="https://ios.example")
    Integration.objects.add("android", issuer="https://android.example")
    Key.objects.generate_secret(integration="ios")  # a key here: not security_not_configured
    return _valid(s, c, iss="https://web.example")


CASES = {
    "missing_token": lambda s, c: "",
    "token_too_large": lambda s, c: "a" * 8193,
    "malformed": lambda s, c: "not-a-jwt",
    "algorithm_not_allowed": lambda s, c: hs256(
        s[1], {"sub": "u-1", "exp": _now(c) + 60}, header={"alg": "none", "typ": "JWT"}
    ),
    "unknown_key": lambda s, c: sign(s[1], {"sub": "u-1", "exp": _now(c) + 60}, kid="no-such"),
    "key_retired": _key_retired,
    "security_not_configured": _not_configured,
    "invalid_signature": lambda s, c: sign(
        "wrong-" + "x" * 32, {"sub": "u-1", "exp": _now(c) + 60}
    ),
    "missing_claim": lambda s, c: sign(s[1], {"sub": "u-1"}, kid=s[0].kid),
    "expired": lambda s, c: _valid(s, c, exp=_now(c) - 3600, iat=_now(c) - 7200),
    "not_yet_valid": lambda s, c: _valid(s, c, nbf=_now(c) + 600),
    "lifetime_too_long": lambda s, c: _valid(s, c, exp=_now(c) + 400 * 24 * 3600),
    "invalid_claim": lambda s, c: _valid(s, c, sub=12345),
    "subject_changed": _valid,  # the session is bound to someone else (below)
    "token_revoked": _revoked,
    "payload_decryption_failed": lambda s, c: _valid(s, c, user_payload="not-a-jwe"),
    "unknown_issuer": _unknown_issuer,
}


def test_every_error_code_has_a_case():
    assert set(CASES) == set(ERROR_CODES)


def _session(bound: str | None = None) -> list[tuple[bytes, bytes]]:
    """An existing Django session (optionally bound to a chat subject) as a cookie header."""
    store = SessionStore()
    store["seen"] = True
    if bound is not None:
        store[SUBJECT_SESSION_KEY] = bound
    store.save()
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={store.session_key}".encode())]


@pytest.mark.parametrize("via", TRANSPORTS)
@pytest.mark.parametrize("code", sorted(CASES))
async def test_every_code_closes_4401_by_both_transports(code, via, secret, clock):
    token = await in_db(CASES[code], secret, clock)
    app, headers = guarded(), None
    if code == "subject_changed":
        app, headers = guarded_with_session(), await in_db(_session, "someone-else")
    if code == "unknown_issuer":
        app = guarded(integrations=["ios", "android"])
    overrides = {}
    if code == "missing_token" and via == "subprotocol":
        token, overrides = None, {"WEBSOCKET_IDENTIFY_TIMEOUT": 0.2}  # offered no token at all
    with chat_settings(**overrides):
        comm = await open_socket(app, token, via=via, headers=headers)
        error = await expect_close(comm, 4401, code)
    assert not token or token[-20:] not in error["detail"]
    await finish(comm)


# -- the URL is never a place for a token ---------------------------------------------


@pytest.mark.parametrize(
    "query", ["token=abc", "access_token=abc", "jwt=abc", "a=1&JWT=abc", "a=1;token=", "token"]
)
async def test_query_string_token_refused(query, secret, token_for):
    comm = WebsocketCommunicator(
        guarded(), f"{PATH}?{query}", subprotocols=["chat-security", token_for("u-1")]
    )
    assert await comm.connect() == (True, "chat-security")  # accepted, then closed
    error = await expect_close(comm, 4401, "malformed")
    assert error["detail"] == websocket.QUERY_DETAIL
    await finish(comm)


async def test_query_string_refused_with_security_off(secret):
    await in_db(security_off)
    comm = WebsocketCommunicator(guarded(), f"{PATH}?access_token=x")
    assert await comm.connect() == (True, None)
    await expect_close(comm, 4401, "malformed")


async def test_unrelated_query_parameters_pass(secret, token_for):
    comm = WebsocketCommunicator(
        guarded(), f"{PATH}?room=7&tokens=2", subprotocols=["chat-security", token_for("u-1")]
    )
    await comm.connect()
    await expect_identified(comm, "u-1")
    await finish(comm)


# -- identified --------------------------------------------------------------------------


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_identified_then_messages_reach_the_app(via, secret, token_for, clock):
    token = token_for("u-42", email="u42@example.com")
    comm = await open_socket(guarded(), token, via=via)
    identified = await expect_identified(comm, "u-42")
    assert identified["expires_at"] == _now(clock) + 3600
    assert identified["refresh_at"] == _now(clock) + 2700  # 75 % between iat and exp
    await comm.send_json_to({"type": "message", "text": "hi"})
    assert await comm.receive_json_from() == {
        "echo": {"type": "message", "text": "hi"},
        "user": "u-42",
        "anonymous": False,
    }
    await comm.send_json_to({"type": "probe"})
    probe = await comm.receive_json_from()
    # The application never sees the token: not in the subprotocols, not in the headers.
    assert probe["subprotocols"] == ["chat-security"]
    assert probe["protocol_headers"] in ([], ["chat-security"])
    assert probe["claims"]["email"] == "u42@example.com"
    await finish(comm)


async def test_subprotocol_header_scrubbed(secret, token_for):
    token = token_for("u-1")
    headers = [(b"sec-websocket-protocol", f"chat-security, {token}".encode())]
    comm = await open_socket(guarded(), token, headers=headers)
    await expect_identified(comm, "u-1")
    await comm.send_json_to({"type": "probe"})
    probe = await comm.receive_json_from()
    assert probe["protocol_headers"] == ["chat-security"]
    await finish(comm)


async def test_refresh_at_from_verification_time_without_iat(secret, clock):
    key, value = secret
    token = sign(value, {"sub": "u-1", "exp": _now(clock) + 400}, kid=key.kid)
    comm = await open_socket(guarded(), token)
    identified = await expect_identified(comm, "u-1")
    assert identified["refresh_at"] == _now(clock) + 300
    await finish(comm)


async def test_messages_before_identify_never_reach_the_app(secret, token_for):
    comm = await open_socket(guarded())
    await comm.send_json_to({"type": "message", "text": "too early"})
    for _ in range(50):  # a flood: nothing buffered, nothing delivered
        await comm.send_json_to({"type": "message", "text": "flood"})
    await expect_close(comm, 4400, "identify_expected")
    assert await comm.receive_nothing(0.2)
    await finish(comm)


async def test_identify_timeout_closes_missing_token(secret):
    with chat_settings(WEBSOCKET_IDENTIFY_TIMEOUT=0.2):
        comm = await open_socket(guarded())
        started = time.monotonic()
        error = await expect_close(comm, 4401, "missing_token")
    assert 0.15 < time.monotonic() - started < 2
    assert "identify" in error["detail"]


async def test_identify_timeout_after_security_was_switched_off_is_anonymous(secret):
    with chat_settings(WEBSOCKET_IDENTIFY_TIMEOUT=0.3):
        comm = await open_socket(guarded())
        await in_db(security_off)
        await expect_identified(comm, None)
    await finish(comm)


def test_identify_timeout_setting():
    assert websocket.identify_timeout() == 10
    with chat_settings(WEBSOCKET_IDENTIFY_TIMEOUT=timedelta(seconds=3)):
        assert websocket.identify_timeout() == 3
    with chat_settings(WEBSOCKET_IDENTIFY_TIMEOUT="nonsense"):
        assert websocket.identify_timeout() == 10


# -- frames that break the protocol ----------------------------------------------------

BAD_FRAMES = {
    "binary_frame": {"bytes": b'{"type": "message"}'},
    "not_json_object": {"text": "hello"},
    "json_array": {"text": '[{"type": "identify"}]'},
    "json_string": {"text": '"identify"'},
    "deeply_nested": {"text": "[" * 5000 + "]" * 5000},
    "frame_too_large": {"text": json.dumps({"type": "message", "text": "x" * 70_000})},
    "multibyte_too_large": {"text": json.dumps({"t": "é" * 33_000}, ensure_ascii=False)},
    "identify_without_token": {"text": '{"type": "identify"}'},
    "identify_with_number": {"text": '{"type": "identify", "token": 12}'},
}
REASONS = {
    "json_array": "not_json_object",
    "json_string": "not_json_object",
    "deeply_nested": "not_json_object",
    "multibyte_too_large": "frame_too_large",
    "identify_with_number": "identify_without_token",
}


@pytest.mark.parametrize("identified", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_bad_frames_close_4400(kind, identified, secret, token_for):
    comm = await open_socket(guarded(), token_for("u-1") if identified else None)
    if identified:
        await expect_identified(comm, "u-1")
    await comm.send_input({"type": "websocket.receive", **BAD_FRAMES[kind]})
    await expect_close(comm, 4400, REASONS.get(kind, kind))
    await comm.send_json_to({"type": "message", "text": "after the close"})
    assert await comm.receive_nothing(0.2)  # dropped: the socket is closing
    await finish(comm)


async def test_frame_limit_is_configurable(secret, token_for):
    comm = await open_socket(guarded(max_frame_bytes=100), token_for("u-1"))
    await expect_identified(comm, "u-1")
    await comm.send_json_to({"type": "message", "text": "x" * 50})
    assert (await comm.receive_json_from())["user"] == "u-1"
    await comm.send_json_to({"type": "message", "text": "x" * 100})
    await expect_close(comm, 4400, "frame_too_large")
    await finish(comm)


# -- renewal in band ------------------------------------------------------------------------


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_renewal_same_user(via, secret, token_for, clock):
    comm = await open_socket(guarded(), token_for("u-1"), via=via)
    await expect_identified(comm, "u-1")
    clock.advance(600)
    await comm.send_json_to({"type": "identify", "token": token_for("u-1", plan="gold")})
    renewed = await expect_identified(comm, "u-1")
    assert renewed["expires_at"] == _now(clock) + 3600
    assert renewed["refresh_at"] == _now(clock) + 2700
    await comm.send_json_to({"type": "probe"})
    assert (await comm.receive_json_from())["claims"]["plan"] == "gold"  # updated in place
    await comm.send_json_to({"type": "message", "text": "still here"})
    assert (await comm.receive_json_from())["user"] == "u-1"
    await finish(comm)


async def test_renewal_with_another_user_is_subject_changed(secret, token_for):
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_identified(comm, "u-1")
    await comm.send_json_to({"type": "identify", "token": token_for("u-2")})
    await expect_close(comm, 4401, "subject_changed")
    await finish(comm)


@pytest.mark.parametrize("code", ["expired", "invalid_signature", "malformed", "missing_token"])
async def test_failed_renewal_closes_with_its_code(code, secret, token_for, clock):
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_identified(comm, "u-1")
    bad = await in_db(CASES[code], secret, clock)
    await comm.send_json_to({"type": "identify", "token": bad})
    await expect_close(comm, 4401, code)
    await finish(comm)


# -- expiry under a controlled clock -----------------------------------------------------


async def test_token_expiring_then_expired(secret, clock):
    key, value = secret
    now = _now(clock)
    token = sign(value, {"sub": "u-1", "iat": now, "exp": now + 100}, kid=key.kid)
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token)
        identified = await expect_identified(comm, "u-1")
        assert (identified["expires_at"], identified["refresh_at"]) == (now + 100, now + 75)
        assert await comm.receive_nothing(0.3)
        clock.advance(76)
        assert await comm.receive_json_from(2) == {
            "type": "token_expiring",
            "expires_at": now + 100,
        }
        assert await comm.receive_nothing(0.4)  # once per token
        clock.advance(24 + 30)  # exp + LEEWAY: still inside the leeway
        assert await comm.receive_nothing(0.3)
        clock.advance(2)
        await expect_close(comm, 4401, "expired", timeout=2)
    await finish(comm)


async def test_token_expiring_at_once_when_already_due(secret, clock):
    key, value = secret
    now = _now(clock)
    token = sign(value, {"sub": "u-1", "iat": now - 80, "exp": now + 20}, kid=key.kid)
    comm = await open_socket(guarded(), token, via="identify")
    await expect_identified(comm, "u-1")
    assert await comm.receive_json_from() == {"type": "token_expiring", "expires_at": now + 20}
    await finish(comm)


async def test_renewal_rearms_token_expiring(secret, clock):
    key, value = secret

    def short(iat: int) -> str:
        return sign(value, {"sub": "u-1", "iat": iat, "exp": iat + 100}, kid=key.kid)

    with chat_settings(**FAST):
        comm = await open_socket(guarded(), short(_now(clock)))
        await expect_identified(comm, "u-1")
        clock.advance(80)
        assert (await comm.receive_json_from(2))["type"] == "token_expiring"
        await comm.send_json_to({"type": "identify", "token": short(_now(clock))})
        await expect_identified(comm, "u-1")
        clock.advance(60)  # the first token's exp + LEEWAY passes: the new one counts
        assert await comm.receive_nothing(0.4)
        clock.advance(20)
        assert (await comm.receive_json_from(2))["type"] == "token_expiring"
    await finish(comm)


async def test_same_token_again_does_not_repeat_token_expiring(secret, clock):
    key, value = secret
    now = _now(clock)
    token = sign(value, {"sub": "u-1", "iat": now - 80, "exp": now + 20}, kid=key.kid)
    comm = await open_socket(guarded(), token)
    await expect_identified(comm, "u-1")
    assert (await comm.receive_json_from())["type"] == "token_expiring"
    await comm.send_json_to({"type": "identify", "token": token})
    await expect_identified(comm, "u-1")
    assert await comm.receive_nothing(0.3)
    await finish(comm)


async def test_no_exp_means_no_times(secret, clock):
    key, value = secret
    token = sign(value, {"sub": "u-1", "iat": _now(clock)}, kid=key.kid)
    with chat_settings(REQUIRE_EXP=False, **FAST):
        comm = await open_socket(guarded(), token)
        identified = await expect_identified(comm, "u-1")
        assert identified["expires_at"] is None and identified["refresh_at"] is None
        clock.advance(10 * 24 * 3600)
        assert await comm.receive_nothing(0.3)
    await finish(comm)


# -- security off -----------------------------------------------------------------------------


def _cookie(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"other=1; chat_anonymous_id={value}".encode())]


@pytest.mark.parametrize(
    ("enabled", "cookie", "expected"),
    [
        (True, "anon-" + "A" * 22, "anon-" + "A" * 22),
        (True, "not-an-anonymous-id", None),
        (False, "anon-" + "A" * 22, None),
    ],
)
async def test_security_off_is_anonymous_at_once(enabled, cookie, expected, secret):
    await in_db(security_off)
    with chat_settings(ANONYMOUS_IDS=enabled):
        comm = await open_socket(guarded(), headers=_cookie(cookie))
        identified = await expect_identified(comm, None)
        assert identified["expires_at"] is None and identified["refresh_at"] is None
        await comm.send_json_to({"type": "probe"})
        assert (await comm.receive_json_from())["anonymous_id"] == expected
        await comm.send_json_to({"type": "message", "text": "hi"})
        assert (await comm.receive_json_from())["anonymous"] is True
    await finish(comm)


async def test_security_off_identify_makes_it_verified_once(secret, token_for):
    await in_db(security_off)
    comm = await open_socket(guarded())
    await expect_identified(comm, None)
    await comm.send_json_to({"type": "identify", "token": token_for("u-7")})
    await expect_identified(comm, "u-7")
    await comm.send_json_to({"type": "message", "text": "hi"})
    assert (await comm.receive_json_from())["user"] == "u-7"
    await comm.send_json_to({"type": "identify", "token": token_for("u-8")})
    await expect_close(comm, 4401, "subject_changed")
    await finish(comm)


@pytest.mark.parametrize("via", TRANSPORTS)
@pytest.mark.parametrize("code", ["malformed", "expired", "invalid_signature", "token_too_large"])
async def test_security_off_bad_token_is_refused(code, via, secret, clock):
    await in_db(security_off)
    token = await in_db(CASES[code], secret, clock)
    comm = await open_socket(guarded(), token, via=via)
    if via == "identify":
        await expect_identified(comm, None)  # anonymous first; the bad token is not a downgrade
    await expect_close(comm, 4401, code)
    await finish(comm)


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_security_on_without_keys_refuses_even_without_token(via, db):
    comm = await open_socket(guarded(), None, via=via)
    await expect_close(comm, 4401, "security_not_configured")


# -- the key store cannot be read ---------------------------------------------------------


@pytest.fixture
def broken_database(monkeypatch):
    """Every query fails, as with the database down (the snapshot must be re-read)."""
    from django.db.backends import utils

    def down(*args, **kwargs):
        raise OperationalError("the database is down")

    def breaker():
        keyring.reset()
        monkeypatch.setattr(utils.CursorWrapper, "execute", down)

    return breaker


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_database_down_closes_4503(via, secret, token_for, broken_database):
    token = token_for("u-1")
    broken_database()
    comm = await open_socket(guarded(), token, via=via)
    error = await expect_close(comm, 4503, "unavailable")
    assert token not in json.dumps(error)


async def test_key_store_unavailable_closes_4503(secret, token_for, monkeypatch):
    def unavailable():
        raise KeyStoreUnavailable("down")

    monkeypatch.setattr(keyring, "get_snapshot", unavailable)
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_close(comm, 4503, "unavailable")


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_a_key_encryption_keys_cannot_decrypt_closes_4503_naming_it(via, secret, token_for):
    """Issue 17, item 1: not "try again" but the key and the fix, as over HTTP."""
    token = token_for("u-1")
    with chat_settings(ENCRYPTION_KEYS=["a-later-encryption-key-0123456789-abcdefghij"]):
        comm = await open_socket(guarded(), token, via=via)
        error = await expect_close(comm, 4503, "unavailable")
    assert secret[0].kid in error["detail"] and "reencrypt" in error["detail"]
    assert "try again" not in error["detail"]


async def test_open_socket_closes_4503_when_the_database_goes_down(
    secret, token_for, broken_database
):
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(comm, "u-1")
        broken_database()
        await expect_close(comm, 4503, "unavailable", timeout=2)
    await finish(comm)


async def test_unexpected_error_fails_closed_without_traceback(secret, token_for, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(tokens, "verify_at", boom)
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_close(comm, 4503, "unavailable")


# -- live revocation ---------------------------------------------------------------------------


async def _closes_within_bound(comm, code: str, change) -> None:
    bound = FAST["KEY_CACHE_SECONDS"] + 1
    started = time.monotonic()
    await change()
    await expect_close(comm, 4401, code, timeout=bound + 1)
    assert time.monotonic() - started <= bound
    await finish(comm)


async def test_revoked_key_closes_open_sockets(secret, token_for):
    with chat_settings(**FAST):
        comms = [await open_socket(guarded(), token_for(f"u-{i}")) for i in range(3)]
        for i, comm in enumerate(comms):
            await expect_identified(comm, f"u-{i}")
        started = time.monotonic()
        await in_db(Key.objects.revoke, secret[0].kid)
        for comm in comms:
            await expect_close(comm, 4401, "key_retired", timeout=2)
        assert time.monotonic() - started <= FAST["KEY_CACHE_SECONDS"] + 1
        for comm in comms:
            await finish(comm)


@pytest.mark.parametrize("another_key", [False, True])
async def test_revoked_key_closes_a_socket_whose_token_names_no_kid(secret, clock, another_key):
    """Issue 16, item 7: SPEC §10 says key_retired, whatever the token's header holds.

    Without the connection's own key, the engine alone answers invalid_signature
    (another secret is usable) or security_not_configured (none is).
    """
    key, value = secret
    token = sign(value, {"sub": "u-1", "iat": int(clock.t), "exp": int(clock.t) + 3600})
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token)
        await expect_identified(comm, "u-1")
        if another_key:
            await in_db(Key.objects.rotate_secret, grace=3600)
        await _closes_within_bound(comm, "key_retired", lambda: in_db(Key.objects.revoke, key.kid))


async def test_a_socket_that_identifies_while_a_tick_reads_the_store_is_rechecked(
    secret, token_for, monkeypatch
):
    """Issue 16, item 2: the tick listed its connections before awaiting the store.

    A socket that identified during that await, against the snapshot of just
    before a revocation, was in no list, and later ticks saw no change: it
    stayed open on a revoked key. The tick's read of the store is made to
    open that socket and then revoke the key, once.
    """
    opened = []
    real_read = websocket.watcher._read_snapshot

    async def read_while_a_socket_identifies():
        if not opened:
            late = await open_socket(guarded(), token_for("late"))
            await expect_identified(late, "late")
            opened.append(late)
            await in_db(Key.objects.revoke, secret[0].kid)
        return await real_read()

    with chat_settings(**FAST):
        early = await open_socket(guarded(), token_for("early"))
        await expect_identified(early, "early")
        monkeypatch.setattr(websocket.watcher, "_read_snapshot", read_while_a_socket_identifies)
        await expect_close(early, 4401, "key_retired", timeout=2)
        assert opened
        await expect_close(opened[0], 4401, "key_retired", timeout=2)
    await finish(early)
    await finish(opened[0])


class _Socket:
    """What the watcher reads and calls on a connection; a real Connection stands behind none."""

    def __init__(self, token: str, kid: str) -> None:
        self.token, self.subject, self.closed = token, "u-1", False
        self.identity = type("Identity", (), {"kid": kid})()
        self.checked_against = keyring.get_snapshot()
        self.refused: list[str] = []
        self.integrations = ("default",)

    async def cut(self, error):
        self.refused.append(error.code)
        self.closed = True

    async def unavailable(self, log=True):
        self.refused.append("unavailable")
        self.closed = True

    async def on_tick(self, now):
        pass


async def test_a_socket_renewed_while_the_watcher_rechecks_is_checked_again(
    secret, token_for, clock, monkeypatch
):
    """Issue 16, item 2: a renewal during the recheck's thread hop skipped that socket for good.

    The recheck finds the old token refused but sees a new one and rightly
    leaves the socket alone; the watcher then took the new snapshot as seen
    by every socket, though the renewal was verified against the one before
    the revocation. Now the socket keeps the snapshot its renewal used, and
    the next tick checks it again.
    """
    socket = await in_db(_Socket, token_for("u-1"), secret[0].kid)
    renewed = await in_db(token_for, "u-1", iat=int(clock.t) + 1)
    # The client's renewal is verified just before the revocation commits...
    before = await in_db(keyring.get_snapshot)
    await in_db(tokens.verify, renewed)
    await in_db(Key.objects.revoke, secret[0].kid)
    real_recheck = websocket.watcher.recheck_tokens

    def recheck_during_a_renewal(entries):
        if socket.token != renewed:  # ...and adopted while the watcher's recheck runs
            socket.token, socket.checked_against = renewed, before
        return real_recheck(entries)

    monkeypatch.setattr(websocket.watcher, "recheck_tokens", recheck_during_a_renewal)
    watcher = websocket.watcher.Watcher(asyncio.get_running_loop())
    watcher.connections.add(socket)
    await watcher.tick()
    assert socket.refused == []  # the old token's verdict does not apply to the new one
    await watcher.tick()
    assert socket.refused == ["key_retired"]


async def test_revoke_user_closes_that_users_sockets_only(secret, token_for, clock):
    with chat_settings(**FAST):
        alice = await open_socket(guarded(), token_for("alice"))
        bob = await open_socket(guarded(), token_for("bob"))
        await expect_identified(alice, "alice")
        await expect_identified(bob, "bob")
        clock.advance(5)
        await _closes_within_bound(
            alice, "token_revoked", lambda: in_db(RevokedUser.objects.revoke, "alice")
        )
        await bob.send_json_to({"type": "message", "text": "still open"})
        assert (await bob.receive_json_from())["user"] == "bob"
        await finish(bob)


async def test_grace_period_end_closes(secret, token_for, clock):
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(comm, "u-1")
        await in_db(Key.objects.rotate_secret, grace=60)
        assert await comm.receive_nothing(0.4)  # in grace: still fine

        async def grace_ends():
            clock.advance(61)

        await _closes_within_bound(comm, "key_retired", grace_ends)


async def test_security_switched_on_closes_anonymous_sockets(secret, token_for):
    await in_db(security_off)
    with chat_settings(**FAST):
        anonymous = await open_socket(guarded())
        verified = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(anonymous, None)
        await expect_identified(verified, "u-1")
        await _closes_within_bound(
            anonymous, "missing_token", lambda: in_db(SecurityConfig.set_enabled, True)
        )
        assert await verified.receive_nothing(0.3)
        await finish(verified)


def _changed_elsewhere(**fields) -> None:
    """A write made by another process: no signal here, only the version moves (and the
    shared cache's change counter, as every writer announces its commit; a no-op with a
    cache local to the process)."""
    Integration.objects.filter(name="default").update(**fields)
    SecurityConfig.objects.filter(pk=1).update(version=F("version") + 1)
    propagation.announce()


async def test_change_made_by_another_process_is_seen_within_the_bound(secret, token_for):
    await in_db(security_off)
    with chat_settings(**FAST):
        comm = await open_socket(guarded())
        await expect_identified(comm, None)
        await _closes_within_bound(
            comm, "missing_token", lambda: in_db(_changed_elsewhere, enabled=True)
        )


async def test_no_verification_per_message(secret, token_for, monkeypatch):
    calls = []
    real_verify, real_verify_at = tokens.verify, tokens.verify_at

    def spy(*args, **kwargs):
        calls.append(kwargs.get("count_use", True))
        return real_verify(*args, **kwargs)

    def identify_spy(*args, **kwargs):  # the connection's own (it counts the use itself)
        calls.append(True)
        return real_verify_at(*args, **kwargs)

    monkeypatch.setattr(tokens, "verify", spy)
    monkeypatch.setattr(tokens, "verify_at", identify_spy)
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(comm, "u-1")
        for i in range(100):
            await comm.send_json_to({"type": "message", "n": i})
            assert (await comm.receive_json_from())["echo"]["n"] == i
        await asyncio.sleep(0.5)  # several watcher ticks: the snapshot did not change
    assert calls.count(True) == 1  # the identification
    assert calls.count(False) <= 1  # the watcher's first look at the connection
    await finish(comm)


async def test_watcher_closes_4503_when_only_one_token_cannot_be_checked(
    secret, token_for, monkeypatch
):
    real_verify = tokens.verify

    def verify(token, **kwargs):
        if kwargs.get("count_use", True) is False and token == broken_token:
            raise KeyStoreUnavailable("its service key cannot be decrypted")
        return real_verify(token, **kwargs)

    broken_token = token_for("u-1")
    monkeypatch.setattr(tokens, "verify", verify)
    with chat_settings(**FAST):
        broken = await open_socket(guarded(), broken_token)
        fine = await open_socket(guarded(), token_for("u-2"))
        await expect_identified(broken, "u-1")
        await expect_identified(fine, "u-2")
        await in_db(RevokedUser.objects.revoke, "someone-else")  # a change: both re-checked
        await expect_close(broken, 4503, "unavailable", timeout=2)
        assert await fine.receive_nothing(0.3)
    await finish(broken)
    await finish(fine)


async def test_watcher_stops_when_no_connection_remains(secret, token_for):
    with chat_settings(**FAST):
        comm = await open_socket(guarded(), token_for("u-1"))
        await expect_identified(comm, "u-1")
        loop = asyncio.get_running_loop()
        assert loop in websocket.watcher.Watcher.running
        await finish(comm)
        for _ in range(20):
            if loop not in websocket.watcher.Watcher.running:
                break
            await asyncio.sleep(0.05)
    assert loop not in websocket.watcher.Watcher.running


# -- where the engine runs -------------------------------------------------------------


def _thread_calls(monkeypatch) -> list[str]:
    """Names of the functions the middleware sends to the database thread."""
    calls: list[str] = []
    real = websocket.connection.database_sync_to_async

    def spy(fn):
        calls.append(getattr(fn, "__name__", repr(fn)))
        return real(fn)

    monkeypatch.setattr(websocket.connection, "database_sync_to_async", spy)
    return calls


async def test_identification_skips_the_thread_while_the_store_is_fresh(
    secret, token_for, monkeypatch
):
    await in_db(keyring.get_snapshot)  # fresh: no query due for KEY_CACHE_SECONDS
    calls = _thread_calls(monkeypatch)
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_identified(comm, "u-1")
    assert "check_sync" not in calls
    await finish(comm)


async def test_identification_uses_the_thread_when_a_query_is_due(secret, token_for, monkeypatch):
    keyring.reset()  # the next read queries the database
    calls = _thread_calls(monkeypatch)
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_identified(comm, "u-1")
    assert "check_sync" in calls
    await finish(comm)


async def test_in_loop_check_falls_back_to_the_thread(secret, token_for, monkeypatch):
    """Should a deadline pass after all, Django refuses the query in the loop: redo it."""
    keyring.reset()
    monkeypatch.setattr(keyring, "can_verify_in_loop", lambda token_length=0: True)
    calls = _thread_calls(monkeypatch)
    comm = await open_socket(guarded(), token_for("u-1"))
    await expect_identified(comm, "u-1")
    assert "check_sync" in calls
    await finish(comm)


async def test_large_tokens_are_verified_in_the_thread(secret, token_for, monkeypatch):
    await in_db(keyring.get_snapshot)
    calls = _thread_calls(monkeypatch)
    comm = await open_socket(guarded(), token_for("u-1", padding="p" * 1200))
    await expect_identified(comm, "u-1")
    assert "check_sync" in calls
    await finish(comm)


# -- the chat session ---------------------------------------------------------------------


async def test_existing_session_gets_bound_and_refuses_another_user(secret, token_for):
    headers = await in_db(_session)
    comm = await open_socket(guarded_with_session(), token_for("alice"), headers=headers)
    await expect_identified(comm, "alice")
    await finish(comm)
    key = headers[0][1].decode().split("=", 1)[1]
    assert (await in_db(lambda: SessionStore(key).get(SUBJECT_SESSION_KEY))) == "alice"
    again = await open_socket(guarded_with_session(), token_for("bob"), headers=headers)
    await expect_close(again, 4401, "subject_changed")


async def test_no_session_is_created_for_a_cookieless_socket(secret, token_for):
    from django.contrib.sessions.models import Session

    comm = await open_socket(guarded_with_session(), token_for("alice"))
    await expect_identified(comm, "alice")
    await finish(comm)
    assert await in_db(Session.objects.count) == 0


# -- the application's own answers ------------------------------------------------------


async def test_application_refusal_is_forwarded(secret, token_for):
    comm = await open_socket(guarded(), token_for("u-1"), path="/ws/refuse/")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4000}
    await finish(comm)


async def test_other_scope_types_pass_through():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    await websocket.ChatSecurityWebSocketMiddleware(inner)({"type": "http"}, None, None)
    assert seen == ["http"]


async def test_disconnect_before_identify(secret):
    comm = await open_socket(guarded())
    await comm.send_input({"type": "websocket.disconnect", "code": 1001})
    await comm.wait(1)


# -- nothing of the token in logs or close reasons ------------------------------------------


async def test_no_token_material_in_logs_or_reasons(secret, token_for, clock, caplog):
    caplog.set_level(logging.DEBUG)
    token = token_for("u-1")
    bad = _valid(secret, clock, nbf=_now(clock) + 600)
    for candidate in (token, bad, bad + "x"):
        comm = await open_socket(guarded(), candidate)
        first = await comm.receive_output()
        if json.loads(first["text"])["type"] == "identified":
            await comm.send_json_to({"type": "identify", "token": bad})
            await comm.receive_output()
        closing = await comm.receive_output()
        assert closing["reason"] in ERROR_CODES
        await finish(comm)
    for part in {*token.split("."), *bad.split(".")}:
        assert part not in caplog.text


# -- packaging: Channels is optional ----------------------------------------------------------

_NO_CHANNELS = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "channels" or name.startswith("channels."):
            raise ImportError("channels is not installed")
sys.meta_path.insert(0, Block())
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions", "django.contrib.messages", "chat_security"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SECRET_KEY="x" * 50, USE_TZ=True,
)
django.setup()
import chat_security
for info in pkgutil.walk_packages(chat_security.__path__, "chat_security."):
    if not info.name.startswith("chat_security.websocket") and ".migrations." not in info.name:
        importlib.import_module(info.name)
assert "chat_security.websocket" not in sys.modules
print("ok")
"""


def test_the_package_imports_and_works_without_channels():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _NO_CHANNELS], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
