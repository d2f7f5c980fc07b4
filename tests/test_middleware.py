from __future__ import annotations

import json
import logging

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.utils.cache import get_cache_key
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat_security import keyring, middleware, tokens, usage, verified
from chat_security.exceptions import ERROR_CODES, KeyStoreUnavailable
from chat_security.identity_types import ChatIdentity
from chat_security.middleware import ChatSecurityMiddleware, bearer_token
from chat_security.models import Integration, Key, RevokedUser, SecurityConfig
from chat_security.session import SUBJECT_SESSION_KEY
from chat_security.values import ANONYMOUS_ID_RE
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, security_off, sign
from tests.tokencraft import hs256

pytestmark = pytest.mark.urls("tests.chat_urls")
secret, token_for, alice = chat_helpers.secret, chat_helpers.token_for, chat_helpers.alice

WHOAMI = "/chat/api/whoami"
AWHOAMI = "/chat/api/awhoami"


# -- one request per rejection code -------------------------------------------------
# Each case prepares the store and returns the Authorization header value (None: no header).


def _now(clock) -> int:
    return int(clock.t)


def _valid(secret, clock, **claims):
    key, value = secret
    payload = {"sub": "u-1", "iat": _now(clock), "exp": _now(clock) + 3600, **claims}
    return sign(value, payload, kid=key.kid)


def _no_kid(s, c, **claims):
    return sign(s[1], {"sub": "u-1", "exp": _now(c) + 60, **claims})


def _key_retired(s, c):
    token = _valid(s, c)
    Key.objects.rotate_secret(grace=0)
    return "Bearer " + token


def _not_configured(s, c):
    Key.objects.all().delete()
    return "Bearer " + sign("x" * 32, {"sub": "u-1", "exp": _now(c) + 60})


def _revoked(s, c):
    token = _valid(s, c)
    c.advance(5)
    RevokedUser.objects.revoke("u-1")
    return "Bearer " + token


def _unknown_issuer(s, c):
    """Two more integrations without an issuer on the same path: a token without iss
    could be for any of three (SPEC §13)."""
    for name in ("ios", "android"):
        Integration.objects.add(name, paths=["/chat/api/"])
    return "Bearer " + _valid(s, c)


CASES = {
    "missing_token": lambda s, c: None,
    "token_too_large": lambda s, c: "Bearer " + "a" * 8193,
    "malformed": lambda s, c: "Bearer not-a-jwt",
    "algorithm_not_allowed": lambda s, c: (
        "Bearer "
        + hs256(s[1], {"sub": "u-1", "exp": _now(c) + 60}, header={"alg": "none", "typ": "JWT"})
    ),
    "unknown_key": lambda s, c: (
        "Bearer " + sign(s[1], {"sub": "u-1", "exp": _now(c) + 60}, kid="no-such-kid")
    ),
    "key_retired": _key_retired,
    "security_not_configured": _not_configured,
    "invalid_signature": lambda s, c: (
        "Bearer "
        + sign("wrong-secret-" + "x" * 32, {"sub": "u-1", "exp": _now(c) + 60}, kid=s[0].kid)
    ),
    "missing_claim": lambda s, c: "Bearer " + sign(s[1], {"sub": "u-1"}, kid=s[0].kid),
    "expired": lambda s, c: "Bearer " + _no_kid(s, c, exp=_now(c) - 3600),
    "not_yet_valid": lambda s, c: "Bearer " + _valid(s, c, nbf=_now(c) + 600),
    "lifetime_too_long": lambda s, c: "Bearer " + _valid(s, c, exp=_now(c) + 400 * 24 * 3600),
    "invalid_claim": lambda s, c: "Bearer " + _valid(s, c, sub=12345),
    "token_revoked": _revoked,
    "payload_decryption_failed": lambda s, c: "Bearer " + _valid(s, c, user_payload="not-a-jwe"),
    "unknown_issuer": _unknown_issuer,
}


