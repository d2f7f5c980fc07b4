"""The Developer – WebChat admin panel: what each section does and shows."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from django.contrib import admin
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path
from joserfc.jwk import RSAKey

from chat_security import tokens, usage, views
from chat_security.exceptions import TokenError
from chat_security.models import (
    AuditEntry,
    Integration,
    Key,
    KeyKind,
    RevokedUser,
    SecurityConfig,
    TrafficStat,
)
from tests import tokencraft as tc
from tests.chat_helpers import stored_secret
from tests.test_admin_permissions import BASE, REVOKED, client_for

pytestmark = pytest.mark.django_db

# This module doubles as a URLconf that routes the JWKS view (see test_jwks_url_*).
urlpatterns = [
    path("admin/", admin.site.urls),
    path(".well-known/chat-security/jwks.json", views.jwks),
]


@pytest.fixture
def admin_client_(clock) -> Client:
    SecurityConfig.load()
    return client_for("admin")


def generate(client: Client) -> tuple[Key, str]:
    response = client.post(BASE + "secret/generate/")
    assert response.status_code == 200
    key = Key.objects.filter(kind=KeyKind.SECRET).latest("created_at")
    match = re.search(r'id="new-secret"[^>]*value="([^"]+)"', response.content.decode())
    return key, match.group(1)


def errors(response) -> list[str]:
    return re.findall(
        r'<ul class="errorlist[^"]*"[^>]*>\s*<li>(.*?)</li>', response.content.decode()
    )


def store_state() -> tuple:
    rows = sorted((k.kid, str(k.state()), k.grace_until, k.revoked_at) for k in Key.objects.all())
    revoked = sorted(RevokedUser.objects.values_list("user_id", "revoked_at", "first_revoked_at"))
    integrations = sorted(
        Integration.objects.values_list("name", "enabled", "issuer", "audience", "user_space")
    )
    return rows, revoked, integrations, SecurityConfig.load().enabled, AuditEntry.objects.count()


# -- the page -----------------------------------------------------------------------


class _Ids(HTMLParser):
    """Every id attribute, and every label's and aria-describedby's target."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.append(value)
            if value and (name == "aria-describedby" or (tag == "label" and name == "for")):
                self.references.extend(value.split())


def test_panel_html_ids_are_unique_and_every_label_finds_its_field(admin_client_):
    """Issue 17, item 9: both grace-hours fields were id_grace_hours."""
    generate(admin_client_)
    Key.objects.generate_service_keypair("t")  # both forms show a grace field
    page = _Ids()
    page.feed(admin_client_.get(BASE).content.decode())
    assert "id_grace_hours" in page.ids and "id_service_grace_hours" in page.ids
    assert [i for i in set(page.ids) if page.ids.count(i) > 1] == []
    assert set(page.references) <= set(page.ids)


def test_panel_is_a_proper_admin_page(admin_client_):
    response = admin_client_.get(BASE)
    content = response.content.decode()
    assert response.status_code == 200
    assert "<title>Developer – WebChat | Django site admin</title>" in content
    assert "<h1>Developer – WebChat</h1>" in content
    assert re.search(
        r'<div class="breadcrumbs">\s*<a href="/admin/">Home</a>\s*&rsaquo; '
        r'<a href="/admin/chat_security/">Web chat security</a>\s*&rsaquo; Developer – WebChat',
        content,
    )
    assert "admin/css/dark_mode.css" in content  # the admin's own light/dark theme
    assert "chat_security/admin.css" in content
    for heading in (
        "Secure your web chat",
        "Signing secret (HS256)",
        "Your public key (RS256, ES256, EdDSA)",
        "Service key pair",
        "Test a JWT Token",
        "Usage",
        "Audit log",
    ):
        assert f">{heading}" in content
    assert "Cache-Control" in response.headers and "no-store" in response["Cache-Control"]


def test_page_needs_no_javascript(admin_client_):
    _key, _secret = generate(admin_client_)
    for response in (
        admin_client_.get(BASE),
        admin_client_.post(BASE + "secret/rotate/", {"grace_hours": "1"}),
    ):
        content = response.content.decode()
        scripts = re.findall(r"<script[^>]*>", content)
        assert all("src=" in s for s in scripts)  # no inline script: CSP-friendly
        assert "onclick" not in content
    assert re.search(r"<button[^>]*data-chat-copy[^>]*hidden", content)  # JS reveals it


def test_stylesheet_uses_admin_variables_for_dark_mode():
    css = Path("chat_security/static/chat_security/admin.css").read_text()
    assert "var(--" in css
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b", css)  # no hard-coded colours


# -- 1. Secure your web chat ------------------------------------------------------


def test_switching_off_asks_for_confirmation_first(admin_client_):
    response = admin_client_.post(BASE + "security/", {"enabled": "off"})
    content = response.content.decode()
    assert response.status_code == 200
    assert "Switch web chat security off?" in content
    assert "Anonymous access becomes possible" in content
    assert 'name="confirm" value="yes"' in content
    assert SecurityConfig.load().enabled is True
    assert not AuditEntry.objects.filter(action="security_off").exists()


def test_switching_off_and_on(admin_client_):
    response = admin_client_.post(
        BASE + "security/", {"enabled": "off", "confirm": "yes"}, follow=True
    )
    assert SecurityConfig.load().enabled is False
    assert "Web chat security is now off." in response.content.decode()
    assert "Anonymous access is possible" in response.content.decode()
    assert AuditEntry.objects.filter(action="security_off", actor="admin").count() == 1
    response = admin_client_.post(BASE + "security/", {"enabled": "on"}, follow=True)
    assert SecurityConfig.load().enabled is True
    assert "Web chat security is now on." in response.content.decode()
    assert "No usable signing key exists" in response.content.decode()
    generate(admin_client_)
    admin_client_.post(BASE + "security/", {"enabled": "off", "confirm": "yes"})
    response = admin_client_.post(BASE + "security/", {"enabled": "on"}, follow=True)
    assert "No usable signing key exists" not in response.content.decode()


# -- 2. Signing secret --------------------------------------------------------------


def test_generate_shows_the_secret_once_with_a_warning(admin_client_):
    response = admin_client_.post(BASE + "secret/generate/")
    key = Key.objects.get(kind=KeyKind.SECRET)
    content = response.content.decode()
    assert stored_secret(key) in content
    assert "it is shown only this once" in content
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]
    assert AuditEntry.objects.filter(action="generate_secret", kid=key.kid, actor="admin").exists()


def test_generate_when_an_active_secret_exists_is_an_inline_error(admin_client_):
    generate(admin_client_)
    before = store_state()
    response = admin_client_.post(BASE + "secret/generate/")
    assert response.status_code == 200
    assert any("use rotate-secret" in e for e in errors(response))
    assert store_state() == before


def test_secret_appears_in_exactly_one_response_body(admin_client_, caplog):
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []

    def fetch(response):
        bodies.append(response.content)
        return response

    key, secret = generate(admin_client_)
    # Everything the admin can look at afterwards:
    fetch(admin_client_.get(BASE))
    fetch(admin_client_.get("/admin/"))
    fetch(admin_client_.get("/admin/chat_security/"))
    fetch(admin_client_.get("/admin/chat_security/auditentry/"))
    for entry in AuditEntry.objects.all():
        fetch(admin_client_.get(f"/admin/chat_security/auditentry/{entry.pk}/change/"))
    fetch(admin_client_.post(BASE + "key/revoke/", {"kid": key.kid}))  # confirmation page
    fetch(admin_client_.post(BASE + "test-token/", {"token": tc.hs256(secret, {"sub": "u"})}))
    fetch(admin_client_.post(BASE + "secret/rotate/", {"grace_hours": "1"}))
    fetch(admin_client_.post(BASE + "security/", {"enabled": "off", "confirm": "yes"}, follow=True))
    fetch(admin_client_.get(BASE))
    assert all(secret.encode() not in body for body in bodies)
    assert secret not in caplog.text
    # Not in the session (messages) or cookies either.
    assert all(secret not in str(s.get_decoded()) for s in Session.objects.all())
    assert all(secret not in m.value for m in admin_client_.cookies.values())
    assert all(secret not in repr(e.__dict__) for e in AuditEntry.objects.all())


