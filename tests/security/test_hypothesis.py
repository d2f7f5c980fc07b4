"""Property-based fuzzing (hypothesis) of every entry point a token reaches.

The engine (``chat_security.verify``), the HTTP middleware (the demo chat API
through the test client), the WebSocket middleware (both transports, then
arbitrary frames) and the admin's token tester (``diagnose()`` and its view)
get arbitrary text and bytes and mutations of real tokens (tests/security/mutations.py).
Properties: the engine raises nothing but TokenError with a §4 code; HTTP is
200 for the untouched token and 401 JSON with a §4 code otherwise, never a
500; a socket closes with 4400 or 4401 only; the tester always renders. And a
mutation that changes a token's bytes is never accepted. A mutation that gives
back the same token (or, over HTTP and in the tester's form, the same token
after the whitespace the transport trims) is skipped and counted.

Profiles: ``ci`` (the default; bounded, derandomized so CI is reproducible)
and ``long`` (``HYPOTHESIS_PROFILE=long``, run by ``scripts/fuzz_long.sh``).
The key store is built once per test function, outside the examples; each test
asserts its tally at the end, so a strategy that stopped producing mutations
would fail rather than pass vacuously.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from joserfc import jwe
from joserfc.jwk import RSAKey

import chat_security
from chat_security import tokens
from chat_security.diagnosis import diagnose
from chat_security.exceptions import ERROR_CODES, TokenError
from chat_security.models import AuditEntry, Key, SecurityConfig
from chat_security.websocket import SUBPROTOCOL, ChatSecurityWebSocketMiddleware
from tests.chat_helpers import stored_secret
from tests.test_admin_permissions import BASE, client_for
from tests.tokencraft import hs256, public_pem, rs256, rsa_key

from .mutations import (
    CLAIM_NAMES,
    CLAIM_VALUES,
    Kit,
    Mutant,
    any_text,
    form_text,
    hmac_keys_for,
    json_values,
    mutated,
)

pytestmark = pytest.mark.django_db

# -- profiles -----------------------------------------------------------------------------

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    database=None,
    suppress_health_check=_HEALTH,
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    # Failures found by a long run are replayed first by the next one on this machine.
    database=DirectoryBasedExampleDatabase(Path(tempfile.gettempdir()) / "chat-security-fuzz"),
    suppress_health_check=_HEALTH,
    print_blob=True,
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def budget(share: float = 1.0) -> settings:
    """The profile, with ``share`` of its examples (the costly entry points get fewer)."""
    return settings(PROFILE, max_examples=max(20, int(PROFILE.max_examples * share)))


# -- the key store every test starts from --------------------------------------------------

API = "/chat/api/messages"
USER = "user-1"
JWE_PROFILE = ["RSA-OAEP-256", "A256GCM"]


def build_kit(now: float) -> Kit:
    """Every kind of key, in every state, and valid tokens of every shape they verify."""
    retired, retired_secret = Key.objects.generate_secret("fuzz")
    active, secret = Key.objects.rotate_secret(grace=0, actor="fuzz")  # the first: retired
    public = Key.objects.add_public_key(public_pem(rsa_key(1)), "fuzz")
    revoked = Key.objects.add_public_key(public_pem(rsa_key(2)), "fuzz")
    Key.objects.revoke(revoked.kid, "fuzz")
    service = Key.objects.generate_service_keypair("fuzz")
    t = int(now)
    claims = {"sub": USER, "iat": t, "exp": t + 3600, "email": "a@example.com"}
    payload = jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": service.kid},
        json.dumps({"plan": "gold"}).encode(),
        RSAKey.import_key(service.public_pem),
        algorithms=JWE_PROFILE,
    )
    originals = {
        "hs256_issued": tokens.issue(USER, {"email": "a@example.com"}),
        "hs256_no_kid": hs256(secret, claims),
        "hs256_user_id_alias": hs256(secret, {**claims, "userId": USER}, kid=active.kid),
        "hs256_user_payload": hs256(secret, {**claims, "user_payload": payload}),
        "rs256_kid": rs256(rsa_key(1), claims, kid=public.kid),
        "rs256_no_kid": rs256(rsa_key(1), claims),
    }
    wrong = (b"", b"x" * 32, retired_secret.encode(), secret.encode() + b"\n", secret[:-1].encode())
    wrong += hmac_keys_for(public.public_pem) + hmac_keys_for(service.public_pem)
    kids = (active.kid, retired.kid, public.kid, revoked.kid, service.kid)
    return Kit(
        originals, wrong, (retired.kid, retired_secret.encode()), (revoked.kid, rsa_key(2)), kids
    )


@pytest.fixture
def kit(clock) -> Kit:
    SecurityConfig.load()  # security on, the default
    made = build_kit(clock.t)
    for token in made.originals.values():
        assert engine_outcome(token) == "ok"
    return made


def report(tally: Counter, name: str) -> None:
    """Print what the run did (shown with ``pytest -s`` and by scripts/fuzz_long.sh)."""
    print(f"\n{name}: {dict(sorted(tally.items()))}")


# -- the engine ------------------------------------------------------------------------------


def engine_outcome(token: Any) -> str:
    """'ok' or the §4 code; any other exception fails the test."""
    try:
        chat_security.verify(token)
    except TokenError as exc:
        assert exc.code in ERROR_CODES
        assert exc.detail and "\n" not in exc.detail
        return exc.code
    return "ok"


#: around MAX_TOKEN_BYTES (8192), in ASCII and in two-byte characters
NEAR_THE_LIMIT = st.builds(
    lambda n, c: c * n, st.integers(4090, 8300), st.sampled_from(["A", "é", ".", "a.", "\ud800"])
)


def test_engine_refuses_arbitrary_input(kit):
    tally: Counter = Counter()

    @budget(1.0)
    @given(st.one_of(any_text, st.binary(max_size=300), NEAR_THE_LIMIT))
    def run(value):
        code = engine_outcome(value)
        assert code != "ok"
        tally[code] += 1
        event(code)

    run()
    report(tally, "engine, arbitrary input")
    assert sum(tally.values()) >= 20


def _as_transported(draw, token: str) -> str | bytes:
    """The engine takes text or bytes: the same token as ASCII bytes is an equivalent."""
    how = draw(st.sampled_from(["text", "text", "ascii", "utf-16"]))
    if how == "text":
        return token
    if how == "ascii":
        return token.encode("utf-8", "surrogatepass")
    return token.encode("utf-16", "surrogatepass")


def test_engine_never_accepts_a_mutated_token(kit):
    tally: Counter = Counter()

    @budget(2.0)
    @given(mutated(kit), st.data())
    def run(mutant: Mutant, data):
        value = _as_transported(data.draw, mutant.token)
        code = engine_outcome(value)
        if mutant.is_genuine(value):
            tally["unchanged (skipped)"] += 1
            assert code == "ok"  # the same token: the same verdict, text or bytes
            return
        assert code != "ok", f"mutated token accepted after {mutant.steps}: {value!r}"
        tally[code] += 1
        if len(mutant.steps) == 1 and isinstance(value, str):
            by_step[f"{mutant.steps[0]} -> {code}"] += 1
        event(f"{'+'.join(mutant.steps)} -> {code}")

    by_step: Counter = Counter()
    run()
    report(tally, "engine, mutations")
    report(by_step, "engine, single mutations")
    refused = sum(n for code, n in tally.items() if code in ERROR_CODES)
    assert refused > 0.8 * sum(tally.values())


def test_engine_refuses_header_and_claim_tweaks_with_the_right_code(kit):
    """alg / kid / jku / jwk / crit and claim changes, kept or re-signed with a wrong,
    retired or revoked key, reach the key and signature steps: each is refused there."""
    tally: Counter = Counter()

    @budget(1.0)
    @given(mutated(kit, only=("tweak_header", "tweak_claims", "old_key")))
    def run(mutant: Mutant):
        code = engine_outcome(mutant.token)
        if mutant.unchanged:
            tally["unchanged (skipped)"] += 1
            return
        assert code != "ok", f"accepted after {mutant.steps}: {mutant.token!r}"
        tally[code] += 1

    run()
    report(tally, "engine, header and claim tweaks")
    reached = {"algorithm_not_allowed", "unknown_key", "key_retired", "invalid_signature"}
    assert reached <= set(tally), "the kit no longer reaches every key-selection refusal"


#: claims the engine and the identity rules read, with any JSON values
CLAIMS = st.dictionaries(
    st.sampled_from([*CLAIM_NAMES, "email", "name", "phone", "locale", "userData", "agentData"]),
    st.one_of(CLAIM_VALUES, json_values(max_leaves=6)),
    max_size=5,
)


def test_engine_claims_signed_with_the_real_secret(kit, clock):
    """Any JSON payload that passes the signature reaches every later step safely."""
    secret = stored_secret(next(k for k in Key.objects.filter(kind="secret") if k.is_usable()))
    t = int(clock.t)
    tally: Counter = Counter()

    @budget(1.0)
    @given(st.one_of(CLAIMS, json_values(max_leaves=20)), st.booleans())
    def run(extra, over_valid):
        claims = extra
        if over_valid and type(extra) is dict:  # a valid token's claims, some overridden
            claims = {"sub": USER, "exp": t + 60, **extra}
        try:
            token = hs256(secret, claims)
        except ValueError:
            return
        try:
            result = chat_security.verify(token)
        except TokenError as exc:
            assert exc.code in ERROR_CODES
            tally[exc.code] += 1
            return
        # Accepted: the user id is the one the claims carry, a clean header value.
        assert result.user_id in (claims.get("sub"), claims.get("userId"))
        assert result.user_id.isascii() and result.user_id.isprintable()
        tally["ok"] += 1

    run()
    report(tally, "engine, re-signed claims")
    assert tally["ok"] > 0 and len(tally) > 2


# -- the HTTP middleware ---------------------------------------------------------------------


def _header_forms(token: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            f"Bearer {token}", f"bearer {token}", f"BEARER\t{token}", f"  Bearer   {token} \t",
            f"Bearer {token}, Bearer {token}", f"Basic {token}", token, f'Bearer "{token}"',
            f"Bearer={token}", f"Bearer:{token}", f"Token {token}", f"Bearer {token};",
        ]
    )  # fmt: skip


_CREDENTIALS = re.compile(r"(?i:bearer)[ \t]+(.*)", re.DOTALL)


def same_credentials(header: str, token: str) -> bool:
    """RFC 9110: optional whitespace around the field value, a case-insensitive
    scheme, then the token. Anything else is a different credential."""
    match = _CREDENTIALS.fullmatch(header.strip(" \t"))
    return bool(match) and match.group(1) == token


def check_refusal(response) -> str:
    assert response.status_code == 401, (response.status_code, response.content[:200])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] in ERROR_CODES and body["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "no-store" in response["Cache-Control"]
    return body["error"]


def test_http_refuses_any_authorization_header(kit, client):
    tally: Counter = Counter()
    latin1 = st.text(st.characters(max_codepoint=255), max_size=200)

    @budget(1.0)
    @given(
        st.one_of(
            form_text,
            latin1,
            any_text.map(lambda t: f"Bearer {t}"),
            st.tuples(st.sampled_from(["Bearer", "bearer", "Basic", "", "Bearer,"]), latin1).map(
                " ".join
            ),
        )
    )
    def run(header):
        response = client.get(API, HTTP_AUTHORIZATION=header)
        tally[check_refusal(response)] += 1

    run()
    report(tally, "HTTP, arbitrary Authorization")
    assert {"missing_token", "malformed"} <= set(tally)


def test_http_never_accepts_a_mutated_token(kit, client):
    for token in kit.originals.values():
        assert client.get(API, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    tally: Counter = Counter()

    @budget(1.0)
    @given(mutated(kit), st.data())
    def run(mutant: Mutant, data):
        header = data.draw(_header_forms(mutant.token))
        response = client.get(API, HTTP_AUTHORIZATION=header)
        assert response.status_code in (200, 401)  # never a 500 (the client would raise)
        if any(same_credentials(header, genuine) for genuine in mutant.genuine):
            tally[f"equivalent (skipped): {response.status_code}"] += 1
            return
        tally[check_refusal(response)] += 1

    run()
    report(tally, "HTTP, mutations")
    assert sum(n for code, n in tally.items() if code in ERROR_CODES) > 0


def test_http_any_body_with_a_valid_token_is_never_a_500(kit, client):
    token = kit.originals["hs256_issued"]

    @budget(0.5)
    @given(
        st.one_of(
            st.binary(max_size=200),
            json_values().map(lambda v: json.dumps(v).encode()),
            st.dictionaries(st.sampled_from(["text", "type"]), json_values()).map(
                lambda v: json.dumps(v).encode()
            ),
        ),
        st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8"]),
    )
    def run(body, content_type):
        response = client.post(
            API, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert response.status_code in (201, 400, 413, 415), response.content[:200]
        assert response["Content-Type"] == "application/json"

    run()


# -- the WebSocket middleware ------------------------------------------------------------------
# Each example opens a socket in its own event loop (async_to_sync); the engine's
# database work runs back in this thread, inside the test's database.

TIMEOUT = 3.0
PROTOCOL_REASONS = {
    "binary_frame",
    "frame_too_large",
    "not_json_object",
    "identify_expected",
    "identify_without_token",
}


class Echo(AsyncJsonWebsocketConsumer):
    """The tiny application behind the middleware: echoes who is talking.

    No channel layer: a Redis layer (the PostgreSQL lane) would add a
    connection per example and nothing this suite looks at.
    """

    channel_layer_alias = "chat-security-fuzz-no-layer"

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": True, "user": self.scope["chat_identity"].user_id})


async def _open(token: str | None, via: str):
    subprotocols = [SUBPROTOCOL] if via == "identify" or token is None else [SUBPROTOCOL, token]
    app = ChatSecurityWebSocketMiddleware(Echo.as_asgi())
    comm = WebsocketCommunicator(app, "/ws/fuzz/", subprotocols=subprotocols)
    connected, chosen = await comm.connect(timeout=TIMEOUT)
    assert connected and chosen == SUBPROTOCOL  # refusals come after the accept
    if via == "identify" and token is not None:
        await comm.send_json_to({"type": "identify", "token": token})
    return comm


async def _closing(comm) -> tuple[int, str]:
    """The error frame and the close that follows; returns (code, reason)."""
    error = json.loads(await comm.receive_from(TIMEOUT))
    assert error["type"] == "error" and error["detail"] and "\n" not in error["detail"], error
    closing = await comm.receive_output(TIMEOUT)
    assert closing["type"] == "websocket.close", closing
    assert closing["reason"] == error["error"]
    code, reason = closing["code"], closing["reason"]
    if code == 4401:
        assert reason in ERROR_CODES
    else:
        assert code == 4400 and reason in PROTOCOL_REASONS, closing
    return code, reason


async def _finish(comm) -> None:
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(TIMEOUT)


async def _refused(token: str, via: str) -> str:
    comm = await _open(token, via)
    code, reason = await _closing(comm)
    await _finish(comm)
    assert code == 4401, reason  # a string token is always a verification, never a protocol error
    return reason


ws_db = pytest.mark.django_db(transaction=True)


@ws_db
def test_ws_refuses_any_token_by_both_transports(kit):
    tally: Counter = Counter()

    @budget(0.5)
    @given(any_text, st.sampled_from(["subprotocol", "identify"]))
    def run(token, via):
        tally[async_to_sync(_refused)(token, via)] += 1

    run()
    report(tally, "WebSocket, arbitrary tokens")
    assert "malformed" in tally


@ws_db
def test_ws_never_accepts_a_mutated_token(kit):
    tally: Counter = Counter()

    @budget(1.0)
    @given(mutated(kit), st.sampled_from(["subprotocol", "identify"]))
    def run(mutant: Mutant, via):
        if mutant.unchanged:
            tally["unchanged (skipped)"] += 1
            return
        tally[async_to_sync(_refused)(mutant.token, via)] += 1

    run()
    report(tally, "WebSocket, mutations")
    assert sum(n for code, n in tally.items() if code in ERROR_CODES) > 0


def _frames(kit: Kit) -> st.SearchStrategy[dict[str, Any]]:
    """One client frame: what the ASGI server hands the middleware."""
    valid = st.sampled_from([kit.originals["hs256_issued"], kit.originals["rs256_kid"]])
    identify_tokens = st.one_of(
        valid, mutated(kit).map(lambda m: m.token), any_text, json_values(max_leaves=3)
    )
    objects = st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "probe", "ping", "Identify", ""])},
            optional={"text": json_values(max_leaves=4), "token": json_values(max_leaves=2)},
        ),
        st.fixed_dictionaries({"type": st.just("identify")}, optional={"token": identify_tokens}),
        st.dictionaries(st.text(max_size=8), json_values(max_leaves=6), max_size=4),
    )
    return st.one_of(
        objects.map(lambda o: {"text": json.dumps(o)}),
        st.text(st.characters(exclude_categories=()), max_size=80).map(lambda t: {"text": t}),
        json_values().map(lambda v: {"text": json.dumps(v)}),
        st.binary(max_size=40).map(lambda b: {"bytes": b}),
        st.just({"text": json.dumps({"type": "message", "text": "x" * 70_000})}),
    )


def expected_reply(frame: dict[str, Any], identified: bool, valid: set[str]) -> str:
    """What SPEC §10 says the middleware answers to one frame."""
    text = frame.get("text")
    if not isinstance(text, str):
        return "close"
    if len(text.encode("utf-8", "surrogatepass")) > 64 * 1024:
        return "close"
    try:
        message = json.loads(text)
    except ValueError:
        return "close"
    if type(message) is not dict:
        return "close"
    if message.get("type") != "identify":
        return "echo" if identified else "close"
    token = message.get("token")
    return "identified" if isinstance(token, str) and token in valid else "close"


async def _conversation(kit: Kit, via: str, frames: list[dict[str, Any]], tally: Counter) -> None:
    valid = set(kit.originals.values())  # all of them, for the same user
    comm = await _open(kit.originals["hs256_issued"] if via == "subprotocol" else None, via)
    identified = via == "subprotocol"
    if identified:
        assert json.loads(await comm.receive_from(TIMEOUT))["type"] == "identified"
    for frame in frames:
        expected = expected_reply(frame, identified, valid)
        await comm.send_input({"type": "websocket.receive", **frame})
        if expected == "close":
            code, reason = await _closing(comm)
            tally[f"closed {code} {reason}"] += 1
            break
        reply = json.loads(await comm.receive_from(TIMEOUT))
        if expected == "identified":
            assert reply["type"] == "identified" and reply["user"] == {"id": USER, "verified": True}
            identified = True
        else:
            assert reply == {"echo": True, "user": USER}, reply
        tally[expected] += 1
    else:
        tally["still open"] += 1
    await _finish(comm)


@ws_db
def test_ws_arbitrary_frames_before_and_after_identification(kit):
    tally: Counter = Counter()
    valid_identify = {
        "text": json.dumps({"type": "identify", "token": kit.originals["hs256_issued"]})
    }

    @budget(0.5)
    @given(
        st.sampled_from(["subprotocol", "identify"]),
        st.booleans(),
        st.lists(_frames(kit), min_size=1, max_size=6),
    )
    def run(via, identify_first, frames):
        if via == "identify" and identify_first:
            frames = [valid_identify, *frames]
        async_to_sync(_conversation)(kit, via, frames, tally)

    run()
    report(tally, "WebSocket, frames")
    assert tally["echo"] > 0 and any(k.startswith("closed 4400") for k in tally)
    assert any(k.startswith("closed 4401") for k in tally)


# -- the admin's token tester -------------------------------------------------------------------


def check_diagnosis(diag) -> None:
    """Everything the tester page shows can be built and encoded."""
    assert not diag.valid and diag.code in ERROR_CODES
    assert diag.explanation == ERROR_CODES[diag.code]
    assert diag.hints and all(isinstance(h, str) and h for h in diag.hints)
    for shown in (diag.header_json, diag.claims_json, diag.detail, *diag.hints):
        shown.encode("utf-8")  # a lone surrogate here would be a 500 on the page
    assert all(fact.label and fact.at for fact in diag.times)
    assert isinstance(diag.identity_rows, list) and isinstance(diag.ignored, list)


def test_diagnose_explains_any_input(kit):
    tally: Counter = Counter()

    @budget(1.0)
    @given(any_text)
    def run(text):
        diag = diagnose(text)
        check_diagnosis(diag)
        tally[diag.code] += 1

    run()
    report(tally, "diagnose, arbitrary input")


def test_diagnose_never_accepts_a_mutated_token(kit):
    for token in kit.originals.values():
        assert diagnose(token).valid
    tally: Counter = Counter()

    @budget(1.0)
    @given(mutated(kit))
    def run(mutant: Mutant):
        if mutant.unchanged:
            tally["unchanged (skipped)"] += 1
            return
        diag = diagnose(mutant.token)
        check_diagnosis(diag)
        tally[diag.code] += 1

    run()
    report(tally, "diagnose, mutations")
    assert sum(n for code, n in tally.items() if code in ERROR_CODES) > 0


def _postable(mutant: Mutant) -> tuple[frozenset[str], str]:
    """A form field cannot carry a lone surrogate: it becomes "?" (still a mutation)."""
    return mutant.genuine, mutant.token.encode("utf-8", "replace").decode("utf-8")


_VERDICT = re.compile(r'<code class="chat-code">([a-z_]+)</code>')


def test_admin_tester_view_never_crashes_or_accepts_a_mutation(kit):
    support = client_for("support")  # may test tokens, may not manage keys
    tally: Counter = Counter()
    url = BASE + "test-token/"

    @budget(0.5)
    @given(st.one_of(mutated(kit).map(_postable), form_text.map(lambda t: (frozenset(), t))))
    def run(case):
        genuine, text = case
        audited = AuditEntry.objects.filter(action="test_token").count()
        response = support.post(url, {"token": text})
        assert response.status_code == 200
        content = response.content.decode()
        if not text.strip() or "\x00" in text:  # the form refuses it: no verdict, no audit entry
            assert _VERDICT.search(content) is None and "Valid token" not in content
            assert AuditEntry.objects.filter(action="test_token").count() == audited
            tally["form error"] += 1
            return
        if text.strip() in genuine:  # the form trims whitespace
            assert "Valid token" in content
            tally["equivalent (skipped)"] += 1
            return
        verdict = _VERDICT.search(content)
        assert verdict and verdict.group(1) in ERROR_CODES and "Valid token" not in content
        tally[verdict.group(1)] += 1

    run()
    report(tally, "admin tester view")
    assert sum(n for code, n in tally.items() if code in ERROR_CODES) > 0
