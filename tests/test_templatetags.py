from __future__ import annotations

import logging
import re

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.template import Context, Template
from django.test import Client, RequestFactory

from chat_security import tokens
from chat_security.marks import NEW_ANONYMOUS_ID, PRIVATE_FLAG
from chat_security.templatetags.chat_security import script_string
from tests import chat_helpers
from tests.chat_helpers import REFUSED_BUILDERS, chat_settings, security_off

pytestmark = pytest.mark.urls("tests.chat_urls")
secret, alice, bob = chat_helpers.secret, chat_helpers.alice, chat_helpers.bob

SCRIPT = re.compile(r'<script>var ConvrsUser = "([A-Za-z0-9_.-]+)";</script>')


def render(source: str, request) -> str:
    return Template("{% load chat_security %}" + source).render(Context({"request": request}))


def request_for(user):
    request = RequestFactory().get("/")
    request.user = user
    request.session = SessionStore()
    return request


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


# -- what the tag writes ----------------------------------------------------------------


@pytest.mark.django_db
def test_logged_in_user_gets_a_script_with_a_verifiable_token(alice, secret):
    request = request_for(alice)
    html = render("{% chat_identity_token %}", request)
    match = SCRIPT.fullmatch(html)
    assert match, html
    verified = tokens.verify(match.group(1))
    assert verified.user_id == str(alice.pk)
    assert verified.header["kid"] == secret[0].kid
    assert getattr(request, PRIVATE_FLAG) is True
    assert request._cache_update_cache is False


@pytest.mark.django_db
def test_variable_name_and_nonce(alice, secret):
    with chat_settings(JS_VARIABLE="SiteChatUser"):
        html = render('{% chat_identity_token nonce="n0nce" %}', request_for(alice))
        assert html.startswith('<script nonce="n0nce">var SiteChatUser = "')
        assert render("{% chat_js_variable %}", request_for(alice)) == "SiteChatUser"


@pytest.mark.django_db
def test_nonce_is_escaped_and_taken_from_the_request(alice, secret):
    html = render("{% chat_identity_token nonce=missing_variable %}", request_for(alice))
    assert html.startswith("<script>")  # an unresolved variable is no nonce
    request = request_for(alice)
    request.csp_nonce = 'a"><b'
    html = render("{% chat_identity_token %}", request)
    assert html.startswith('<script nonce="a&quot;&gt;&lt;b">')


@pytest.mark.django_db
def test_a_bad_variable_name_writes_nothing(alice, secret):
    with chat_settings(JS_VARIABLE="x;alert(1)//"):
        assert render("{% chat_identity_token %}", request_for(alice)) == ""


def test_script_string_is_safe_inside_a_script_element():
    out = script_string('</script><!-- & \u2028\u2029 "q" \\')
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in out
    assert out == ('"\\u003C/script\\u003E\\u003C!-- \\u0026 \\u2028\\u2029 \\"q\\" \\\\"')


@pytest.mark.django_db
def test_anonymous_user_gets_nothing(secret):
    request = request_for(AnonymousUser())
    assert render("{% chat_identity_token %}", request) == ""
    assert not getattr(request, PRIVATE_FLAG, False)
    assert not getattr(request, NEW_ANONYMOUS_ID, None)


@pytest.mark.django_db
def test_anonymous_ids_only_ensure_the_cookie(secret):
    request = request_for(AnonymousUser())
    with chat_settings(ANONYMOUS_IDS=True):
        assert render("{% chat_identity_token %}", request) == ""
    assert getattr(request, NEW_ANONYMOUS_ID).startswith("anon-")


def test_without_request_in_context_nothing_is_written():
    assert Template("{% load chat_security %}{% chat_identity_token %}").render(Context()) == ""


@pytest.mark.django_db
def test_without_an_active_secret_the_page_still_renders(alice):
    assert render("before{% chat_identity_token %}after", request_for(alice)) == "beforeafter"