def test_rotate_shows_new_secret_and_until_when_the_old_one_works(admin_client_):
    old, old_secret = generate(admin_client_)
    response = admin_client_.post(BASE + "secret/rotate/", {"grace_hours": "5"})
    content = response.content.decode()
    new = Key.objects.filter(kind=KeyKind.SECRET).exclude(pk=old.pk).get()
    assert stored_secret(new) in content and old_secret not in content
    assert f"The previous secret <code>{old.kid}</code> is still accepted until" in content
    assert "<strong>2027-01-15 13:00 UTC</strong>" in content
    assert "no-store" in response["Cache-Control"]
    old.refresh_from_db()
    assert old.state() == "grace"


def test_rotate_uses_the_grace_period_setting_by_default(admin_client_):
    generate(admin_client_)
    panel = admin_client_.get(BASE).content.decode()
    assert re.search(r'name="grace_hours" value="48"', panel)
    with tc.chat_settings({"GRACE_PERIOD": 7200}):
        panel = admin_client_.get(BASE).content.decode()
    assert re.search(r'name="grace_hours" value="2"', panel)


def test_rotate_with_zero_grace_retires_at_once(admin_client_):
    old, _secret = generate(admin_client_)
    content = admin_client_.post(BASE + "secret/rotate/", {"grace_hours": "0"}).content.decode()
    assert "was retired at once" in content
    old.refresh_from_db()
    assert old.state() == "retired"


def test_secret_table_shows_prefix_and_fingerprint_only(admin_client_):
    key, secret = generate(admin_client_)
    content = admin_client_.get(BASE).content.decode()
    assert key.kid in content and f"<code>{secret[:6]}…</code>" in content
    assert key.fingerprint[:16] in content
    assert secret not in content


def test_revoke_needs_confirmation_then_revokes(admin_client_):
    key, _secret = generate(admin_client_)
    response = admin_client_.post(BASE + "key/revoke/", {"kid": key.kid})
    content = response.content.decode()
    assert response.status_code == 200
    assert f"Revoke signing secret (HS256) {key.kid}?" in content
    assert "It is your only usable signing secret" in content
    assert Key.objects.get(pk=key.pk).revoked_at is None
    response = admin_client_.post(
        BASE + "key/revoke/", {"kid": key.kid, "confirm": "yes"}, follow=True
    )
    assert f"Key {key.kid} was revoked." in response.content.decode()
    assert Key.objects.get(pk=key.pk).state() == "revoked"
    assert AuditEntry.objects.filter(action="revoke_key", kid=key.kid, actor="admin").exists()


@pytest.mark.parametrize(
    ("kid", "message"), [("nope", "No key has this kid."), ("", "This field is required.")]
)
def test_revoke_garbage_kid(admin_client_, kid, message):
    generate(admin_client_)
    before = store_state()
    response = admin_client_.post(BASE + "key/revoke/", {"kid": kid, "confirm": "yes"})
    assert response.status_code == 200
    assert any(message in e for e in errors(response))
    assert store_state() == before


def test_revoke_twice_is_an_inline_error(admin_client_):
    key, _secret = generate(admin_client_)
    Key.objects.revoke(key.kid)
    before = store_state()
    response = admin_client_.post(BASE + "key/revoke/", {"kid": key.kid, "confirm": "yes"})
    assert response.status_code == 200 and any("already revoked" in e for e in errors(response))
    assert store_state() == before


# -- 3. Client public keys ------------------------------------------------------------


def _private() -> rsa.RSAPrivateKey:
    return tc.rsa_key(1)


def _formats() -> dict[str, str]:
    key = _private()
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    fmt = serialization.PublicFormat
    enc = serialization.Encoding
    return {
        "spki": public.public_bytes(enc.PEM, fmt.SubjectPublicKeyInfo).decode(),
        "pkcs1": public.public_bytes(enc.PEM, fmt.PKCS1).decode(),
        "x509": cert.public_bytes(enc.PEM).decode(),
        "ssh": public.public_bytes(enc.OpenSSH, fmt.OpenSSH).decode() + " signer@example",
        "jwk": json.dumps(RSAKey.import_key(public).as_dict(private=False)),
    }


@pytest.mark.parametrize("fmt", ["spki", "pkcs1", "x509", "ssh", "jwk"])
def test_every_public_key_format_is_accepted(admin_client_, fmt):
    response = admin_client_.post(
        BASE + "public-key/add/", {"public_key": _formats()[fmt]}, follow=True
    )
    key = Key.objects.get(kind=KeyKind.PUBLIC_KEY)
    content = response.content.decode()
    assert f"Public key {key.kid} added (2048 bits)." in content
    assert key.fingerprint in content  # listed with its thumbprint
    assert AuditEntry.objects.filter(action="add_public_key", kid=key.kid).exists()


@pytest.mark.parametrize(
    "wrap", [json.dumps, lambda pem: pem.replace("\n", "\\n")], ids=["json", "escapes"]
)
def test_a_public_key_copied_from_a_json_config_is_accepted(admin_client_, wrap):
    """Issue 17, item 8: quotes and \\n escapes around a PEM are taken off."""
    spki = _formats()["spki"]
    admin_client_.post(BASE + "public-key/add/", {"public_key": wrap(spki)})
    assert Key.objects.get(kind=KeyKind.PUBLIC_KEY).public_pem == spki


def test_public_key_with_an_explicit_kid(admin_client_):
    admin_client_.post(
        BASE + "public-key/add/", {"public_key": _formats()["spki"], "kid": "site-2027"}
    )
    assert Key.objects.get(kind=KeyKind.PUBLIC_KEY).kid == "site-2027"


def _pem_private(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        (lambda: _pem_private(_private()), "This is a private key"),
        (lambda: tc.private_pem(_private()), "This is a private key"),
        (
            lambda: json.dumps(RSAKey.import_key(_private()).as_dict(private=True)),
            "This JWK contains a private key",
        ),
        (
            lambda: tc.public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "at least 2048 are required",
        ),
        (
            lambda: (
                ec.generate_private_key(ec.SECP384R1())
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            ),
            "EC keys must be on the P-256 curve (ES256); this one is on P-384",
        ),
        (lambda: "hello", "Unrecognised key format"),
        (lambda: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "could not be read"),
        (lambda: "{not json", "does not parse as JSON"),
        (lambda: "   ", "This field is required."),
        (lambda: "ab\x00cd", "Null characters are not allowed."),
    ],
)
def test_refused_keys_get_an_inline_error_and_nothing_is_stored(admin_client_, pasted, message):
    text = pasted()
    before = store_state()
    response = admin_client_.post(BASE + "public-key/add/", {"public_key": text})
    assert response.status_code == 200
    assert any(message in e for e in errors(response)), errors(response)
    assert store_state() == before
    if "PRIVATE" in text or '"d"' in text:
        body = response.content.decode()
        assert "PRIVATE KEY-----" not in body and '"d":' not in body  # never echoed back


def test_the_same_public_key_twice_and_bad_kids(admin_client_):
    pem = _formats()["spki"]
    admin_client_.post(BASE + "public-key/add/", {"public_key": pem})
    before = store_state()
    response = admin_client_.post(BASE + "public-key/add/", {"public_key": pem})
    assert any("already registered" in e for e in errors(response))
    response = admin_client_.post(BASE + "public-key/add/", {"public_key": pem, "kid": "has space"})
    assert any("letters, digits" in e for e in errors(response))
    response = admin_client_.post(BASE + "public-key/add/", {"public_key": pem, "kid": "k" * 101})
    assert response.status_code == 200 and errors(response)
    assert store_state() == before


def test_remove_public_key_is_a_confirmed_revoke(admin_client_):
    admin_client_.post(BASE + "public-key/add/", {"public_key": _formats()["spki"]})
    key = Key.objects.get(kind=KeyKind.PUBLIC_KEY)
    panel = admin_client_.get(BASE).content.decode()
    assert "Remove…" in panel
    confirm = admin_client_.post(BASE + "key/revoke/", {"kid": key.kid}).content.decode()
    assert "Tokens signed with the matching private key are refused from now on." in confirm
    admin_client_.post(BASE + "key/revoke/", {"kid": key.kid, "confirm": "yes"})
    assert Key.objects.get(pk=key.pk).state() == "revoked"


# -- 4. Service key pair ---------------------------------------------------------------------


