"""The panel's key sources (SPEC §14): an integration's keys from its identity provider.

A real HTTP server on 127.0.0.1 (tests/jwks_server.py) plays the provider;
the panel's form, *Refresh now* and *Remove key source* call the same
``remote.sources`` functions as the CLI, and the section shows what they stored.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat_security.models import AuditEntry, Integration, KeySource, SecurityConfig
from chat_security.remote import sources
from tests.jwks_server import jwks_server
from tests.test_admin import _Ids, errors
from tests.test_admin_permissions import BASE, client_for
from tests.test_remote_keys import AUDIENCE, Provider, private_hosts

__all__ = ["jwks_server", "private_hosts"]
pytestmark = pytest.mark.django_db

ADD = BASE + "key-source/add/"
REFRESH = BASE + "key-source/refresh/"
REMOVE = BASE + "key-source/remove/"
SECTION = "integration-idp-key-source"


@pytest.fixture
def provider(jwks_server, private_hosts, clock) -> Provider:
    """A provider publishing one RSA key ("k1") at /jwks, and integration ``idp`` (no source)."""
    SecurityConfig.load()
    Integration.objects.add("idp", audience=AUDIENCE, paths=["/idp/"], actor="setup")
    idp = Provider(jwks_server)
    idp.new_key("k1")
    return idp


@pytest.fixture
def admin(provider) -> Client:
    return client_for("admin")


@pytest.fixture
def with_source(provider) -> Provider:
    """``idp`` takes its keys from the provider (added as the CLI would)."""
    sources.add_jwks_url(provider.server.url(), "idp", actor="setup")
    return provider


def section(content: str, anchor: str = SECTION) -> str:
    """The HTML of one key-source section of the panel."""
    match = re.search(rf'<section [^>]*id="{anchor}".*?</section>', content, re.S)
    assert match, f"no section {anchor}"
    return match.group(0)


def panel(client: Client, anchor: str = SECTION) -> str:
    response = client.get(BASE)
    assert response.status_code == 200
    return section(response.content.decode(), anchor)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def fetched_rows(html: str) -> list[list[str]]:
    """The fetched-keys table's rows, each cell's text."""
    table = re.search(r'<table class="chat-keys chat-fetched-keys">.*?</table>', html, re.S)
    assert table
    body = table.group(0).split("<tbody>")[1]
    return [
        [
            re.sub(r"<[^>]+>|\s+", " ", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


# -- adding a source through the form ------------------------------------------------------


def test_an_admin_adds_a_jwks_url_and_sees_its_keys(admin, provider):
    fresh = panel(admin)
    assert "Take keys from an identity provider" in fresh
    assert 'name="url"' in fresh and 'value="idp"' in fresh

    response = admin.post(
        ADD, {"integration": "idp", "kind": "jwks_url", "url": provider.server.url()}
    )

    assert response.status_code == 302
    assert response["Location"] == f"{BASE}#{SECTION}"
    assert messages_of(response) == [
        f"Keys of idp are now taken from {provider.server.url()}: 1 fetched (k1)."
    ]
    source = KeySource.objects.get(integration__name="idp")
    assert source.created_by == "admin" and source.kind == "jwks_url"
    assert AuditEntry.objects.filter(action="add_key_source", actor="admin").exists()
    html = panel(admin)
    assert "Take keys from an identity provider" not in html  # one source per integration
    assert f'JWKS URL: <code class="chat-url">{provider.server.url()}</code>' in html
    assert "Key set (jwks_uri)" not in html  # the same URL
    [row] = fetched_rows(html)
    thumbprint = source.keys[0]["thumbprint"]
    assert row == ["k1", "RSA", "RS256", thumbprint, "2027-01-15 08:00 UTC", "active"]
    assert '<span class="chat-badge chat-badge-active">ok</span>' in html
    assert "Refresh now" in html and "Remove key source…" in html


def test_an_admin_adds_an_openid_connect_issuer_for_default(admin, provider):
    issuer = provider.server.url("/realms/shop")
    provider.server.set_route(
        "/realms/shop/.well-known/openid-configuration",
        json={"issuer": issuer, "jwks_uri": provider.server.url()},
    )
    response = admin.post(ADD, {"kind": "oidc_issuer", "url": issuer})  # no name: default

    assert response.status_code == 302 and response["Location"] == f"{BASE}#key-source"
    assert messages_of(response) == [
        f"Keys are now taken from {issuer}: 1 fetched (k1). Its tokens must carry iss {issuer}."
    ]
    content = admin.get(BASE).content.decode()
    html = section(content, "key-source")
    assert f'OpenID Connect issuer: <code class="chat-url">{issuer}</code>' in html
    assert f'<code class="chat-url">{provider.server.url()}</code>' in html  # the jwks_uri
    assert f"<code>{issuer}</code>" in html  # the discovered issuer
    # default's issuer is the provider's now (as the engine takes it), said so in its facts
    facts = re.search(
        r'<section class="module chat-section chat-integration-facts".*?</section>', content, re.S
    )
    assert f"<code>{issuer}</code>" in facts.group(0)
    assert "(its identity provider's)" in facts.group(0)


def refusal(admin, data: dict[str, str]) -> str:
    """POST the form; the refusal must be the panel (200) with the form's error, nothing stored."""
    before = (KeySource.objects.count(), AuditEntry.objects.count())
    response = admin.post(ADD, {"integration": "idp", **data})
    assert response.status_code == 200
    content = response.content.decode()
    assert content.count("<title>Error:") == 1
    assert (KeySource.objects.count(), AuditEntry.objects.count()) == before
    [message] = [unescape(e) for e in errors(response)]  # one error, on the form, one line
    assert "\n" not in message
    html = section(content)
    assert message in unescape(html)
    return message