@pytest.mark.django_db
@pytest.mark.parametrize("builder", REFUSED_BUILDERS.values(), ids=REFUSED_BUILDERS)
def test_claims_that_cannot_be_issued_still_render_the_page(builder, alice, secret, caplog):
    client = logged_in(alice)
    with chat_settings(CLAIMS_BUILDER=builder), caplog.at_level(logging.WARNING):
        html = render("before{% chat_identity_token %}after", request_for(alice))
        page = client.get("/pages/tag")
    assert html == "beforeafter"
    assert page.status_code == 200 and token_in(page) is None
    ours = [r for r in caplog.records if r.name.startswith("chat_security")]
    assert len(ours) == 2  # one line per page
    assert all("\n" not in r.getMessage() for r in ours)
    assert "2031" not in caplog.text  # no claim value


@pytest.mark.django_db
def test_no_signing_on_the_second_render(alice, secret, monkeypatch):
    calls = []
    real = tokens.issue
    monkeypatch.setattr(tokens, "issue", lambda *a, **k: calls.append(a) or real(*a, **k))
    request = request_for(alice)
    first = render("{% chat_identity_token %}", request)
    second = render("{% chat_identity_token %}", request)
    assert first == second
    assert len(calls) == 1


# -- Cache-Control on the way out --------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def token_in(response) -> str | None:
    match = SCRIPT.search(response.content.decode())
    return match.group(1) if match else None


def directives(response) -> set[str]:
    return {d.strip().split("=")[0] for d in response.get("Cache-Control", "").split(",") if d}


@pytest.mark.django_db
def test_page_with_token_is_private(alice, secret):
    response = logged_in(alice).get("/pages/tag")
    assert token_in(response)
    assert "private" in directives(response)


@pytest.mark.django_db
def test_public_view_with_token_ends_private(alice, secret):
    response = logged_in(alice).get("/pages/public-tag")
    assert token_in(response)
    cc = directives(response)
    assert "private" in cc and "public" not in cc and "s-maxage" not in cc
    assert "max-age" in cc  # the view's own browser caching stays


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["/pages/cached-tag", "/pages/cached-public-tag", "/pages/cached-template-response-tag"],
)
def test_cache_page_never_stores_a_token(url, alice, bob, secret):
    first = logged_in(alice).get(url)
    assert tokens.verify(token_in(first)).user_id == str(alice.pk)
    assert "private" in directives(first) and "public" not in directives(first)
    second = logged_in(bob).get(url)
    assert tokens.verify(token_in(second)).user_id == str(bob.pk)
    anonymous = Client().get(url)
    assert token_in(anonymous) is None


@pytest.mark.django_db
def test_site_wide_cache_middleware_never_stores_a_token(alice, bob, secret, settings):
    settings.MIDDLEWARE = [
        "django.middleware.cache.UpdateCacheMiddleware",
        *settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ]
    first = logged_in(alice).get("/pages/tag")
    assert "private" in directives(first)
    second = logged_in(bob).get("/pages/tag")
    assert tokens.verify(token_in(second)).user_id == str(bob.pk)


@pytest.mark.django_db
def test_pages_without_the_tag_are_untouched(alice, secret):
    client = logged_in(alice)
    public = client.get("/pages/public-plain")
    assert public["Cache-Control"] == "public, max-age=600"
    cached = client.get("/pages/cached-plain")
    assert "private" not in directives(cached) and "max-age" in directives(cached)


@pytest.mark.django_db
def test_anonymous_page_with_the_tag_stays_cacheable(secret):
    response = Client().get("/pages/cached-tag")
    assert token_in(response) is None
    assert "private" not in directives(response)


@pytest.mark.django_db
def test_anonymous_id_cookie_page_is_private(secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        first = Client().get("/pages/public-tag")
        assert first.cookies["chat_anonymous_id"].value.startswith("anon-")
        assert "private" in directives(first) and "public" not in directives(first)
        assert token_in(first) is None