def test_service_key_generate_rotate_and_download(admin_client_):
    response = admin_client_.post(
        BASE + "service-key/generate/", {"grace_hours": "48"}, follow=True
    )
    first = Key.objects.get(kind=KeyKind.SERVICE_KEY)
    assert f"Service key pair {first.kid} generated." in response.content.decode()
    response = admin_client_.post(BASE + "service-key/generate/", {"grace_hours": "2"}, follow=True)
    second = Key.objects.filter(kind=KeyKind.SERVICE_KEY).exclude(pk=first.pk).get()
    assert f"{first.kid} is accepted until 2027-01-15 10:00 UTC." in response.content.decode()

    pem = admin_client_.get(f"{BASE}service-key/{second.kid}/public.pem")
    assert pem["Content-Type"] == "application/x-pem-file"
    assert pem["Content-Disposition"] == f'attachment; filename="{second.kid}.pem"'
    assert pem.content.decode() == second.public_pem
    assert b"PRIVATE" not in pem.content

    jwk = admin_client_.get(f"{BASE}service-key/{second.kid}/public.jwk")
    data = json.loads(jwk.content)
    assert data["kty"] == "RSA" and data["kid"] == second.kid and data["alg"] == "RSA-OAEP-256"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(data)


def test_download_of_unknown_or_non_service_key_is_404(admin_client_):
    key, _secret = generate(admin_client_)
    assert admin_client_.get(f"{BASE}service-key/nope/public.pem").status_code == 404
    assert admin_client_.get(f"{BASE}service-key/{key.kid}/public.jwk").status_code == 404


class NoJwksUrls:
    urlpatterns = [path("admin/", admin.site.urls)]


@override_settings(ROOT_URLCONF=NoJwksUrls)
def test_jwks_url_hint_when_not_routed(admin_client_):
    content = admin_client_.get(BASE).content.decode()
    assert "not routed yet" in content and "/.well-known/chat-security/jwks.json" in content


@override_settings(ROOT_URLCONF="tests.test_admin")
def test_jwks_url_when_routed(admin_client_):
    content = admin_client_.get(BASE).content.decode()
    assert "http://testserver/.well-known/chat-security/jwks.json" in content


@pytest.mark.parametrize("grace", ["abc", "-1", "nan", "inf", "1e9", ""])
def test_garbage_grace_hours(admin_client_, grace):
    generate(admin_client_)
    Key.objects.generate_service_keypair()
    before = store_state()
    for url in ("secret/rotate/", "service-key/generate/"):
        response = admin_client_.post(BASE + url, {"grace_hours": grace})
        assert response.status_code == 200
        assert errors(response), url
        assert "Please correct the errors below." in response.content.decode()
    assert store_state() == before


@pytest.mark.parametrize("value", ["maybe", "", "ON", "1"])
def test_garbage_security_switch(admin_client_, value):
    before = store_state()
    response = admin_client_.post(BASE + "security/", {"enabled": value, "confirm": "yes"})
    assert response.status_code == 200 and errors(response)
    assert store_state() == before


# -- 5. Test a JWT Token ----------------------------------------------------------------------


def test_tester_valid_token(admin_client_, clock):
    key, secret = generate(admin_client_)
    token = tc.hs256(
        secret, {"sub": "user-7", "iat": int(clock.t) - 180, "exp": int(clock.t) + 42 * 60}
    )
    response = admin_client_.post(BASE + "test-token/", {"token": token})
    content = response.content.decode()
    assert response.status_code == 200
    assert "Valid token" in content and "<code>user-7</code>" in content
    assert "expires in 42 min" in content and "issued 3 min ago" in content
    assert f"signing secret <code>{key.kid}</code>" in content
    assert "&quot;sub&quot;: &quot;user-7&quot;" in content  # decoded payload, escaped
    assert AuditEntry.objects.filter(action="test_token", detail="valid", actor="admin").exists()
    usage.flush_usage()
    assert Key.objects.get(pk=key.pk).use_count == 0  # count_use=False


def test_tester_previews_the_contact_record(admin_client_, clock):
    _key, secret = generate(admin_client_)
    claims = {
        "sub": "user-8",
        "exp": int(clock.t) + 600,
        "name": "Ada Lovelace",
        "email": "not-an-address",
        "userData": {"plan": "gold"},
    }
    content = admin_client_.post(BASE + "test-token/", {"token": tc.hs256(secret, claims)})
    content = content.content.decode()
    assert "Contact record preview" in content
    assert re.search(r"<th scope=\"row\">first_name</th><td><code>Ada</code>", content)
    assert re.search(r"<th scope=\"row\">last_name</th><td><code>Lovelace</code>", content)
    assert "Ignored values" in content and "<code>email</code>:" in content


def test_tester_expired_token(admin_client_, clock):
    _key, secret = generate(admin_client_)
    token = tc.hs256(secret, {"sub": "u", "exp": int(clock.t) - 3 * 3600})
    content = admin_client_.post(BASE + "test-token/", {"token": token}).content.decode()
    assert "Invalid token:" in content and '<code class="chat-code">expired</code>' in content
    assert "The token has expired." in content
    assert "Expired 3 h ago at 05:00 UTC — issue a new token; recommended lifetime 1 h." in content


def test_tester_never_stores_or_logs_the_token(admin_client_, clock, caplog):
    caplog.set_level(logging.DEBUG)
    _key, secret = generate(admin_client_)
    token = tc.hs256(secret, {"sub": "private-user", "exp": int(clock.t) + 60})
    admin_client_.post(BASE + "test-token/", {"token": token})
    admin_client_.post(BASE + "test-token/", {"token": token[:-3] + "abc"})
    assert token not in caplog.text and token[:40] not in caplog.text
    newest_first = AuditEntry.objects.filter(action="test_token").order_by("-at", "-pk")
    entries = list(newest_first.values("kid", "detail"))
    assert entries == [{"kid": "", "detail": "invalid_signature"}, {"kid": "", "detail": "valid"}]
    assert all(token[:40] not in str(s.get_decoded()) for s in Session.objects.all())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "This field is required."),
        ("a\x00b", "Null characters are not allowed."),
        ("x" * 70000, "at most 65536"),
    ],
)
def test_tester_garbage_form_input(admin_client_, token, message):
    response = admin_client_.post(BASE + "test-token/", {"token": token})
    assert response.status_code == 200
    assert any(message in e for e in errors(response))
    assert not AuditEntry.objects.filter(action="test_token").exists()


@pytest.mark.parametrize("token", ["garbage!", "ü.ü.ü", "a.b.c", "...", "e30.e30.", "a\u2028b.c.d"])
def test_tester_undecodable_input(admin_client_, token):
    response = admin_client_.post(BASE + "test-token/", {"token": token})
    content = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'<code class="chat-code">(malformed|algorithm_not_allowed)</code>', content)


def test_tester_oversized_token_gets_the_engine_code(admin_client_):
    content = admin_client_.post(BASE + "test-token/", {"token": "a" * 9000}).content.decode()
    assert '<code class="chat-code">token_too_large</code>' in content
    assert "The token has 9000 bytes; the limit is 8192." in content


def test_tester_escapes_everything(admin_client_, clock):
    _key, secret = generate(admin_client_)
    token = tc.hs256(secret, {"sub": "<script>alert(1)</script>", "exp": int(clock.t) + 60})
    content = admin_client_.post(BASE + "test-token/", {"token": token}).content.decode()
    assert "<script>alert(1)" not in content


# -- 6. Usage -------------------------------------------------------------------------------


def test_usage_counts_are_flushed_before_showing(admin_client_, clock):
    key, _secret = generate(admin_client_)
    usage.record_use(key.kid)
    usage.record_use(key.kid)
    content = admin_client_.get(BASE).content.decode()
    assert Key.objects.get(pk=key.pk).use_count == 2
    assert re.search(r'<td class="chat-num">2</td>', content)
    assert "just now" in content


def test_idle_old_secret_note_says_what_is_known(admin_client_, clock):
    old, _secret = generate(admin_client_)
    usage.record_use(old.kid)
    clock.advance(60)
    admin_client_.post(BASE + "secret/rotate/", {"grace_hours": "48"})
    page = admin_client_.get(BASE).content.decode()
    # It says what the counters know, not that revoking is safe.
    assert "No use recorded since the rotation (just now); workers report use every 60 s" in page
    assert "safe to revoke" not in page
    clock.advance(60)
    usage.record_use(old.kid)
    page = admin_client_.get(BASE).content.decode()
    assert "Last use recorded just now; workers report use every 60 s" in page