def test_a_fetch_that_fails_is_one_line_on_the_form(admin, provider):
    provider.server.set_route("/missing", status=404, body="<html>no such page</html>")
    url = provider.server.url("/missing")
    message = refusal(admin, {"kind": "jwks_url", "url": url})
    assert message == f"{url} answered 404, not 200."
    page = admin.post(ADD, {"integration": "idp", "kind": "jwks_url", "url": url}).content.decode()
    assert f'value="{url}"' in section(page)  # the URL stays in the field to correct


def test_a_private_address_is_refused_unless_listed(admin, provider, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "JWKS_PRIVATE_HOSTS": []}
    fetches = provider.server.count()
    message = refusal(admin, {"kind": "jwks_url", "url": provider.server.url()})
    assert "http:// is refused" in message
    message = refusal(
        admin, {"kind": "jwks_url", "url": provider.server.url().replace("http:", "https:")}
    )
    assert "127.0.0.1" in message and "loopback" in message
    assert provider.server.count() == fetches  # refused before connecting


def test_an_issuer_mismatch_is_refused(admin, provider):
    issuer = provider.server.url("/realms/shop")
    provider.server.set_route(
        "/realms/shop/.well-known/openid-configuration",
        json={"issuer": "https://elsewhere.example", "jwks_uri": provider.server.url()},
    )
    message = refusal(admin, {"kind": "oidc_issuer", "url": issuer})
    assert message.startswith("The discovery document names the issuer 'https://elsewhere.example'")
    assert provider.server.count("/realms/shop/.well-known/openid-configuration") == 1
    assert provider.server.count() == 0  # the key set was never fetched


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"not": "a key set"}, 'The answer is not a JWKS (a JSON object with a "keys" list).'),
        (
            {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]},
            "The key set holds no usable signing key",
        ),
    ],
)
def test_a_document_without_usable_keys_is_refused(admin, provider, document, expected):
    provider.server.set_jwks(document, "/odd")
    message = refusal(admin, {"kind": "jwks_url", "url": provider.server.url("/odd")})
    assert message.startswith(expected)


def test_a_second_source_is_refused_on_the_form(admin, with_source):
    message = refusal(admin, {"kind": "jwks_url", "url": with_source.server.url()})
    assert message == (
        f"Integration idp already takes its keys from {with_source.server.url()}; "
        "run remove-key-source first."
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "jwks_url", "url": ""}, "url"),
        ({"kind": "x509", "url": "https://idp.example/"}, "kind"),
    ],
)
def test_the_forms_own_checks(admin, provider, data, field):
    fetches = provider.server.count()
    refusal(admin, data)
    assert provider.server.count() == fetches


