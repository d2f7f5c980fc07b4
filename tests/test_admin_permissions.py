"""Who may do what on the Developer – WebChat panel; GET never changes anything; CSRF."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from chat_security.models import (
    AuditEntry,
    Integration,
    Key,
    KeyKind,
    RevokedUser,
    SecurityConfig,
)
from tests import tokencraft as tc

pytestmark = pytest.mark.django_db

BASE = "/admin/chat_security/securityconfig/"
AUDIT = "/admin/chat_security/auditentry/"
REVOKED = "/admin/chat_security/revokeduser/"
ROLES = ("anonymous", "staff", "support", "admin", "superuser")


def make_user(role: str) -> User | None:
    """anonymous → None; staff without perms; support (test_tokens); admin (manage_keys)."""
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser("root", "root@example.com", "pw")
    user = User.objects.create_user(role, f"{role}@example.com", "pw", is_staff=True)
    codename = {"support": "test_tokens", "admin": "manage_keys"}.get(role)
    if codename:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def client_for(role: str, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    user = make_user(role)
    if user is not None:
        client.force_login(user)
    return client


@dataclass
class Store:
    """Keys present before each request: an active secret and a service key of
    ``default``, and a second integration, ``ios``, with an active signing key pair."""

    secret_kid: str
    service_kid: str
    extra: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def store(clock) -> Store:
    SecurityConfig.load()
    secret, _value = Key.objects.generate_secret("setup")
    service = Key.objects.generate_service_keypair("setup")
    Integration.objects.add("ios", issuer="https://ios.example", actor="setup")
    Key.objects.generate_signing_keypair("ES256", "setup", integration="ios")
    return Store(secret.kid, service.kid)


def snapshot() -> tuple:
    """Everything an action could change (the audit count included)."""
    keys = sorted(
        (k.kid, k.kind, str(k.state()), k.grace_until, k.revoked_at) for k in Key.objects.all()
    )
    revoked = sorted(RevokedUser.objects.values_list("user_id", "revoked_at"))
    integrations = sorted(Integration.objects.values_list("name", "enabled", "issuer"))
    return keys, revoked, integrations, SecurityConfig.load().enabled, AuditEntry.objects.count()


@dataclass(frozen=True)
class Action:
    name: str
    method: str
    path: str
    manage: bool = True  # False: support staff may use it too

    def url(self, store: Store) -> str:
        path = self.path.format(service=store.service_kid)
        return path if path.startswith("/") else BASE + path

    def data(self, store: Store) -> dict[str, str]:
        if self.name == "generate_secret":
            Key.objects.revoke(store.secret_kid, "setup")  # generating needs no active secret
        if self.name == "remove_integration":
            Integration.objects.add("old", actor="setup")  # holds no key: removable
        if self.name == "revoke_user_brand":
            Integration.objects.add("brand-b", own_users=True, actor="setup")
        if self.name in ("schedule_security", "cancel_schedule"):
            SecurityConfig.set_enabled(False, "setup")  # a switch-on is scheduled while off
        if self.name == "cancel_schedule":
            SecurityConfig.schedule_on(datetime(2027, 2, 1, 9, tzinfo=UTC), "setup")
        return {
            "security_off": {"enabled": "off", "confirm": "yes"},
            "security_on": {"enabled": "on"},
            "rotate_secret": {"grace_hours": "48"},
            "revoke": {"kid": store.secret_kid, "confirm": "yes"},
            "add_public_key": {"public_key": tc.public_pem(tc.rsa_key(0))},
            "service_key": {"grace_hours": "1"},
            "test_token": {"token": "abc.def.ghi"},
            "revoke_user": {"user_id": "alice", "confirm": "yes"},
            "security_off_ios": {"enabled": "off", "confirm": "yes", "integration": "ios"},
            "add_integration": {"name": "web", "issuer": "https://web.example", "paths": "/w/"},
            "remove_integration": {"integration": "old", "confirm": "yes"},
            "generate_signing_key": {"alg": "RS256", "integration": "ios"},
            "rotate_signing_key": {"grace_hours": "1", "integration": "ios"},
            "generate_secret_ios": {"integration": "ios"},
            "revoke_user_ios": {"user_id": "alice", "integration": "ios", "confirm": "yes"},
            "revoke_user_brand": {"user_id": "alice", "integration": "brand-b", "confirm": "yes"},
            "schedule_security": {"at": "2027-02-01T09:00"},
        }.get(self.name, {})


ACTIONS = [
    Action("panel", "GET", "", manage=False),
    Action("security_off", "POST", "security/"),
    Action("security_on", "POST", "security/"),
    Action("generate_secret", "POST", "secret/generate/"),
    Action("rotate_secret", "POST", "secret/rotate/"),
    Action("revoke", "POST", "key/revoke/"),
    Action("add_public_key", "POST", "public-key/add/"),
    Action("service_key", "POST", "service-key/generate/"),
    Action("service_key_pem", "GET", "service-key/{service}/public.pem"),
    Action("service_key_jwk", "GET", "service-key/{service}/public.jwk"),
    Action("test_token", "POST", "test-token/", manage=False),
    Action("revoke_user", "POST", "user/revoke/"),
    Action("revoked_users", "GET", REVOKED, manage=False),
    # Integrations (SPEC §13): each change names the integration it is for.
    Action("security_off_ios", "POST", "security/"),
    Action("add_integration", "POST", "integration/add/"),
    Action("remove_integration", "POST", "integration/remove/"),
    Action("generate_signing_key", "POST", "signing-key/generate/"),
    Action("rotate_signing_key", "POST", "signing-key/rotate/"),
    Action("generate_secret_ios", "POST", "secret/generate/"),
    # Revoke a user in an integration's user space: ios shares default's, brand-b has its own.
    Action("revoke_user_ios", "POST", "user/revoke/"),
    Action("revoke_user_brand", "POST", "user/revoke/"),
    # Scheduled enforcement (SPEC §15)
    Action("schedule_security", "POST", "security/schedule/"),
    Action("cancel_schedule", "POST", "security/cancel/"),
]
#: What a permitted user gets: 302 = done and redirected to the panel (PRG);
#: 200 = a page (the panel, the one-time secret, the tester's result, a file).
SUCCESS = {
    "panel": 200,
    "security_off": 302,
    "security_on": 302,
    "generate_secret": 200,
    "rotate_secret": 200,
    "revoke": 302,
    "add_public_key": 302,
    "service_key": 302,
    "service_key_pem": 200,
    "service_key_jwk": 200,
    "test_token": 200,
    "revoke_user": 302,
    "revoked_users": 200,
    "security_off_ios": 302,
    "add_integration": 302,
    "remove_integration": 302,
    "generate_signing_key": 302,
    "rotate_signing_key": 302,
    "generate_secret_ios": 200,
    "revoke_user_ios": 302,
    "revoke_user_brand": 302,
    "schedule_security": 302,
    "cancel_schedule": 302,
}


def expected_status(role: str, action: Action) -> int:
    if role == "anonymous":
        return 302
    if role == "staff":
        return 403
    if role == "support" and action.manage:
        return 403
    return SUCCESS[action.name]


def send(client: Client, method: str, url: str, data: dict[str, str]):
    return client.get(url) if method == "GET" else client.post(url, data)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(role, action, store):
    client = client_for(role)
    data = action.data(store)
    before = snapshot()
    response = send(client, action.method, action.url(store), data)
    status = expected_status(role, action)
    assert response.status_code == status
    if role == "anonymous":
        assert response["Location"].startswith("/admin/login/?next=")
    if status in (302, 403) and role in ("anonymous", "staff", "support"):
        assert snapshot() == before  # refused: nothing changed, nothing audited
    if status == 302 and role in ("admin", "superuser"):
        assert response["Location"].startswith(BASE)
    if action.method == "GET":
        assert snapshot() == before
    elif role in ("admin", "superuser"):
        assert snapshot() != before  # the action did something (and audited it)


@pytest.mark.parametrize("action", [a for a in ACTIONS if a.method == "POST"], ids=lambda a: a.name)
@pytest.mark.parametrize("role", ("support", "admin", "superuser"))
def test_get_on_a_post_action_changes_nothing(role, action, store):
    client = client_for(role)
    before = snapshot()
    response = client.get(action.url(store))
    if role == "support" and action.manage:
        assert response.status_code == 403
    else:
        assert response.status_code == 405
        assert response["Allow"] == "POST"
    assert snapshot() == before


def test_get_with_action_parameters_in_the_query_string_changes_nothing(store):
    client = client_for("admin")
    before = snapshot()
    for action in ACTIONS:
        if action.method == "POST":
            query = {"enabled": "off", "confirm": "yes", "kid": store.secret_kid, "user_id": "a"}
            assert client.get(action.url(store), query).status_code == 405
    assert client.get(BASE, {"enabled": "off", "kid": store.secret_kid}).status_code == 200
    assert snapshot() == before


@pytest.mark.parametrize("name", ["service_key_pem", "service_key_jwk", "panel"])
def test_post_on_a_get_view_is_refused(name, store):
    action = next(a for a in ACTIONS if a.name == name)
    before = snapshot()
    response = client_for("admin").post(action.url(store), {})
    assert response.status_code == 405
    assert snapshot() == before


@pytest.mark.parametrize("action", [a for a in ACTIONS if a.method == "POST"], ids=lambda a: a.name)
def test_csrf_is_enforced(action, store):
    client = client_for("admin", enforce_csrf_checks=True)
    data = action.data(store)
    before = snapshot()
    response = client.post(action.url(store), data)
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert snapshot() == before
    # The same request with the form's token goes through.
    client.get(BASE)
    token = client.cookies["csrftoken"].value
    response = client.post(action.url(store), {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == SUCCESS[action.name]
    assert snapshot() != before


@pytest.mark.parametrize("role", ROLES)
def test_audit_log_is_read_only_and_for_admins(role, store):
    client = client_for(role)
    entry = AuditEntry.objects.first()
    listing = client.get(AUDIT)
    detail = client.get(f"{AUDIT}{entry.pk}/change/")
    expected = {"anonymous": 302, "staff": 403, "support": 403}.get(role, 200)
    assert listing.status_code == expected
    assert detail.status_code == expected
    if expected == 200:
        assert b'name="actor"' not in detail.content  # read-only: no inputs
        assert client.get(f"{AUDIT}add/").status_code == 403
        before = AuditEntry.objects.count()
        assert client.post(f"{AUDIT}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        assert client.post(f"{AUDIT}{entry.pk}/change/", {"actor": "x"}).status_code == 403
        assert AuditEntry.objects.count() == before


def test_securityconfig_has_no_stock_change_views(store):
    client = client_for("superuser")
    for path in ("add/", "1/change/", "1/delete/", "1/history/"):
        response = client.post(BASE + path, {"enabled": "off"})
        assert response.status_code in (404, 405)  # no such view
    assert SecurityConfig.load().enabled is True


@pytest.mark.parametrize(
    ("role", "sees_panel", "sees_audit"),
    [
        ("staff", False, False),
        ("support", True, False),
        ("admin", True, True),
        ("superuser", True, True),
    ],
)
def test_admin_index_links(role, sees_panel, sees_audit, store):
    content = client_for(role).get("/admin/").content.decode()
    assert (f'href="{BASE}"' in content) is sees_panel
    assert (f'href="{AUDIT}"' in content) is sees_audit
    assert (f'href="{REVOKED}"' in content) is sees_panel  # whoever sees the panel


# -- Revoke a user, and the list of revoked users ----------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_revoke_user_confirmation_page_is_for_admins_and_changes_nothing(role, store):
    before = snapshot()
    response = client_for(role).post(BASE + "user/revoke/", {"user_id": "alice"})
    expected = {"anonymous": 302, "staff": 403, "support": 403}.get(role, 200)
    assert response.status_code == expected
    if expected == 200:
        assert "Revoke user alice?" in response.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize("role", ROLES)
def test_revoke_user_form_is_shown_to_admins_only(role, store):
    response = client_for(role).get(BASE)
    if role in ("anonymous", "staff"):
        assert response.status_code == {"anonymous": 302, "staff": 403}[role]
        return
    content = response.content.decode()
    manage = role in ("admin", "superuser")
    assert ('id="revoke-user"' in content) is manage
    assert ('name="user_id"' in content) is manage
    assert f'<a href="{REVOKED}">Revoked users</a>' in content  # read-only: everyone here


@pytest.mark.parametrize("role", ROLES)
def test_revoked_users_list_is_read_only(role, store):
    RevokedUser.objects.revoke("alice", "setup")
    revoked = RevokedUser.objects.get()
    client = client_for(role)
    listing = client.get(REVOKED)
    detail = client.get(f"{REVOKED}{revoked.pk}/change/")
    expected = {"anonymous": 302, "staff": 403}.get(role, 200)
    assert listing.status_code == expected
    assert detail.status_code == expected
    if expected != 200:
        return
    content = listing.content.decode()
    assert "<code>alice</code>" not in content and ">alice<" in content
    assert ("Revoke a user…" in content) is (role in ("admin", "superuser"))
    assert b'name="user_id"' not in detail.content  # read-only: no inputs
    before = snapshot()
    assert client.get(f"{REVOKED}add/").status_code == 403
    assert client.post(f"{REVOKED}add/", {"user_id": "bob"}).status_code == 403
    assert client.post(f"{REVOKED}{revoked.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"{REVOKED}{revoked.pk}/change/", {"user_id": "x"}).status_code == 403
    assert snapshot() == before


def test_django_view_permission_on_revoked_users_also_shows_the_list(store):
    user = User.objects.create_user("auditor", "a@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_revokeduser"))
    client = Client()
    client.force_login(user)
    assert client.get(REVOKED).status_code == 200
    assert client.get(BASE).status_code == 403  # the panel still needs test_tokens
    assert client.post(BASE + "user/revoke/", {"user_id": "a", "confirm": "yes"}).status_code == 403


def test_support_sees_only_the_tester(store):
    content = client_for("support").get(BASE).content.decode()
    assert "Test a JWT Token" in content
    for hidden in (
        "Signing secret (HS256)",
        "Your public key (RS256, ES256, EdDSA)",
        "Service key pair",
        "Site signing key pair",
        "Add integration",
        "Remove integration",
        "Integration ios",
        "https://ios.example",
        "Rotate Secret",
        "Switch security off",
        store.secret_kid,
        store.service_kid,
        "Full audit log",
        "Revoke a user",
        "Revoke user…",
        Key.objects.get(kid=store.secret_kid).prefix,
    ):
        assert hidden not in content
    # The tester lets them choose the integration: its name, nothing more of it.
    assert '<option value="ios">ios</option>' in content


def test_support_result_page_also_hides_key_management(store, clock):
    secret_key = Key.objects.get(kind=KeyKind.SECRET)
    response = client_for("support").post(BASE + "test-token/", {"token": "x.y.z"})
    content = response.content.decode()
    assert response.status_code == 200 and "malformed" in content
    assert "Rotate Secret" not in content and secret_key.prefix not in content


def test_non_staff_user_with_permissions_is_sent_to_the_admin_login(store):
    user = User.objects.create_user("customer", "c@example.com", "pw")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["manage_keys", "test_tokens"])
    )
    client = Client()
    client.force_login(user)
    data = {action.name: action.data(store) for action in ACTIONS}
    before = snapshot()
    for action in ACTIONS:
        response = send(client, action.method, action.url(store), data[action.name])
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("test-token/", {"token": "abc.def.ghi"}),
        ("public-key/add/", {"public_key": "-----BEGIN PRIVATE KEY-----"}),
    ],
)
def test_views_receiving_tokens_or_keys_hide_post_data_from_error_reports(path, data, store):
    response = client_for("admin").post(BASE + path, data)
    assert response.status_code == 200
    assert response.wsgi_request.sensitive_post_parameters == "__ALL__"