def test_traffic_share_before_switching_on(admin_client_, clock):
    SecurityConfig.set_enabled(False, "test")
    for outcome, n in (("signed", 6), ("unsigned", 2), ("expired", 1), ("invalid_signature", 1)):
        for _ in range(n):
            usage.record_traffic(outcome)
    # An old bucket (more than 24 h ago) does not count.
    old_hour = dt.datetime.fromtimestamp((int(clock.t // 3600) - 30) * 3600, tz=dt.UTC)
    TrafficStat.objects.create(hour=old_hour, outcome="unsigned", count=1000)
    content = admin_client_.get(BASE).content.decode()
    assert (
        "Before you switch security on: 60 % of chat requests already carry a valid token"
        in content
    )
    assert re.search(r"<code>expired</code>.*?<td class=\"chat-num\">1</td>", content, re.S)
    assert re.search(r"Total</th><td class=\"chat-num\">10</td>", content)


def test_no_traffic(admin_client_):
    assert "No chat requests in the last 24 hours." in admin_client_.get(BASE).content.decode()


# -- 7. Audit ------------------------------------------------------------------------------


def test_recent_audit_entries_on_the_panel(admin_client_):
    key, _secret = generate(admin_client_)
    admin_client_.post(BASE + "security/", {"enabled": "off", "confirm": "yes"})
    content = admin_client_.get(BASE).content.decode()
    audit = content[content.index('id="audit"') :]
    assert "security_off" in audit and "generate_secret" in audit and key.kid in audit
    assert audit.index("security_off") < audit.index("generate_secret")  # newest first


# -- 8. Revoke a user ------------------------------------------------------------------------


def code_of(token: str) -> str | None:
    try:
        tokens.verify(token)
    except TokenError as exc:
        return exc.code
    return None


def revoke_user(client: Client, user_id: str, **extra) -> object:
    """The two POSTs a person makes: the form, then the confirmation page's button."""
    confirm = client.post(BASE + "user/revoke/", {"user_id": user_id, **extra})
    assert confirm.status_code == 200
    assert 'name="confirm" value="yes"' in confirm.content.decode()
    return client.post(BASE + "user/revoke/", {"user_id": user_id, "confirm": "yes"}, follow=True)


def test_panel_has_a_revoke_user_section(admin_client_):
    content = admin_client_.get(BASE).content.decode()
    section = content[content.index('id="revoke-user"') :]
    section = section[: section.index("</section>")]
    assert ">Revoke a user</h2>" in section
    assert 'action="/admin/chat_security/securityconfig/user/revoke/#revoke-user"' in section
    assert 'name="csrfmiddlewaretoken"' in section
    assert re.search(r'<input type="text" name="user_id"[^>]*maxlength="255"', section)
    assert 'value="Revoke user…"' in section
    assert "No user has been revoked." in section
    assert f'href="{REVOKED}">All revoked users (0)' in section
    assert '<a href="#revoke-user">Revoke a user</a>' in content  # in the section list


def test_revoke_user_asks_for_confirmation_first(admin_client_):
    before = store_state()
    response = admin_client_.post(BASE + "user/revoke/", {"user_id": "alice"})
    content = response.content.decode()
    assert response.status_code == 200
    assert "<h1>Revoke user alice?</h1>" in content
    assert re.search(r"&rsaquo; Revoke a user\s*</div>", content)  # breadcrumbs
    assert "Every token of this user issued before the moment you confirm" in content
    assert "Every token of this user without iat is refused too" in content
    assert "Tokens your site issues for this user after this moment are accepted" in content
    assert "already revoked" not in content
    assert 'action="/admin/chat_security/securityconfig/user/revoke/"' in content
    assert '<input type="hidden" name="user_id" value="alice">' in content
    assert 'value="Yes, revoke this user now"' in content
    assert store_state() == before  # nothing revoked, nothing audited yet


def test_revoke_user_refuses_the_users_tokens(admin_client_, clock):
    _key, secret = generate(admin_client_)
    now = int(clock.t)
    older = tc.hs256(secret, {"sub": "alice", "iat": now - 60, "exp": now + 3600})
    no_iat = tc.hs256(secret, {"sub": "alice", "exp": now + 3600})
    other = tc.hs256(secret, {"sub": "bob", "iat": now - 60, "exp": now + 3600})
    assert code_of(older) is None and code_of(no_iat) is None  # accepted (and cached) before

    clock.advance(5)
    response = revoke_user(admin_client_, "alice")
    assert response.redirect_chain == [(BASE + "#revoke-user", 302)]
    assert (
        "User alice is revoked. From now on every token of this user issued before "
        "2027-01-15 08:00:05 UTC is refused (token_revoked), and so is every token of "
        "this user without iat. Tokens issued after that are accepted."
    ) in response.content.decode()

    revoked = RevokedUser.objects.get(user_id="alice")
    assert revoked.revoked_at.timestamp() == now + 5 and revoked.revoked_by == "admin"
    entry = AuditEntry.objects.get(action="revoke_user")
    assert (entry.actor, entry.detail) == ("admin", "alice")
    assert code_of(older) == "token_revoked"
    assert code_of(no_iat) == "token_revoked"
    assert code_of(other) is None
    clock.advance(1)
    newer = tc.hs256(secret, {"sub": "alice", "iat": int(clock.t), "exp": int(clock.t) + 60})
    assert code_of(newer) is None


def test_revoked_user_is_listed_on_the_panel_and_in_the_audit(admin_client_, clock):
    revoke_user(admin_client_, "alice")
    clock.advance(3600)
    content = revoke_user(admin_client_, "bob").content.decode()
    section = content[content.index('id="revoke-user"') :]
    section = section[: section.index("</section>")]
    assert section.index("<code>bob</code>") < section.index("<code>alice</code>")  # newest first
    assert '2027-01-15 08:00:00 UTC <span class="chat-quiet">(60 min ago)</span>' in section
    assert f'href="{REVOKED}">All revoked users (2)' in section
    audit = content[content.index('id="audit"') :]
    assert re.search(r"<td>revoke_user</td><td></td><td>bob</td>", audit)


def test_revoking_again_says_so_and_moves_the_cut_off(admin_client_, clock):
    revoke_user(admin_client_, "alice")
    clock.advance(7200)
    confirm = admin_client_.post(BASE + "user/revoke/", {"user_id": "alice"}).content.decode()
    assert (
        "This user was already revoked at 2027-01-15 08:00:00 UTC (2 h ago); revoking "
        "again also refuses the tokens issued since then."
    ) in confirm
    revoke_user(admin_client_, "alice")
    revoked = RevokedUser.objects.get(user_id="alice")
    assert revoked.revoked_at.timestamp() == clock.t
    assert revoked.first_revoked_at.timestamp() == clock.t - 7200
    assert AuditEntry.objects.filter(action="revoke_user", detail="alice").count() == 2
    panel = admin_client_.get(BASE).content.decode()
    assert "first revoked 2027-01-15 08:00:00 UTC" in panel


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("", "This field is required."),
        (" alice", "without leading or trailing spaces"),
        ("alice ", "without leading or trailing spaces"),
        ("a\tb", "printable ASCII"),
        ("a\x7fb", "printable ASCII"),
        ("ålice", "printable ASCII"),
        ("a\u2028b", "printable ASCII"),
        ("x" * 256, "1–255 characters"),
        ("a\x00b", "Null characters are not allowed."),
    ],
)
@pytest.mark.parametrize("confirm", ["", "yes"])
def test_revoke_user_refuses_what_the_engine_refuses(admin_client_, user_id, message, confirm):
    before = store_state()
    response = admin_client_.post(BASE + "user/revoke/", {"user_id": user_id, "confirm": confirm})
    assert response.status_code == 200
    assert any(message in e for e in errors(response)), errors(response)
    content = response.content.decode()
    assert "Please correct the errors below." in content
    assert 'class="form-row field-user_id errors"' in content
    assert store_state() == before


def test_the_longest_and_oddest_valid_user_ids_are_revoked_as_given(admin_client_):
    for user_id in ("x" * 255, "-1", "a b", "<script>&\"'"):
        revoke_user(admin_client_, user_id)
        assert RevokedUser.objects.filter(user_id=user_id).exists()


def test_revoke_user_escapes_the_user_id_everywhere(admin_client_):
    user_id = '<img src=x onerror="alert(1)">'
    confirm = admin_client_.post(BASE + "user/revoke/", {"user_id": user_id}).content.decode()
    done = revoke_user(admin_client_, user_id).content.decode()
    listing = admin_client_.get(REVOKED).content.decode()
    for page in (confirm, done, listing):
        assert "<img src=x" not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert 'value="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in confirm  # hidden input


# -- 8b. Revoke a user per user space (SPEC §13) -----------------------------------------------


def revoke_section(content: str) -> str:
    section = content[content.index('id="revoke-user"') :]
    return section[: section.index("</section>")]


def alice_tokens(clock) -> dict[str, str]:
    """Tokens for alice of default and of brand-b (its own users), each signed with its
    integration's secret, issued a minute ago; both accepted before any revocation."""
    _key, default_secret = Key.objects.generate_secret("setup")
    Integration.objects.add("brand-b", own_users=True, actor="setup")
    _key, brand_secret = Key.objects.generate_secret("setup", integration="brand-b")
    now = int(clock.t)
    claims = {"sub": "alice", "iat": now - 60, "exp": now + 3600}
    found = {"default": tc.hs256(default_secret, claims), "brand-b": tc.hs256(brand_secret, claims)}
    for name, token in found.items():
        assert tokens.verify(token, integration=name).user_space == name
    return found


def test_one_integration_revokes_in_defaults_space_and_looks_as_before(admin_client_):
    section = revoke_section(admin_client_.get(BASE).content.decode())
    assert '<input type="hidden" name="integration" value="default">' in section
    assert "<select" not in section and "User space" not in section
    RevokedUser.objects.revoke("alice", "cli")
    section = revoke_section(admin_client_.get(BASE).content.decode())
    assert "User space" not in section  # default's revocations only: no column
    assert "<code>alice</code>" in section


def test_several_integrations_get_a_select_naming_each_user_space(admin_client_):
    Integration.objects.add("ios", actor="setup")
    Integration.objects.add("brand-b", own_users=True, actor="setup")
    section = revoke_section(admin_client_.get(BASE).content.decode())
    assert 'name="integration" value="default"' not in section  # no hidden default
    select = re.search(
        r'<select id="id_revoke_integration" name="integration"[^>]*>(.*?)</select>', section, re.S
    )
    options = dict(re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select.group(1)))
    assert options == {
        "default": "default",
        "ios": "ios (default's users)",
        "brand-b": "brand-b (own users)",
    }
    assert re.search(r'<option value="default" selected>', select.group(1))
    assert '<label for="id_revoke_integration">Integration:</label>' in section
    assert section.count('id="id_revoke_integration"') == 1
    assert "User space" not in section  # nothing revoked yet: no table