def test_every_error_code_has_a_case():
    assert set(CASES) | {"subject_changed"} == set(ERROR_CODES)


def assert_rejected(response, code: str) -> None:
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"] and "\n" not in body["detail"]
    if code == "missing_token":
        assert response["WWW-Authenticate"] == "Bearer"
    else:
        assert response["WWW-Authenticate"] == (
            f'Bearer error="invalid_token", error_description="{code}"'
        )


@pytest.mark.django_db
@pytest.mark.parametrize("code", sorted(CASES))
def test_rejection_contract_sync(code, secret, clock):
    header = CASES[code](secret, clock)
    headers = {"Authorization": header} if header is not None else {}
    assert_rejected(Client().get(WHOAMI, headers=headers), code)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", sorted(CASES))
async def test_rejection_contract_async(code, secret, clock):
    from asgiref.sync import sync_to_async

    header = await sync_to_async(CASES[code])(secret, clock)
    headers = {"Authorization": header} if header is not None else {}
    assert_rejected(await AsyncClient().get(AWHOAMI, headers=headers), code)


@pytest.mark.django_db
def test_subject_changed_until_chat_logout(alice, token_for):
    client = Client()
    client.force_login(alice)
    assert client.get(WHOAMI, headers=bearer(token_for("alice-id"))).json()["user_id"] == "alice-id"
    assert_rejected(client.get(WHOAMI, headers=bearer(token_for("bob-id"))), "subject_changed")
    assert client.post("/chat/api/logout", headers=bearer(token_for("alice-id"))).status_code == 200
    assert client.get(WHOAMI, headers=bearer(token_for("bob-id"))).json()["user_id"] == "bob-id"


@pytest.mark.django_db(transaction=True)
async def test_subject_changed_async(alice, token_for):
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.get(AWHOAMI, headers=bearer(token_for("alice-id")))
    assert response.json()["user_id"] == "alice-id"
    assert_rejected(
        await client.get(AWHOAMI, headers=bearer(token_for("bob-id"))), "subject_changed"
    )


# -- accepted requests, on and off ----------------------------------------------------


@pytest.mark.django_db
def test_valid_token_sets_identity(secret, token_for):
    response = Client().get(WHOAMI, headers=bearer(token_for("u-42")))
    assert response.status_code == 200
    assert response.json() == {
        "guarded": True,
        "user_id": "u-42",
        "anonymous": False,
        "anonymous_id": None,
        "kid": secret[0].kid,
    }
    assert "Authorization" in response["Vary"]


@pytest.mark.django_db(transaction=True)
async def test_valid_token_async(secret, token_for):
    response = await AsyncClient().get(AWHOAMI, headers=bearer(token_for("u-42")))
    assert response.status_code == 200
    assert response.json()["user_id"] == "u-42"


@pytest.mark.django_db
def test_security_off_allows_anonymous_but_still_verifies(secret, token_for, clock):
    security_off()
    client = Client()
    anonymous = client.get(WHOAMI)
    assert anonymous.status_code == 200
    assert anonymous.json()["anonymous"] is True and anonymous.json()["user_id"] is None
    assert client.get(WHOAMI, headers=bearer(token_for("u-1"))).json()["user_id"] == "u-1"
    for code in ("malformed", "expired", "invalid_signature", "token_too_large"):
        header = CASES[code](secret, clock)
        assert_rejected(client.get(WHOAMI, headers={"Authorization": header}), code)


@pytest.mark.django_db(transaction=True)
async def test_security_off_async(secret, token_for, clock):
    from asgiref.sync import sync_to_async

    await sync_to_async(security_off)()
    client = AsyncClient()
    assert (await client.get(AWHOAMI)).json()["anonymous"] is True
    header = await sync_to_async(CASES["expired"])(secret, clock)
    assert_rejected(await client.get(AWHOAMI, headers={"Authorization": header}), "expired")