def test_an_unknown_integration_changes_nothing(admin, provider):
    fetches = provider.server.count()
    for url in (ADD, REFRESH, REMOVE):
        response = admin.post(
            url,
            {
                "integration": "gone",
                "kind": "jwks_url",
                "url": provider.server.url(),
                "confirm": "yes",
            },
        )
        assert response.status_code == 200
        assert errors(response) == ["No integration is named gone."]
    assert provider.server.count() == fetches and not KeySource.objects.exists()


# -- Refresh now ----------------------------------------------------------------------------


def test_refresh_now_shows_the_added_and_removed_kids(admin, with_source, clock):
    clock.advance(3600)
    with_source.new_key("k2", "EC")
    response = admin.post(REFRESH, {"integration": "idp"})
    assert response.status_code == 302 and response["Location"] == f"{BASE}#{SECTION}"
    assert messages_of(response) == ["Key set of idp fetched: added k2; removed none."]
    rows = fetched_rows(panel(admin))
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("k1", "RSA", "RS256", "2027-01-15 08:00 UTC"),
        ("k2", "EC", "ES256", "2027-01-15 09:00 UTC"),
    ]
    assert AuditEntry.objects.filter(
        action="refresh_keys", actor="admin", detail="ok for integration idp"
    ).exists()

    with_source.unpublish("k1")
    with_source.publish({"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"})
    response = admin.post(REFRESH, {"integration": "idp"})
    [message] = messages_of(response)
    assert message.startswith(
        "Key set of idp fetched: added none; removed k1. Skipped: kid 'enc-1'"
    )
    html = panel(admin)
    assert [r[0] for r in fetched_rows(html)] == ["k2"]
    assert '<ul class="chat-skipped"><li>kid &#x27;enc-1&#x27;: use &quot;enc&quot;' in html


def test_a_message_names_ten_kids_at_most(admin, with_source):
    many_keys(with_source, 25)
    [message] = messages_of(admin.post(REFRESH, {"integration": "idp"}))
    kids = ", ".join(f"ec-{i}" for i in range(10))
    assert message == f"Key set of idp fetched: added {kids} and 15 more; removed none."


def test_refresh_now_without_a_change(admin, with_source):
    response = admin.post(REFRESH, {"integration": "idp"})
    assert messages_of(response) == ["Key set of idp fetched: no change."]


def test_a_failing_refresh_shows_the_error_and_keeps_the_keys(admin, with_source, clock):
    clock.advance(600)
    with_source.server.set_route("/jwks", status=500, body="Internal Server Error")
    response = admin.post(REFRESH, {"integration": "idp"})

    assert response.status_code == 302 and response["Location"] == f"{BASE}#{SECTION}"
    url = with_source.server.url()
    assert messages_of(response) == [
        f"The key set of idp could not be fetched: {url} answered 500, not 200. "
        "The last good set stays in use."
    ]
    html = panel(admin)
    assert [r[0] for r in fetched_rows(html)] == ["k1"]  # still listed, still active
    assert fetched_rows(html)[0][-1] == "active"
    assert '<span class="chat-badge chat-badge-revoked">error</span>' in html
    assert f'<span class="chat-fetch-error">{url} answered 500, not 200.</span>' in html
    assert re.search(r'class="chat-fetched">2027-01-15 08:00 UTC', html)  # the last good one
    assert re.search(r'class="chat-attempted">2027-01-15 08:10 UTC', html)
    assert "stays in use until 2027-01-16 08:00 UTC (JWKS_MAX_STALE)" in html
    assert AuditEntry.objects.filter(action="refresh_keys", detail__startswith="error:").exists()