def test_revoking_for_an_integration_with_its_own_users_leaves_defaults_alice(admin_client_, clock):
    token = alice_tokens(clock)
    confirm = admin_client_.post(
        BASE + "user/revoke/", {"user_id": "alice", "integration": "brand-b"}
    )
    content = confirm.content.decode()
    assert "<h1>Revoke user alice in user space brand-b?</h1>" in content
    assert '<input type="hidden" name="integration" value="brand-b">' in content
    assert (
        "It holds in the user space brand-b only (integration brand-b has its own users): a "
        "user with this id in default&#x27;s user space, or in another, is not revoked."
    ) in content
    assert not RevokedUser.objects.exists()

    clock.advance(5)
    done = admin_client_.post(
        BASE + "user/revoke/",
        {"user_id": "alice", "integration": "brand-b", "confirm": "yes"},
        follow=True,
    )
    assert done.redirect_chain == [(BASE + "#revoke-user", 302)]
    page = done.content.decode()
    assert "User alice is revoked in user space brand-b. From now on every token" in page
    assert list(RevokedUser.objects.values_list("user_space", "user_id")) == [("brand-b", "alice")]
    entry = AuditEntry.objects.get(action="revoke_user")
    assert (entry.actor, entry.detail) == ("admin", "alice (user space brand-b)")
    assert tokens.verify(token["default"]).user_id == "alice"  # default's alice: still in
    with pytest.raises(TokenError) as refused:
        tokens.verify(token["brand-b"], integration="brand-b")
    assert refused.value.code == "token_revoked"
    section = revoke_section(page)
    assert '<th scope="col">User space</th>' in section
    assert '<td class="chat-user-space"><code>brand-b</code></td>' in section


def test_revoking_for_an_integration_sharing_defaults_users_revokes_defaults_alice(
    admin_client_, clock
):
    token = alice_tokens(clock)
    Integration.objects.add("ios", actor="setup")  # shares default's users
    confirm = admin_client_.post(BASE + "user/revoke/", {"user_id": "alice", "integration": "ios"})
    content = confirm.content.decode()
    assert "<h1>Revoke user alice?</h1>" in content  # default's space: not named
    assert '<input type="hidden" name="integration" value="ios">' in content
    assert (
        "It holds for every integration that shares default&#x27;s users (default, ios): "
        "they are the same people."
    ) in content
    done = admin_client_.post(
        BASE + "user/revoke/",
        {"user_id": "alice", "integration": "ios", "confirm": "yes"},
        follow=True,
    ).content.decode()
    assert "User alice is revoked. From now on every token" in done
    assert list(RevokedUser.objects.values_list("user_space", "user_id")) == [("default", "alice")]
    assert code_of(token["default"]) == "token_revoked"
    assert tokens.verify(token["brand-b"], integration="brand-b").user_id == "alice"


def test_already_revoked_is_said_of_the_same_user_space_only(admin_client_):
    Integration.objects.add("ios", actor="setup")
    Integration.objects.add("brand-b", own_users=True, actor="setup")
    RevokedUser.objects.revoke("alice", "cli")  # default's alice
    for name, already in (("default", True), ("ios", True), ("brand-b", False)):
        content = admin_client_.post(
            BASE + "user/revoke/", {"user_id": "alice", "integration": name}
        ).content.decode()
        assert ("This user was already revoked at" in content) is already, name


def test_an_integration_removed_before_the_revocation_revokes_nobody(admin_client_, monkeypatch):
    """Removed between the form's check and the store's write: nothing revoked anywhere."""
    Integration.objects.add("brand-b", own_users=True, actor="setup")
    store_revoke = RevokedUser.objects.revoke

    def racing(user_id: str, actor: str, integration: str) -> RevokedUser:
        Integration.objects.remove(integration, "someone else")
        return store_revoke(user_id, actor, integration=integration)

    monkeypatch.setattr(RevokedUser.objects, "revoke", racing)
    response = admin_client_.post(
        BASE + "user/revoke/", {"user_id": "alice", "integration": "brand-b", "confirm": "yes"}
    )
    assert response.status_code == 200
    assert "No integration named &#x27;brand-b&#x27;" in response.content.decode()
    assert not RevokedUser.objects.exists()
    assert not AuditEntry.objects.filter(action="revoke_user").exists()