NOT_A_JWT = [
    "Bearer not-a-jwt",
    "Bearer",
    "Bearer a.b.c, Bearer d.e.f",
    "eyJhbGciOiJIUzI1NiJ9.e30.x",
]


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, *NOT_A_JWT], ids=["no-token", *NOT_A_JWT])
def test_fresh_install_is_on_and_not_configured(header):
    """SPEC §5: with no key at all, every protected request is told what to fix first."""
    headers = {"Authorization": header} if header else {}
    assert_rejected(Client().get(WHOAMI, headers=headers), "security_not_configured")
    token = sign("x" * 32, {"sub": "u", "exp": 2_000_000_000})
    assert_rejected(Client().get(WHOAMI, headers=bearer(token)), "security_not_configured")


@pytest.mark.django_db
def test_no_usable_key_of_any_kind_is_not_configured(secret, token_for, clock):
    token = token_for("u-1")
    new_key, _value = Key.objects.rotate_secret(grace=0)  # the old one is retired at once
    Key.objects.revoke(new_key.kid)
    Key.objects.generate_service_keypair()  # it only decrypts: it verifies nothing
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, bearer(token)):
        assert_rejected(Client().get(WHOAMI, headers=headers), "security_not_configured")


@pytest.mark.django_db(transaction=True)
async def test_no_usable_key_async():
    assert_rejected(await AsyncClient().get(AWHOAMI), "security_not_configured")


@pytest.mark.django_db
def test_one_usable_public_key_is_enough(clock):
    from tests.tokencraft import public_pem, rsa_key

    Key.objects.add_public_key(public_pem(rsa_key(1)))
    assert_rejected(Client().get(WHOAMI), "missing_token")
    assert_rejected(Client().get(WHOAMI, headers={"Authorization": "Bearer x"}), "malformed")


@pytest.mark.django_db
def test_no_usable_key_of_the_tokens_kind(secret, clock):
    """docs/errors.md, verification step 4: the fix is a key, unless the kid names a retired one."""
    from tests.tokencraft import public_pem, rsa_key

    Key.objects.add_public_key(public_pem(rsa_key(1)))  # the site can still verify RS256
    retired = _valid(secret, clock)
    Key.objects.revoke(secret[0].kid)
    assert_rejected(Client().get(WHOAMI, headers=bearer(retired)), "key_retired")
    unknown = sign(secret[1], {"sub": "u-1", "exp": _now(clock) + 60}, kid="hs-unknown")
    assert_rejected(Client().get(WHOAMI, headers=bearer(unknown)), "security_not_configured")


@pytest.mark.django_db
def test_security_off_without_keys_stays_anonymous():
    security_off()
    assert Client().get(WHOAMI).json()["anonymous"] is True


@pytest.mark.django_db
def test_unprotected_paths_are_untouched(secret):
    response = Client().get("/pages/public-plain", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 200
    assert "Vary" not in response or "Authorization" not in response["Vary"]


@pytest.mark.django_db
def test_protected_paths_follow_settings(token_for):
    with chat_settings(PROTECTED_PATHS=["/elsewhere/"]):
        assert Client().get(WHOAMI).json() == {"guarded": False}
    assert_rejected(Client().get(WHOAMI), "missing_token")


def test_one_receiver_clears_every_settings_cache(secret):
    """conf's values, the Fernet keys, the protected prefixes, the key snapshot and the
    remembered verifications: one receiver (conf's), each cache registered by its module."""
    import weakref

    from django.core.signals import setting_changed

    from chat_security import conf, keys
    from chat_security.conf import app_settings

    ours = []
    for _key, ref, *_rest in setting_changed.receivers:
        receiver = ref() if isinstance(ref, weakref.ReferenceType) else ref
        if receiver is not None and receiver.__module__.startswith("chat_security"):
            ours.append(receiver)
    assert ours == [conf._settings_changed]

    assert middleware.protected_prefixes() and app_settings.PROTECTED_PATHS
    keys.encrypt("warm the Fernet cache")
    tokens.verify(tokens.issue("cache-user"))
    assert keyring._State.snapshot is not None and verified.MEMORY
    conf._settings_changed(setting="CHAT_SECURITY")
    assert middleware.protected_prefixes.cache_info().currsize == 0
    assert keys._fernet.cache_info().currsize == 0
    assert vars(app_settings) == {}
    assert keyring._State.snapshot is None
    assert verified.MEMORY == {}


# -- a site-wide cache ----------------------------------------------------------------

UPDATE_CACHE = "django.middleware.cache.UpdateCacheMiddleware"
FETCH_CACHE = "django.middleware.cache.FetchFromCacheMiddleware"
OURS = "chat_security.middleware.ChatSecurityMiddleware"


def site_wide_cache(ours_before_fetch: bool) -> override_settings:
    """Django's documented site cache: UpdateCacheMiddleware first, Fetch… last."""
    others = [m for m in settings.MIDDLEWARE if m != OURS]
    last = [OURS, FETCH_CACHE] if ours_before_fetch else [FETCH_CACHE, OURS]
    return override_settings(
        MIDDLEWARE=[UPDATE_CACHE, *others, *last],
        CACHE_MIDDLEWARE_SECONDS=600,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "chat-security-site-cache",
            }
        },
    )