def test_a_set_past_max_stale_is_said_to_answer_503(admin, with_source, clock):
    with_source.server.set_route("/jwks", status=503, body="")
    clock.advance(86400 + 1)
    admin.post(REFRESH, {"integration": "idp"})
    html = panel(admin)
    assert fetched_rows(html)[0][-1] == "stale"
    assert 'class="chat-warning chat-stale" role="alert"' in html
    assert "answers 503 (unavailable) until a fetch succeeds" in html


def test_refresh_without_a_source_says_so(admin, provider):
    response = admin.post(REFRESH, {"integration": "idp"})
    assert response.status_code == 200
    assert errors(response) == ["Integration idp has no key source."]


# -- Remove key source ----------------------------------------------------------------------


def test_remove_asks_for_confirmation_then_removes(admin, with_source):
    url = with_source.server.url()
    response = admin.post(REMOVE, {"integration": "idp"})
    assert response.status_code == 200
    content = response.content.decode()
    assert f"<h1>Remove the key source of idp, {url}?</h1>" in content
    assert "Developer – WebChat</a>\n&rsaquo; Remove key source" in content
    assert "Its fetched keys (k1) stop verifying at once" in content
    assert '<input type="hidden" name="confirm" value="yes">' in content
    assert '<input type="hidden" name="integration" value="idp">' in content
    assert KeySource.objects.exists()  # nothing removed yet

    response = admin.post(REMOVE, {"integration": "idp", "confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == f"{BASE}#{SECTION}"
    assert messages_of(response) == [f"Keys of idp are no longer taken from {url}."]
    assert not KeySource.objects.exists()
    assert AuditEntry.objects.filter(action="remove_key_source", actor="admin").exists()
    assert "Take keys from an identity provider" in panel(admin)  # the form is back

    response = admin.post(REMOVE, {"integration": "idp", "confirm": "yes"})  # again: nothing to do
    assert response.status_code == 200
    assert errors(response) == ["Integration idp has no key source."]


def test_removing_an_oidc_source_of_default_says_what_happens_to_the_issuer(admin, provider):
    issuer = provider.server.url("/realms/shop")
    provider.server.set_route(
        "/realms/shop/.well-known/openid-configuration",
        json={"issuer": issuer, "jwks_uri": provider.server.url()},
    )
    sources.add_oidc_issuer(issuer, actor="setup")
    content = admin.post(REMOVE, {}).content.decode()
    assert f"The issuer {issuer} came from this provider" in content


# -- who may do what ------------------------------------------------------------------------


def state() -> tuple:
    return (
        list(
            KeySource.objects.values_list(
                "integration__name", "url", "keys", "outcome", "attempted_at"
            )
        ),
        AuditEntry.objects.count(),
    )


@pytest.mark.parametrize("role", ["anonymous", "staff", "support"])
@pytest.mark.parametrize("url", [ADD, REFRESH, REMOVE])
def test_only_key_managers_may_change_a_source(role, url, with_source):
    other = with_source.server.url("/other")
    with_source.server.set_jwks({"keys": [with_source.jwk("k1")]}, "/other")
    before, fetches = state(), with_source.server.count() + with_source.server.count("/other")
    data = {"integration": "idp", "kind": "jwks_url", "url": other, "confirm": "yes"}
    response = client_for(role).post(url, data)
    assert response.status_code == (302 if role == "anonymous" else 403)
    if role == "anonymous":
        assert response["Location"].startswith("/admin/login/")
    assert state() == before
    assert with_source.server.count() + with_source.server.count("/other") == fetches


@pytest.mark.parametrize("url", [ADD, REFRESH, REMOVE])
def test_a_get_changes_nothing(url, with_source):
    before = state()
    response = client_for("admin").get(url, {"integration": "idp", "confirm": "yes"})
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert state() == before


def test_support_staff_see_the_source_and_its_keys_but_no_button(with_source):
    content = client_for("support").get(BASE).content.decode()
    html = section(content)
    assert with_source.server.url() in html
    assert [r[0] for r in fetched_rows(html)] == ["k1"]
    assert "Last good fetch" in html
    assert "<form" not in html and "Refresh now" not in html and "Remove key source" not in html
    assert "key-source/" not in content  # no form posts there
    assert 'id="test-token"' in content  # and the tester, as before


def test_support_staff_see_nothing_of_integrations_without_a_source(provider):
    content = client_for("support").get(BASE).content.decode()
    assert "key-source" not in content and "Take keys from" not in content


@pytest.mark.parametrize("url", [ADD, REFRESH, REMOVE])
def test_csrf_is_enforced(url, with_source):
    if url == ADD:
        sources.remove("idp", "setup")
    client = client_for("admin", enforce_csrf_checks=True)
    data = {
        "integration": "idp",
        "kind": "jwks_url",
        "url": with_source.server.url(),
        "confirm": "yes",
    }
    before, fetches = state(), with_source.server.count()
    response = client.post(url, data)
    assert response.status_code == 403 and b"CSRF" in response.content
    assert state() == before and with_source.server.count() == fetches
    client.get(BASE)  # the same request with the form's token goes through
    response = client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert response.status_code == 302
    assert state() != before


# -- one query for all sources, none per key ------------------------------------------------


def many_keys(provider: Provider, count: int) -> None:
    for i in range(count):
        provider.published.append(provider.new_key(f"ec-{i}", "EC", publish=False))
    provider.publish()


@pytest.mark.parametrize("role", ["admin", "support"])
def test_the_panels_queries_do_not_grow_with_the_fetched_keys(
    role, with_source, django_assert_num_queries
):
    client = client_for(role)
    client.get(BASE)  # warms the session
    with CaptureQueriesContext(connection) as one_key:
        client.get(BASE)
    queries = len(one_key)  # now: the next request resets the connection's query log
    source_queries = [q["sql"] for q in one_key.captured_queries if "keysource" in q["sql"]]
    assert len(source_queries) == 1 and "INNER JOIN" in source_queries[0]  # select_related

    Integration.objects.add("brand-b", actor="setup")
    with_source.server.set_jwks({"keys": [with_source.jwk("k1")]}, "/b")
    sources.add_jwks_url(with_source.server.url("/b"), "brand-b", actor="setup")
    many_keys(with_source, 40)
    assert sources.refresh("idp").added
    client.get(BASE)
    with django_assert_num_queries(queries):
        content = client.get(BASE).content.decode()
    assert len(fetched_rows(section(content))) == 41
    assert len(fetched_rows(section(content, "integration-brand-b-key-source"))) == 1


# -- an integration with a key source and no pasted key -------------------------------------


def test_the_page_stays_well_formed_with_sources_and_forms(admin, with_source):
    Integration.objects.add("ios", actor="setup")  # ios and default show the form, idp its source
    page = _Ids()
    page.feed(admin.get(BASE).content.decode())
    assert {"id_source_url", "id_ios__source_url", "id_ios__source_kind", SECTION} <= set(page.ids)
    assert [i for i in set(page.ids) if page.ids.count(i) > 1] == []
    assert set(page.references) <= set(page.ids)


def test_an_integration_with_only_a_source_is_configured(admin, with_source, clock):
    """Its switch gives no "no usable key" warning, and the tester names the IdP key."""
    Integration.objects.filter(name="idp").update(enabled=False)
    response = admin.post(BASE + "security/", {"integration": "idp", "enabled": "on"})
    assert messages_of(response) == ["Web chat security for idp is now on."]

    token = with_source.token("k1", clock)
    response = admin.post(BASE + "test-token/", {"token": token, "integration": "idp"})
    content = response.content.decode()
    assert "Valid token" in content
    signer = re.search(r'<dd class="chat-signer">(.*?)</dd>', content, re.S).group(1)
    assert "<code>k1</code>" in signer and "idp" in signer
    usage = section(content, "usage")
    assert "No usable keys yet." not in usage  # the fetched keys are usable
    assert "Keys fetched from an identity provider are listed in its section" in usage


def test_removing_an_integration_says_its_key_source_goes_with_it(admin, with_source):
    content = admin.post(BASE + "integration/remove/", {"integration": "idp"}).content.decode()
    assert f"It takes its keys from {with_source.server.url()}: that key source goes with it" in (
        content
    )
    assert KeySource.objects.exists()  # the confirmation page changes nothing