@pytest.mark.parametrize("several", [False, True])
@pytest.mark.parametrize("name", ["gone", "Default", "brand-b/../default", "x" * 51])
@pytest.mark.parametrize("confirm", ["", "yes"])
def test_revoke_user_for_an_unknown_integration_changes_nothing(
    admin_client_, several, name, confirm
):
    if several:
        Integration.objects.add("ios", actor="setup")
    Integration.objects.add("gone", actor="setup")
    Integration.objects.remove("gone", "setup")
    before = store_state(), AuditEntry.objects.count(), Integration.objects.count()
    response = admin_client_.post(
        BASE + "user/revoke/", {"user_id": "alice", "integration": name, "confirm": confirm}
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert "Please correct the errors below." in content
    message = f"No integration is named {name}." if len(name) <= 50 else "at most 50 characters"
    assert any(message in e for e in errors(response)), errors(response)
    assert "Revoke user alice" not in content  # no confirmation page
    assert ('class="form-row field-integration errors"' in content) is several
    assert (store_state(), AuditEntry.objects.count(), Integration.objects.count()) == before
    assert not RevokedUser.objects.exists()


# -- 9. Revoked users (read-only list) --------------------------------------------------------


def test_revoked_users_list_newest_first_with_count_and_search(admin_client_, clock):
    for name in ("alice", "bob", "carol"):
        RevokedUser.objects.revoke(name, "cli")
        clock.advance(60)
    response = admin_client_.get(REVOKED)
    content = response.content.decode()
    assert response.status_code == 200
    assert "<title>Revoked users | Django site admin</title>" in content
    assert "<h1>Revoked users</h1>" in content
    assert content.index("carol") < content.index("bob") < content.index("alice")
    assert "3 revoked users" in content
    assert "2027-01-15 08:02:00 UTC" in content  # carol, in UTC to the second
    assert "Every token of a revoked user with an <code>iat</code> before" in content
    assert f'href="{BASE}#revoke-user">Revoke a user…</a>' in content
    assert f'href="{BASE}">Developer – WebChat</a>' in content
    assert "/add/" not in content and 'name="action"' not in content  # nothing to change
    assert "/change/" not in content  # rows are not links: there is nothing more to see
    found = admin_client_.get(REVOKED, {"q": "bo"}).content.decode()
    assert "bob" in found and "carol" not in found and "alice" not in found


def test_revoked_users_list_shows_and_filters_by_user_space(admin_client_, clock):
    Integration.objects.add("brand-b", own_users=True, actor="setup")
    RevokedUser.objects.revoke("alice", "cli", integration="brand-b")
    RevokedUser.objects.revoke("bob", "cli")
    content = admin_client_.get(REVOKED).content.decode()
    assert re.search(
        r'class="sortable column-user_space">\s*<div class="text"><a [^>]*>User space<', content
    )
    assert '<td class="field-user_space">brand-b</td>' in content
    assert '<td class="field-user_space">default</td>' in content
    assert 'href="?user_space=brand-b"' in content and 'href="?user_space=default"' in content
    assert "A revocation holds in its <em>User space</em>" in content
    only = admin_client_.get(REVOKED, {"user_space": "brand-b"}).content.decode()
    assert ">alice<" in only and ">bob<" not in only
    assert ">bob<" in admin_client_.get(REVOKED, {"user_space": "default"}).content.decode()


def test_revoked_users_list_is_paginated(admin_client_, clock):
    for n in range(60):
        RevokedUser.objects.revoke(f"user-{n:02d}")
        clock.advance(1)
    first = admin_client_.get(REVOKED).content.decode()
    assert "60 revoked users" in first
    assert "user-59" in first and "user-10" in first and "user-09" not in first
    second = admin_client_.get(REVOKED, {"p": "2"}).content.decode()
    assert "user-09" in second and "user-00" in second and "user-10" not in second


def test_revoked_users_list_is_reachable_from_the_panel(admin_client_):
    content = admin_client_.get(BASE).content.decode()
    tools = content[content.index('<ul class="object-tools">') :]
    tools = tools[: tools.index("</ul>")]
    assert f'<a href="{REVOKED}">Revoked users</a>' in tools
    assert ">Full audit log</a>" in tools


@pytest.mark.parametrize("configured", [False, True])
def test_the_panel_warns_when_a_key_is_encrypted_with_secret_key(
    admin_client_, settings, configured
):
    """Issue 17, item 1: the CLI warned without ENCRYPTION_KEYS, the panel did not."""
    settings.CHAT_SECURITY = {
        k: v for k, v in settings.CHAT_SECURITY.items() if configured or k != "ENCRYPTION_KEYS"
    }
    page = admin_client_.post(BASE + "secret/generate/").content.decode()
    service = admin_client_.post(BASE + "service-key/generate/", {"grace_hours": "0"}, follow=True)
    for text in (page, service.content.decode()):
        assert ("Set ENCRYPTION_KEYS first" in text) is not configured


# -- 10. Integrations (SPEC §13) ----------------------------------------------------------


def integration_part(content: str, name: str) -> str:
    """The part of the panel that belongs to integration ``name`` (its facts and keys)."""
    start = content.index('<div class="chat-integration')
    start = content.index(f'id="integration-{name}"', start)
    ends = [
        content.find(m, start + 1) for m in ('<div class="chat-integration', 'id="add-integration"')
    ]
    return content[start : min(e for e in ends if e != -1)]


def section(content: str, html_id: str) -> str:
    start = content.index(f'id="{html_id}"')
    return content[start : content.index("</section>", start)]


def add(client: Client, name: str = "ios", **fields: str):
    data = {"name": name, "issuer": f"https://{name}.example", **fields}
    return client.post(BASE + "integration/add/", data, follow=True)


def test_a_site_with_one_integration_shows_default_and_what_the_settings_say(admin_client_):
    content = admin_client_.get(BASE).content.decode()
    facts = section(content, "integration-default")
    assert ">Integration default</h2>" in facts
    assert "none: iss is not checked" in facts and "(the ISSUER setting)" in facts
    assert "<code>/chat/api/</code> <span" in facts and "(PROTECTED_PATHS)" in facts
    assert "shared: the contacts and user revocations of default" in facts
    # One integration: the sections keep their ids and headings, with nothing to choose.
    assert '<a href="#security">Secure your web chat</a>' in content
    assert '<h2 id="secrets-heading">Signing secret (HS256)</h2>' in content
    assert 'id="signing-keys"' in content and 'id="add-integration"' in content
    assert "Remove integration" not in content
    assert '<select name="integration"' not in content
    assert "chat-of" not in content
    with tc.chat_settings(
        {"ISSUER": "https://shop.example", "AUDIENCE": ["chat", "app"], "PROTECTED_PATHS": "/c/"}
    ):
        facts = section(admin_client_.get(BASE).content.decode(), "integration-default")
    assert "<code>https://shop.example</code>" in facts
    assert "<code>chat</code>, <code>app</code>" in facts
    assert "<code>/c/</code>" in facts


def test_add_integration_gives_it_its_own_part_of_the_panel(admin_client_):
    response = admin_client_.post(
        BASE + "integration/add/",
        {
            "name": "ios",
            "issuer": "https://ios.example",
            "audience": "chat",
            "own_users": "on",
            "paths": " /ios/chat/api/ \r\n\r\n/ios/ws/\n",
        },
        follow=True,
    )
    assert response.redirect_chain == [(BASE + "#integration-ios", 302)]
    row = Integration.objects.get(name="ios")
    assert (row.issuer, row.audience, row.user_space, row.paths, row.enabled, row.created_by) == (
        "https://ios.example",
        "chat",
        "ios",
        ["/ios/chat/api/", "/ios/ws/"],
        True,
        "admin",
    )
    assert AuditEntry.objects.filter(action="add_integration", detail="ios", actor="admin").exists()
    content = response.content.decode()
    assert "Integration ios added; its security is on." in content
    part = integration_part(content, "ios")
    for text in (
        ">Integration ios</h2>",
        "<code>https://ios.example</code>",
        "<code>chat</code>",
        "<code>/ios/chat/api/</code>, <code>/ios/ws/</code>",
        "own users (<code>ios</code>)",
        'value="Remove integration…"',
        'id="integration-ios-security"',
        'id="integration-ios-secrets"',
        'id="integration-ios-public-keys"',
        'id="integration-ios-service-keys"',
        'id="integration-ios-signing-keys"',
        'value="Generate Secret"',
        'value="Generate signing key pair"',
        'Secure your web chat<span class="chat-of"> · ios</span>',
    ):
        assert text in part, text
    assert content.index('id="integration-default"') < content.index('id="integration-ios"')
    assert '<a href="#integration-ios">Integration ios</a>' in content  # in the section list
    # Every form of its part says which integration it is for.
    forms = re.findall(r"<form [^>]*>(.*?)</form>", part, re.S)
    assert len(forms) >= 6
    assert all('<input type="hidden" name="integration" value="ios">' in f for f in forms)
    # The tester lets the user choose; by default the iss picks.
    select = re.search(r'<select name="integration"[^>]*>(.*?)</select>', content, re.S)
    options = re.findall(r'<option value="([^"]*)"', select.group(1))
    assert options == ["", "default", "ios"]
    assert "Found by the token&#x27;s iss" in select.group(1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "This field is required."),
        ({"name": "Bad Name"}, "lower-case letters, digits and hyphens"),
        ({"name": "default"}, "An integration named default already exists."),
        ({"name": "ios"}, "An integration named ios already exists."),
        ({"name": "x" * 51}, "at most 50 characters"),
        ({"name": "web", "issuer": "a\x07b"}, "The issuer must be printable text"),
        ({"name": "web", "audience": "y" * 256}, "at most 255 characters"),
        ({"name": "web", "paths": "/ok/\nchat/api/"}, "A path prefix starts with"),
        ({"name": "web", "paths": "\n".join(f"/p{i}/" for i in range(21))}, "at most 20"),
    ],
)
def test_add_integration_refusals_are_shown_in_the_form(admin_client_, fields, message):
    Integration.objects.add("ios")
    before = store_state()
    response = admin_client_.post(BASE + "integration/add/", {"issuer": "", **fields})
    assert response.status_code == 200
    assert any(message in e for e in errors(response)), errors(response)
    content = section(response.content.decode(), "add-integration")
    assert "Please correct the errors below." in response.content.decode()
    assert re.search(r'class="form-row field-\w+ errors"', content)
    assert store_state() == before