def cached_page_key() -> str | None:
    """The site cache's key for WHOAMI; ``None`` while it has stored no response for it."""
    return get_cache_key(RequestFactory().get(WHOAMI), cache=caches["default"])


@pytest.mark.django_db
def test_site_wide_cache_stores_no_protected_response(secret, token_for):
    with site_wide_cache(ours_before_fetch=True):
        caches["default"].clear()
        client = Client()
        accepted = client.get(WHOAMI, headers=bearer(token_for("u-1")))
        assert accepted.status_code == 200
        cache_control = [d.strip() for d in accepted["Cache-Control"].split(",")]
        assert "private" in cache_control and "public" not in cache_control
        assert "Authorization" in accepted["Vary"]
        assert cached_page_key() is None  # UpdateCacheMiddleware stored nothing
        assert_rejected(client.get(WHOAMI), "missing_token")


@pytest.mark.django_db
@pytest.mark.parametrize("ours_before_fetch", [True, False], ids=["right-order", "wrong-order"])
def test_site_wide_cache_never_answers_for_the_check(ours_before_fetch, secret, token_for, clock):
    """Each refused request below would get the 200 an earlier one left in the cache."""
    with site_wide_cache(ours_before_fetch), chat_settings(KEY_CACHE_SECONDS=0):
        caches["default"].clear()
        client = Client()
        revoked, expiring = bearer(token_for("u-1")), bearer(token_for("u-2"))
        assert client.get(WHOAMI, headers=revoked).status_code == 200
        assert client.get(WHOAMI, headers=expiring).status_code == 200
        security_off()
        assert client.get(WHOAMI).json()["anonymous"] is True
        SecurityConfig.set_enabled(True, actor="tests")
        clock.advance(5)
        RevokedUser.objects.revoke("u-1")
        assert_rejected(client.get(WHOAMI), "missing_token")
        assert_rejected(client.get(WHOAMI, headers=revoked), "token_revoked")
        clock.advance(2 * 3600)
        assert_rejected(client.get(WHOAMI, headers=expiring), "expired")


@pytest.mark.django_db
def test_rejections_stay_no_store_and_private_marks_keep_the_flag(secret):
    response = Client().get(WHOAMI)
    cache_control = [d.strip() for d in response["Cache-Control"].split(",")]
    assert "no-store" in cache_control and "private" in cache_control
    assert "Authorization" in response["Vary"]


@pytest.mark.django_db
def test_protected_requests_are_never_stored_by_the_cache_middleware(secret, token_for):
    request = RequestFactory().get(WHOAMI, headers=bearer(token_for("u-1")))
    request._cache_update_cache = True  # what FetchFromCacheMiddleware sets on a miss

    def view(request):
        return HttpResponse("ok")

    response = ChatSecurityMiddleware(view)(request)
    assert response.status_code == 200
    assert request._cache_update_cache is False


# -- the Authorization header ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER \t abc.def.ghi  ", "abc.def.ghi"),
        ("Basic dXNlcjpwYXNz", None),
        ("Token 0123456789abcdef", None),
    ],
)
def test_bearer_token_parsing(value, expected):
    assert bearer_token(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Bearer", "missing_token"),
        ("Bearer   ", "missing_token"),
        ("eyJhbGciOiJIUzI1NiJ9.e30.sig", "malformed"),
        ("Bearer,Bearer abc.def.ghi", "malformed"),
        ("Basic dXNlcjpwYXNz, Bearer abc.def.ghi", "malformed"),
        ("Negotiate", "malformed"),
    ],
)
def test_bearer_token_refuses_ambiguous_headers(value, code):
    from chat_security.exceptions import TokenError

    with pytest.raises(TokenError) as info:
        bearer_token(value)
    assert info.value.code == code


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Bearer", "missing_token"),
        ("Bearer a.b.c, Bearer d.e.f", "malformed"),
        ("Bearer a.b.c,Bearer d.e.f", "malformed"),
        ("Bearer a.b.c d.e.f", "malformed"),
        ("Bearer Bearer a.b.c", "malformed"),
        ("Bearer \x00\x01", "malformed"),
        ("Bearer ÿÿÿ.ÿ.ÿ", "malformed"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("eyJhbGciOiJIUzI1NiJ9.e30.sig", "malformed"),
    ],
)
def test_garbled_headers_are_clear_401s(value, code, secret):
    assert_rejected(Client().get(WHOAMI, headers={"Authorization": value}), code)


@pytest.mark.django_db
def test_foreign_scheme_is_anonymous_when_off_but_bearer_is_never_downgraded(secret):
    security_off()
    client = Client()
    assert client.get(WHOAMI, headers={"Authorization": "Basic dXNlcjpwYXNz"}).json()["anonymous"]
    assert_rejected(client.get(WHOAMI, headers={"Authorization": "Bearer"}), "missing_token")
    assert_rejected(
        client.get(WHOAMI, headers={"Authorization": "Basic eA==, Bearer a.b.c"}), "malformed"
    )


# -- a token in the wrong place (issue 17, item 7) ------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["token", "access_token", "jwt", "Access_Token"])
@pytest.mark.parametrize("path", [WHOAMI, AWHOAMI])
def test_a_token_in_the_url_is_missing_token_saying_never_in_the_url(name, path, token_for):
    token = token_for()
    response = Client().get(f"{path}?lang=en&{name}={token}")
    assert_rejected(response, "missing_token")
    detail = response.json()["detail"]
    assert f"?{name.lower()}=" in detail and "never" in detail and "URL" in detail
    assert "Authorization: Bearer <token>" in detail
    assert token not in detail


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["JWT", "Token", "jwt", "Basic"])
def test_another_authorization_scheme_is_missing_token_naming_the_scheme(scheme, token_for):
    header = f"{scheme} {token_for()}"
    response = Client().get(WHOAMI, headers={"Authorization": header})
    assert_rejected(response, "missing_token")
    detail = response.json()["detail"]
    assert f"the {scheme!r} scheme, not Bearer" in detail
    assert "Authorization: Bearer <token>" in detail


@pytest.mark.django_db
def test_no_token_at_all_keeps_the_generic_detail(secret):
    response = Client().get(WHOAMI + "?tokens=1&page=2")
    assert_rejected(response, "missing_token")
    assert response.json()["detail"] == ERROR_CODES["missing_token"]


@pytest.mark.django_db
def test_a_wrongly_placed_token_with_security_off_stays_anonymous(token_for):
    security_off()
    client = Client()
    assert client.get(f"{WHOAMI}?token={token_for()}").json()["anonymous"]
    assert client.get(WHOAMI, headers={"Authorization": "JWT a.b.c"}).json()["anonymous"]