def test_key_actions_act_on_the_integration_they_name(admin_client_):
    Integration.objects.add("ios", issuer="https://ios.example", audience="chat")
    page = admin_client_.post(BASE + "secret/generate/", {"integration": "ios"})
    first = Key.objects.get(kind=KeyKind.SECRET)
    content = page.content.decode()
    assert first.integration.name == "ios"
    assert stored_secret(first) in content
    assert '<code id="new-secret-integration">ios</code>' in content
    assert "<code>https://ios.example</code>" in content and "<code>chat</code>" in content
    assert f'href="{BASE}#integration-ios-secrets"' in content  # back to its own part
    page = admin_client_.post(BASE + "secret/rotate/", {"integration": "ios", "grace_hours": "1"})
    assert (
        f"The previous secret <code>{first.kid}</code> is still accepted" in page.content.decode()
    )
    response = admin_client_.post(
        BASE + "public-key/add/",
        {"integration": "ios", "public_key": _formats()["spki"], "kid": "ios-2027"},
    )
    assert response["Location"] == BASE + "#integration-ios-public-keys"
    response = admin_client_.post(
        BASE + "service-key/generate/", {"integration": "ios", "grace_hours": "0"}
    )
    assert response["Location"] == BASE + "#integration-ios-service-keys"
    assert set(Key.objects.values_list("integration__name", flat=True)) == {"ios"}
    assert AuditEntry.objects.filter(action="add_public_key", detail="integration ios").exists()
    content = admin_client_.get(BASE).content.decode()
    ios, default = integration_part(content, "ios"), integration_part(content, "default")
    for key in Key.objects.all():
        assert key.kid in ios and key.kid not in default
    assert 'value="Rotate Secret"' in ios and 'value="Generate Secret"' in default
    revoke_forms = re.findall(r'action="[^"]*/key/revoke/"[^>]*>(.*?)</form>', ios, re.S)
    assert len(revoke_forms) == Key.objects.count()  # one per key, each naming ios
    assert all('name="integration" value="ios"' in f for f in revoke_forms)
    # Their usage rows say whose keys they are.
    usage_section = section(content, "usage")
    assert re.search(rf"<code>{first.kid}</code></td>\s*<td>ios</td>", usage_section)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("security/", {"enabled": "off", "confirm": "yes"}),
        ("secret/generate/", {}),
        ("secret/rotate/", {"grace_hours": "1"}),
        ("key/revoke/", {"kid": "KID", "confirm": "yes"}),
        ("public-key/add/", {"public_key": "PEM"}),
        ("service-key/generate/", {"grace_hours": "1"}),
        ("signing-key/generate/", {"alg": "RS256"}),
        ("signing-key/rotate/", {"grace_hours": "1"}),
        ("integration/remove/", {"confirm": "yes"}),
    ],
)
@pytest.mark.parametrize("name", ["nope", "gone", "Not a name!", "x" * 60])
def test_an_unknown_integration_changes_nothing(admin_client_, path, data, name):
    """The name is re-read on every POST: a forged one, or one removed meanwhile."""
    Integration.objects.add("gone")
    Integration.objects.remove("gone")
    key, _secret = generate(admin_client_)
    data = {k: {"KID": key.kid, "PEM": _formats()["spki"]}.get(v, v) for k, v in data.items()}
    before = store_state()
    response = admin_client_.post(BASE + path, {**data, "integration": name})
    assert response.status_code == 200
    error = re.search(
        r'<ul class="errorlist" id="action-error"><li>(.*?)</li>', response.content.decode()
    )
    assert error is not None
    if len(name) <= 50:
        assert error.group(1) == f"No integration is named {name}."
    assert store_state() == before


def test_each_integration_has_its_own_switch(admin_client_, clock):
    Integration.objects.add("ios", issuer="https://ios.example")
    generate(admin_client_)  # default has a usable key; ios has none
    confirm = admin_client_.post(BASE + "security/", {"enabled": "off", "integration": "ios"})
    content = confirm.content.decode()
    assert "<h1>Switch web chat security off for ios?</h1>" in content
    assert '<input type="hidden" name="integration" value="ios">' in content
    assert Integration.objects.get(name="ios").enabled is True
    clock.advance(60)
    done = admin_client_.post(
        BASE + "security/", {"enabled": "off", "confirm": "yes", "integration": "ios"}, follow=True
    )
    assert done.redirect_chain == [(BASE + "#integration-ios-security", 302)]
    content = done.content.decode()
    assert "Web chat security for ios is now off." in content
    assert Integration.objects.get(name="ios").enabled is False
    assert SecurityConfig.load().enabled is True  # default's switch is its own
    entry = AuditEntry.objects.get(action="security_off")
    assert (entry.actor, entry.detail) == ("admin", "integration ios")
    ios, default = section(content, "integration-ios-security"), section(content, "security")
    assert 'chat-badge-revoked">Off</span>' in ios and 'chat-badge-active">On</span>' in default
    assert "Last changed 2027-01-15 08:01 UTC by admin." in ios
    assert "Last changed" not in default
    assert 'value="Switch security on"' in ios and 'value="Switch security off…"' in default
    # On again: ios has no key of its own, whatever default holds.
    done = admin_client_.post(
        BASE + "security/", {"enabled": "on", "integration": "ios"}, follow=True
    )
    assert "Web chat security for ios is now on." in done.content.decode()
    assert "No usable signing key exists" in done.content.decode()
    assert Integration.objects.get(name="ios").enabled is True


def test_revoking_a_key_names_its_integration(admin_client_):
    generate(admin_client_)  # default's secret must not count as ios's
    Integration.objects.add("ios")
    key, _secret = Key.objects.generate_secret("t", integration="ios")
    before = store_state()
    response = admin_client_.post(BASE + "key/revoke/", {"kid": key.kid, "confirm": "yes"})
    assert any(f"Key {key.kid} is not a key of integration default." in e for e in errors(response))
    assert store_state() == before
    confirm = admin_client_.post(BASE + "key/revoke/", {"kid": key.kid, "integration": "ios"})
    content = confirm.content.decode()
    assert f"<h1>Revoke signing secret (HS256) {key.kid} of ios?</h1>" in content
    assert "It is your only usable signing secret" in content
    assert '<input type="hidden" name="integration" value="ios">' in content
    assert store_state() == before
    done = admin_client_.post(
        BASE + "key/revoke/", {"kid": key.kid, "integration": "ios", "confirm": "yes"}
    )
    assert done["Location"] == BASE + "#integration-ios-secrets"
    assert Key.objects.get(pk=key.pk).state() == "revoked"


def test_remove_integration_is_refused_while_it_holds_usable_keys(admin_client_):
    Integration.objects.add("ios", paths=["/ios/api/"])
    key, _secret = Key.objects.generate_secret("t", integration="ios")
    staged = Key.objects.generate_signing_keypair("ES256", "t", integration="ios")
    before = store_state()
    for confirm in ("", "yes"):
        response = admin_client_.post(
            BASE + "integration/remove/", {"integration": "ios", "confirm": confirm}
        )
        assert response.status_code == 200
        assert (
            f"Integration ios still holds usable keys ({key.kid}, {staged.kid}): revoke them "
            "first, then remove it."
        ) in response.content.decode()
        assert store_state() == before
    assert "It can be removed once none of its keys is usable" in integration_part(
        admin_client_.get(BASE).content.decode(), "ios"
    )
    Key.objects.revoke(key.kid)
    Key.objects.revoke(staged.kid)
    before = store_state()
    confirm = admin_client_.post(BASE + "integration/remove/", {"integration": "ios"})
    content = confirm.content.decode()
    assert "<h1>Remove integration ios?</h1>" in content
    assert "Its paths (/ios/api/) are no longer guarded by it" in content
    assert 'value="Yes, remove it"' in content
    assert store_state() == before
    done = admin_client_.post(
        BASE + "integration/remove/", {"integration": "ios", "confirm": "yes"}, follow=True
    )
    assert "Integration ios was removed." in done.content.decode()
    assert 'id="integration-ios"' not in done.content.decode()
    assert not Integration.objects.filter(name="ios").exists()
    assert not Key.objects.exists()
    assert AuditEntry.objects.filter(action="remove_integration", detail="ios").exists()