# -- failing closed -------------------------------------------------------------------


@pytest.mark.django_db
def test_key_store_unavailable_is_503(monkeypatch, token_for):
    token = token_for("u-1")

    def broken():
        raise KeyStoreUnavailable("database down")

    monkeypatch.setattr(keyring, "get_snapshot", broken)
    for headers in ({}, bearer(token)):
        response = Client().get(WHOAMI, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"


@pytest.mark.django_db(transaction=True)
async def test_key_store_unavailable_async(monkeypatch):
    def broken():
        raise KeyStoreUnavailable("database down")

    monkeypatch.setattr(keyring, "get_snapshot", broken)
    response = await AsyncClient().get(AWHOAMI)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


@pytest.mark.django_db
def test_unexpected_error_fails_closed_without_logging_the_token(monkeypatch, caplog, token_for):
    token = token_for("u-1")

    def explode(value, *args, **kwargs):
        raise RuntimeError(f"boom {value}")

    monkeypatch.setattr(tokens, "verify_at", explode)
    with caplog.at_level(logging.DEBUG, logger="chat_security"):
        response = Client().get(WHOAMI, headers=bearer(token))
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text and token.split(".")[1] not in caplog.text


# -- the database down behind the check (issue 16, item 9) ----------------------------

MESSAGES = "/chat/api/messages"  # the demo's chat API: a protected view that queries


def _refuse_every_query(execute, sql, params, many, context):
    raise OperationalError("the database is down (test)")


def _assert_database_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable", "detail": middleware.DATABASE_UNAVAILABLE}
    assert response["Cache-Control"] == "private, no-store"
    assert response["Vary"] == "Authorization" and response["Retry-After"] == "5"


@pytest.mark.django_db
def test_a_database_error_in_a_protected_view_is_503_not_500(token_for):
    client, token = Client(), token_for("u-1")
    with chat_settings(KEY_CACHE_SECONDS=3600):  # the check answers from memory: the view queries
        assert client.get(MESSAGES, headers=bearer(token)).status_code == 200
        with connection.execute_wrapper(_refuse_every_query):
            _assert_database_unavailable(client.get(MESSAGES, headers=bearer(token)))
            posted = client.post(
                MESSAGES, {"text": "hi"}, content_type="application/json", headers=bearer(token)
            )
            _assert_database_unavailable(posted)


@pytest.mark.django_db(transaction=True)
async def test_a_database_error_in_a_protected_view_is_503_async(token_for):
    from asgiref.sync import sync_to_async

    client, token = AsyncClient(), token_for("u-1")
    with chat_settings(KEY_CACHE_SECONDS=3600):
        assert (await client.get(MESSAGES, headers=bearer(token))).status_code == 200
        # Sync views run in asgiref's one sync thread: the database goes down there.
        down = await sync_to_async(lambda: connection.execute_wrapper(_refuse_every_query))()
        await sync_to_async(down.__enter__)()
        try:
            response = await client.get(MESSAGES, headers=bearer(token))
        finally:
            await sync_to_async(down.__exit__)(None, None, None)
    _assert_database_unavailable(response)


def test_process_exception_answers_only_for_protected_paths_and_the_database():
    hook = ChatSecurityMiddleware(lambda request: HttpResponse()).process_exception
    protected, elsewhere = RequestFactory().get(WHOAMI), RequestFactory().get("/pages/tag")
    for error in (OperationalError("down"), InterfaceError("closed"), DatabaseError("x")):
        response = hook(protected, error)
        assert response.status_code == 503
        assert json.loads(response.content)["detail"] == middleware.DATABASE_UNAVAILABLE
        assert hook(elsewhere, error) is None  # the project's business (the demo answers 503)
    store = hook(protected, KeyStoreUnavailable("down"))
    assert store.status_code == 503
    assert json.loads(store.content)["detail"] == middleware.KEY_STORE_UNAVAILABLE
    assert hook(protected, ValueError("a bug")) is None  # a 500 stays a 500


# -- sessions and cost ----------------------------------------------------------------


@pytest.mark.django_db
def test_cookie_less_bearer_request_creates_no_session(token_for):
    response = Client().get(WHOAMI, headers=bearer(token_for("u-1")))
    assert response.status_code == 200
    assert "sessionid" not in response.cookies
    assert Session.objects.count() == 0


@pytest.mark.django_db
def test_stale_session_cookie_creates_no_session(token_for):
    client = Client()
    client.cookies["sessionid"] = "no-such-session-key-0123456789abcdef"
    response = client.get(WHOAMI, headers=bearer(token_for("u-1")))
    assert response.status_code == 200
    assert Session.objects.count() == 0


@pytest.mark.django_db
def test_existing_session_is_bound_once(alice, token_for):
    client = Client()
    client.force_login(alice)
    client.get(WHOAMI, headers=bearer(token_for("alice-id")))
    session = Session.objects.get()
    assert session.get_decoded()[SUBJECT_SESSION_KEY] == "alice-id"


@pytest.mark.django_db
def test_warm_verified_request_makes_no_query(token_for, django_assert_num_queries):
    client = Client()
    token = token_for("u-1")
    assert client.get(WHOAMI, headers=bearer(token)).status_code == 200  # warms the key snapshot
    with django_assert_num_queries(0):
        response = client.get(WHOAMI, headers=bearer(token))
    assert response.json()["user_id"] == "u-1"


@pytest.mark.django_db
def test_traffic_is_counted_in_memory(monkeypatch, secret, token_for, clock):
    seen = []
    monkeypatch.setattr(usage, "record_traffic", lambda outcome, *_args: seen.append(outcome))
    monkeypatch.setattr(usage, "record_signed", lambda kid, *_args: seen.append("signed"))
    client = Client()
    client.get(WHOAMI, headers=bearer(token_for("u-1")))
    client.get(WHOAMI)
    client.get(WHOAMI, headers={"Authorization": CASES["expired"](secret, clock)})
    security_off()
    client.get(WHOAMI)
    assert seen == ["signed", "missing_token", "expired", "unsigned"]


# -- anonymous ids --------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_id_cookie(secret):
    security_off()
    client = Client()
    with chat_settings(ANONYMOUS_IDS=True):
        first = client.get(WHOAMI)
        anon_id = first.json()["anonymous_id"]
        cookie = first.cookies["chat_anonymous_id"]
        assert cookie.value == anon_id and ANONYMOUS_ID_RE.fullmatch(anon_id)
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        assert int(cookie["max-age"]) >= 30 * 24 * 3600
        assert "private" in first["Cache-Control"]
        second = client.get(WHOAMI)
        assert second.json()["anonymous_id"] == anon_id
        assert "chat_anonymous_id" not in second.cookies
        client.cookies["chat_anonymous_id"] = "anon-<script>"
        replaced = client.get(WHOAMI)
        assert replaced.json()["anonymous_id"] not in (anon_id, "anon-<script>")
    assert Client().get(WHOAMI).json()["anonymous_id"] is None


# -- direct use -----------------------------------------------------------------------


def test_sync_and_async_capability():
    def sync_view(request):
        return HttpResponse()

    async def async_view(request):
        return HttpResponse()

    from asgiref.sync import iscoroutinefunction

    assert ChatSecurityMiddleware.sync_capable and ChatSecurityMiddleware.async_capable
    assert not iscoroutinefunction(ChatSecurityMiddleware(sync_view))
    assert iscoroutinefunction(ChatSecurityMiddleware(async_view))


@pytest.mark.django_db
def test_direct_instantiation_rejects_before_the_view(secret):
    called = []

    def view(request):
        called.append(request)
        return HttpResponse("ok")

    request = RequestFactory().get(WHOAMI)
    response = ChatSecurityMiddleware(view)(request)
    assert response.status_code == 401 and not called


def test_identity_contact_is_lazy_and_cached(monkeypatch):
    import chat_security.identity as identity_module

    calls = []
    monkeypatch.setattr(
        identity_module, "contact_for", lambda ident: calls.append(ident) or "C", raising=False
    )
    identity = ChatIdentity(user_id="u-1", claims={"email": "x@example.com"}, kid="k")
    assert calls == []
    assert identity.contact == "C" and identity.contact == "C"
    assert calls == [identity]
    assert "x@example.com" not in repr(identity)
    anonymous = ChatIdentity.anonymous_visitor("anon-x")
    assert anonymous.anonymous and anonymous.user_id is None and not anonymous.is_verified


# -- ASGI: checked on the event loop when no database is needed (issue 12) ----------------


@pytest.fixture
def thread_hop(monkeypatch):
    """Records each time the middleware hands a check to the sync thread."""
    hops = []
    real = middleware.sync_to_async

    def recording(func, **kwargs):
        hops.append(func.__name__)
        return real(func, **kwargs)

    monkeypatch.setattr(middleware, "sync_to_async", recording)
    return hops


async def _warm(token):
    from asgiref.sync import sync_to_async

    await sync_to_async(tokens.verify)(token)  # the snapshot is loaded, the token known


@pytest.mark.django_db(transaction=True)
async def test_async_request_is_checked_on_the_event_loop(secret, token_for, thread_hop):
    token = token_for("u-7")
    await _warm(token)
    for _ in range(3):
        response = await AsyncClient().get(AWHOAMI, headers=bearer(token))
        assert response.status_code == 200 and response.json()["user_id"] == "u-7"
    missing = await AsyncClient().get(AWHOAMI)
    assert missing.json()["error"] == "missing_token"
    assert thread_hop == []


@pytest.mark.django_db(transaction=True)
async def test_async_request_goes_to_the_thread_when_a_query_is_due(secret, token_for, thread_hop):
    token = token_for("u-7")
    await _warm(token)
    keyring._State.checked_at = -1e9  # the version check is due
    response = await AsyncClient().get(AWHOAMI, headers=bearer(token))
    assert response.status_code == 200 and thread_hop == ["check"]


@pytest.mark.django_db(transaction=True)
async def test_async_request_with_a_session_cookie_goes_to_the_thread(
    secret, token_for, thread_hop
):
    token = token_for("u-7")
    await _warm(token)
    client = AsyncClient()
    client.cookies[settings.SESSION_COOKIE_NAME] = "a-session-key"
    response = await client.get(AWHOAMI, headers=bearer(token))
    assert response.status_code == 200 and thread_hop == ["check"]


@pytest.mark.django_db(transaction=True)
async def test_a_query_met_on_the_event_loop_is_retried_in_the_thread(
    secret, token_for, thread_hop, monkeypatch
):
    from django.core.exceptions import SynchronousOnlyOperation

    token = token_for("u-7")
    await _warm(token)
    real = tokens.verify_at

    def query_on_the_loop(*args, **kwargs):
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return real(*args, **kwargs)  # in the thread
        raise SynchronousOnlyOperation("You cannot call this from an async context")

    monkeypatch.setattr(tokens, "verify_at", query_on_the_loop)
    response = await AsyncClient().get(AWHOAMI, headers=bearer(token))
    assert response.status_code == 200 and response.json()["user_id"] == "u-7"
    assert thread_hop == ["check"]


@given(st.text(alphabet=" \tBearerbx.,=-_aé\x00", max_size=24))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_usual_bearer_form_reads_as_the_general_rules_read_it(value):
    """The fast path for "Bearer <token>" answers as the general rules do: a leading
    space takes the general path, and changes nothing else."""
    from chat_security.exceptions import TokenError

    def outcome(header):
        try:
            return bearer_token(header)
        except TokenError as exc:
            return exc.code

    assert outcome(value) == outcome(" " + value)
    assert outcome("Bearer " + value) == outcome(" Bearer " + value)