def test_default_cannot_be_removed(admin_client_):
    before = store_state()
    response = admin_client_.post(
        BASE + "integration/remove/", {"integration": "default", "confirm": "yes"}
    )
    assert "The default integration cannot be removed." in response.content.decode()
    assert store_state() == before


def test_signing_key_pairs_generate_stage_rotate_and_link_to_their_public_keys(admin_client_):
    Integration.objects.add("ios", issuer="https://ios.example")
    response = admin_client_.post(
        BASE + "signing-key/generate/", {"integration": "ios", "alg": "RS256"}, follow=True
    )
    assert response.redirect_chain == [(BASE + "#integration-ios-signing-keys", 302)]
    first = Key.objects.get(kind=KeyKind.SIGNING_KEY)
    assert (first.integration.name, first.alg, first.state()) == ("ios", "RS256", "active")
    content = response.content.decode()
    assert f"Signing key pair {first.kid} (RS256) generated" in content
    part = section(content, "integration-ios-signing-keys")
    assert 'value="Stage next key pair"' in part and 'value="Rotate signing key"' in part
    assert f'href="http://testserver/.well-known/chat-security/ios/{first.kid}.pem"' in part
    assert ">http://testserver/.well-known/chat-security/ios/jwks.json<" in part
    assert f"<code>{first.kid}</code>" not in section(content, "signing-keys")  # not default's

    response = admin_client_.post(
        BASE + "signing-key/generate/", {"integration": "ios", "alg": "ES256"}, follow=True
    )
    staged = Key.objects.get(kind=KeyKind.SIGNING_KEY, staged=True)
    assert (staged.alg, staged.state()) == ("ES256", "staged")
    content = response.content.decode()
    assert f"Signing key pair {staged.kid} (ES256) is staged" in content
    part = section(content, "integration-ios-signing-keys")
    assert f"The staged key <code>{staged.kid}</code> signs from now on." in part
    assert re.search(
        rf"{staged.kid}</code></td>\s*<td>ES256</td>\s*<td><span class=\"chat-badge "
        r"chat-badge-staged\">staged",
        part,
    )
    public = Client().get(f"/.well-known/chat-security/ios/{staged.kid}.pem")
    assert public.status_code == 200 and public.content.decode() == staged.public_pem

    response = admin_client_.post(
        BASE + "signing-key/rotate/", {"integration": "ios", "grace_hours": "2"}, follow=True
    )
    staged.refresh_from_db()
    first.refresh_from_db()
    assert (staged.state(), first.state()) == ("active", "grace")
    assert (
        f"Signing key pair {staged.kid} (ES256) signs from now on. {first.kid} is accepted "
        "until 2027-01-15 10:00 UTC."
    ) in response.content.decode()
    assert AuditEntry.objects.filter(
        action="rotate_signing_key", kid=staged.kid, detail="integration ios", actor="admin"
    ).exists()


def test_signing_key_refusals_and_revocation_warnings(admin_client_):
    active = Key.objects.generate_signing_keypair("RS256")
    before = store_state()
    response = admin_client_.post(BASE + "signing-key/generate/", {"alg": "HS256"})
    assert any("Select a valid choice" in e for e in errors(response))
    response = admin_client_.post(BASE + "signing-key/rotate/", {"grace_hours": "-1"})
    assert any("greater than or equal to 0" in e for e in errors(response))
    assert store_state() == before
    staged = Key.objects.generate_signing_keypair("ES256")
    confirm = admin_client_.post(BASE + "key/revoke/", {"kid": active.kid}).content.decode()
    assert "It is the active signing key pair" in confirm
    assert "leaves the JWKS" in confirm
    confirm = admin_client_.post(BASE + "key/revoke/", {"kid": staged.kid}).content.decode()
    assert "It is the staged next key" in confirm


@override_settings(ROOT_URLCONF=NoJwksUrls)
def test_signing_key_links_when_the_public_views_are_not_routed(admin_client_):
    key = Key.objects.generate_signing_keypair("ES256")
    part = section(admin_client_.get(BASE).content.decode(), "signing-keys")
    assert "<code>/.well-known/chat-security/default/jwks.json</code>, not routed yet" in part
    assert ".pem" not in part and key.kid in part


def test_tester_finds_the_integration_by_iss_or_as_chosen(admin_client_, clock):
    Integration.objects.add("ios", issuer="https://ios.example")
    key, secret = Key.objects.generate_secret("t", integration="ios")
    claims = {"sub": "u-1", "iss": "https://ios.example", "exp": int(clock.t) + 600}
    token = tc.hs256(secret, claims, kid=key.kid)

    content = admin_client_.post(BASE + "test-token/", {"token": token}).content.decode()
    result = content[content.index('id="token-result"') :]
    assert "Valid token" in result
    assert '<dd class="chat-judged-by"><code>ios</code>' in result
    assert "of integration <code>ios</code>" in result

    chosen = admin_client_.post(BASE + "test-token/", {"token": token, "integration": "default"})
    content = chosen.content.decode()
    result = content[content.index('id="token-result"') :]
    assert "Invalid token:" in result
    assert '<dd class="chat-judged-by"><code>default</code>' in result
    assert f"<code>{key.kid}</code>" in result and "of integration <code>ios</code>" in result
    assert '<option value="default" selected>default</option>' in content

    before = AuditEntry.objects.filter(action="test_token").count()
    response = admin_client_.post(BASE + "test-token/", {"token": token, "integration": "nope"})
    assert any("Select a valid choice" in e for e in errors(response))
    assert 'id="token-result"' not in response.content.decode()
    assert AuditEntry.objects.filter(action="test_token").count() == before


def test_panel_ids_stay_unique_with_several_integrations(admin_client_):
    for name in ("ios", "service", "integration"):  # names that look like id stems
        Integration.objects.add(name)
        Key.objects.generate_secret("t", integration=name)
        Key.objects.generate_signing_keypair("ES256", integration=name)
    Key.objects.generate_secret("t")
    response = admin_client_.post(
        BASE + "signing-key/rotate/", {"grace_hours": "x", "integration": "ios"}
    )
    for content in (admin_client_.get(BASE).content.decode(), response.content.decode()):
        page = _Ids()
        page.feed(content)
        assert [i for i in set(page.ids) if page.ids.count(i) > 1] == []
        assert set(page.references) <= set(page.ids)
    part = integration_part(response.content.decode(), "ios")
    assert 'class="form-row field-grace_hours errors"' in part  # the failed form, in its part
    assert "errors" not in integration_part(response.content.decode(), "service")


def _populate(keys_each: int, round_: int) -> None:
    for i, name in enumerate(("default", "web", "ios")):
        if name != "default" and not Integration.objects.filter(name=name).exists():
            Integration.objects.add(name, issuer=f"https://{name}.example", own_users=True)
        for n in range(keys_each):
            if Key.objects.active(KeyKind.SECRET, name):
                Key.objects.rotate_secret(3600, "t", integration=name)
            else:
                Key.objects.generate_secret("t", integration=name)
            Key.objects.generate_signing_keypair("ES256", "t", integration=name)
            kid = f"{name}-{round_}-{n}"
            slot = 100 + 10 * round_ + keys_each * i + n  # a key of its own
            Key.objects.add_public_key(tc.public_pem(tc.rsa_key(slot)), "t", kid, name)
            usage.record_use(kid)
        SecurityConfig.set_enabled(False, "t", integration=name)


def test_panel_queries_do_not_grow_with_integrations_or_keys(
    admin_client_, django_assert_max_num_queries, snapshot_not_rechecked
):
    """No query per integration or per key: the panel reads each table once.

    Each measured GET follows one that warms the session and this process's
    key snapshot (rebuilt after a change by whatever request comes first).
    """
    admin_client_.get(BASE)
    with CaptureQueriesContext(connection) as alone:
        admin_client_.get(BASE)
    most = len(alone)  # now: the next request resets the connection's query log
    assert most <= 14  # 12 before SPEC §15; + the traffic by day (charts), + recent failures
    _populate(2, 0)
    usage.flush_usage()
    admin_client_.get(BASE)
    with django_assert_max_num_queries(most):
        content = admin_client_.get(BASE).content.decode()
    assert content.count('<div class="chat-integration') == 3
    assert Key.objects.count() == 18 and content.count('name="kid"') >= 18
    _populate(2, 1)  # twice the keys
    usage.flush_usage()
    admin_client_.get(BASE)
    with django_assert_max_num_queries(most):
        admin_client_.get(BASE)
