"""Integrations across tenants (SPEC §13): user spaces end to end.

Real requests through the HTTP middleware (django's test client) and the
WebSocket middleware (Channels' communicator), against four integrations:

* ``default`` (``PROTECTED_PATHS``), and ``ios`` in the same user space;
* ``brand-a`` and ``brand-b``, each with its own users, its own issuer
  (``brand-b`` an audience too) and its own paths, both serving ``/shared/api/``.

What must hold: a token of one integration is never accepted on another's
path or socket (refused with a key, issuer or claim code); integrations with
their own users share no contacts, revocations or subject binding with
anyone; integrations in one user space share all three; and an integration,
key or path added by another process is in force within KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

from chat_security import clock as chat_clock
from chat_security import conf, continuity, identity, keyring, tokens
from chat_security.exceptions import AnonymousLinkError
from chat_security.models import AuditEntry, Contact, Integration, Key, RevokedUser
from chat_security.session import bound_subjects
from demo_site.chat.models import Message
from demo_site.urls import urlpatterns as demo_urlpatterns

from .chat_helpers import chat_settings
from .servers import ROOT, manage, process_env, serving
from .tokencraft import hs256, public_pem, rs256, rsa_key
from .ws_helpers import expect_close, expect_identified, finish, guarded, open_socket

# -- the test URLs: one identity view under each integration's prefix -----------------------


def tenant_view(request: HttpRequest) -> JsonResponse:
    """Who the middleware says is talking, and where (``?contact=1``: the contact too)."""
    found = getattr(request, "chat_identity", None)
    if found is None:
        return JsonResponse({"guarded": False})
    contact = found.contact if request.GET.get("contact") else None
    return JsonResponse(
        {
            "guarded": True,
            "user_id": found.user_id,
            "integration": found.integration,
            "user_space": found.user_space,
            "contact": contact.pk if contact is not None else None,
        }
    )


PREFIXES = ("chat/api/", "chat/api/a/", "a/api/", "b/api/", "ios/api/", "shared/api/")
urlpatterns = [path(f"{prefix}whoami", tenant_view) for prefix in PREFIXES] + demo_urlpatterns
pytestmark = pytest.mark.urls(__name__)

# -- four integrations ----------------------------------------------------------------------

TENANTS = ("default", "brand-a", "brand-b", "ios")
ISSUERS = {"brand-a": "https://a.example", "brand-b": "https://b.example"}
ISSUERS["ios"] = "https://ios.example"
AUDIENCES = {"brand-b": "b-chat"}
WHOAMI = {
    "default": "/chat/api/whoami",
    "brand-a": "/a/api/whoami",
    "brand-b": "/b/api/whoami",
    "ios": "/ios/api/whoami",
}
SHARED = "/shared/api/whoami"
SPACES = {"default": "default", "ios": "default", "brand-a": "brand-a", "brand-b": "brand-b"}


@dataclass
class Tenant:
    """An integration as the site that signs its tokens knows it: its keys, iss and aud."""

    name: str
    secret: str = ""
    kids: dict[str, str] = field(default_factory=dict)  # alg -> the kid of its key
    rsa: Any = None  # the private half of its client public key (RS256), if it has one

    @property
    def issuer(self) -> str | None:
        return ISSUERS.get(self.name)

    @property
    def audience(self) -> str | None:
        return AUDIENCES.get(self.name)

    def claims(self, sub: str = "alice", **extra: Any) -> dict[str, Any]:
        """Valid claims for this integration; ``name=None`` in ``extra`` leaves one out."""
        now = int(chat_clock.now())
        claims: dict[str, Any] = {"sub": sub, "iat": now - 10, "exp": now + 3600}
        for name, value in (("iss", self.issuer), ("aud", self.audience)):
            if value is not None:
                claims[name] = value
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], alg: str = "HS256", kid: str | None = "own") -> str:
        """``claims`` signed with this integration's key of ``alg``; ``kid``: "own"
        (its key's), None (no kid) or any other kid to put in the header."""
        header = {} if kid is None else {"kid": self.kids[alg] if kid == "own" else kid}
        if alg == "HS256":
            return hs256(self.secret, claims, **header)
        return rs256(self.rsa, claims, **header)

    def token(self, sub: str = "alice", **extra: Any) -> str:
        return self.sign(self.claims(sub, **extra))


def make_tenants() -> dict[str, Tenant]:
    Integration.objects.add(
        "brand-a", issuer=ISSUERS["brand-a"], own_users=True, paths=["/a/api/", "/shared/api/"]
    )
    Integration.objects.add(
        "brand-b",
        issuer=ISSUERS["brand-b"],
        audience=AUDIENCES["brand-b"],
        own_users=True,
        paths=["/b/api/", "/shared/api/"],
    )
    Integration.objects.add("ios", issuer=ISSUERS["ios"], paths=["/ios/api/"])
    made = {}
    for slot, name in enumerate(TENANTS):
        key, value = Key.objects.generate_secret("tests", integration=name)
        tenant = made[name] = Tenant(name, value, {"HS256": key.kid})
        if name == "ios":  # no client public key: the app signs its tokens (ES256)
            signing = Key.objects.generate_signing_keypair("ES256", "tests", integration=name)
            tenant.kids["ES256"] = signing.kid
        else:
            tenant.rsa = rsa_key(slot)
            public = Key.objects.add_public_key(public_pem(tenant.rsa), "tests", integration=name)
            tenant.kids["RS256"] = public.kid
    return made


@pytest.fixture
def tenants(db, clock) -> dict[str, Tenant]:
    return make_tenants()


def ask(client: Client, url: str, token: str | None, **query: Any) -> dict[str, Any]:
    """The answer as one dict: the identity the view saw, or the refusal's ``error``."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = client.get(url, query, headers=headers)
    body = response.json()
    assert response.status_code == (401 if "error" in body else 200), (response, body)
    return body


def verdict(client: Client, url: str, token: str | None) -> str:
    """ "ok" for an accepted request, else the §4 code it was refused with."""
    return ask(client, url, token).get("error", "ok")


# -- a token of one integration on another's path -------------------------------------------

PAIRS = [(src, dst) for src in TENANTS for dst in TENANTS if src != dst]
KID_SHAPES = ("own", "none", "theirs")
CLAIM_SHAPES = ("own", "theirs", "bare")


def expected_code(dst: Tenant, alg: str, kid_shape: str) -> str:
    """SPEC §3 step 4/5 and §13 for a token signed with another integration's key."""
    if kid_shape == "own":
        return "unknown_key"  # a kid of another integration
    if alg not in dst.kids:  # dst has no key of the token's algorithm
        return "security_not_configured" if kid_shape == "none" else "algorithm_not_allowed"
    return "invalid_signature"  # dst's candidate keys (or its key named by kid) do not verify


def crafted(src: Tenant, dst: Tenant, alg: str, kid_shape: str, claim_shape: str) -> str:
    claims = {
        "own": src.claims(),
        "theirs": dst.claims(),  # forged to look like dst's: iss and aud copied
        "bare": src.claims(iss=None, aud=None),
    }[claim_shape]
    kid = {"own": "own", "none": None, "theirs": dst.kids.get(alg, dst.kids["HS256"])}[kid_shape]
    return src.sign(claims, alg, kid)


@pytest.mark.parametrize("src, dst", PAIRS)
def test_a_token_of_one_integration_is_never_accepted_on_anothers_path(tenants, src, dst):
    """Every shape of a token signed with ``src``'s valid key, on ``dst``'s path: its own
    kid, no kid, ``dst``'s kid; its own claims, ``dst``'s iss and aud, neither. Refused
    with the exact key code; the same token is accepted on ``src``'s path."""
    a, b, client = tenants[src], tenants[dst], Client()
    wrong = []
    for alg in [alg for alg in ("HS256", "RS256") if alg in a.kids]:
        for kid_shape in KID_SHAPES:
            for claim_shape in CLAIM_SHAPES:
                token = crafted(a, b, alg, kid_shape, claim_shape)
                if kid_shape != "theirs" and claim_shape == "own":
                    assert verdict(client, WHOAMI[src], token) == "ok"  # a valid token of src
                got, want = verdict(client, WHOAMI[dst], token), expected_code(b, alg, kid_shape)
                if got != want:
                    wrong.append((alg, kid_shape, claim_shape, got, want))
    # What the app issues for src (HS256 with kid; ES256 for ios) is src's alone too.
    issued = tokens.issue("alice", integration=src)
    assert ask(client, WHOAMI[src], issued)["integration"] == src
    assert verdict(client, WHOAMI[dst], issued) == "unknown_key"
    assert not wrong, wrong


@pytest.mark.parametrize(
    "dst, claims, code",
    [
        ("brand-b", {"iss": ISSUERS["brand-a"]}, "invalid_claim"),  # A's iss, B's issuer
        ("brand-b", {"iss": ISSUERS["ios"]}, "invalid_claim"),
        ("brand-b", {"iss": None}, "missing_claim"),
        ("brand-b", {"aud": "a-chat"}, "invalid_claim"),  # not B's audience
        ("brand-b", {"aud": ["a-chat", "ios"]}, "invalid_claim"),
        ("brand-b", {"aud": None}, "missing_claim"),
        ("brand-b", {"iss": ISSUERS["brand-a"], "aud": None}, "missing_claim"),
        ("brand-a", {"iss": ISSUERS["brand-b"]}, "invalid_claim"),  # B's iss, A's issuer
        ("brand-a", {"iss": None}, "missing_claim"),
        ("ios", {"iss": ISSUERS["brand-a"]}, "invalid_claim"),
    ],
)
def test_anothers_iss_or_aud_under_the_integrations_own_key_is_refused(tenants, dst, claims, code):
    """Signed with ``dst``'s own key, but claiming another integration's iss or aud."""
    token = tenants[dst].token(**claims)
    assert verdict(Client(), WHOAMI[dst], token) == code


@pytest.mark.parametrize(
    "dst, claims",
    [
        ("brand-b", {}),
        ("brand-b", {"aud": ["a-chat", "b-chat"]}),  # B's audience among others
        ("brand-a", {"aud": "anything"}),  # A sets no audience: aud is not checked
    ],
)
def test_the_integrations_own_iss_and_aud_are_accepted(tenants, dst, claims):
    body = ask(Client(), WHOAMI[dst], tenants[dst].token(**claims))
    assert (body["integration"], body["user_space"]) == (dst, SPACES[dst])


def test_a_prefix_inside_defaults_is_served_by_the_longer_one(tenants, settings):
    """``/chat/api/a/`` inside ``PROTECTED_PATHS``: the longest prefix wins, alone."""
    Integration.objects.filter(name="brand-a").update(paths=["/a/api/", "/chat/api/a/"])
    keyring.reset()  # the row was updated behind the manager's back: read it again
    client = Client()
    assert ask(client, "/chat/api/a/whoami", tenants["brand-a"].token())["integration"] == "brand-a"
    assert verdict(client, "/chat/api/a/whoami", tenants["default"].token()) == "unknown_key"
    assert ask(client, "/chat/api/whoami", tenants["default"].token())["integration"] == "default"


# -- a path served by several: iss picks (SPEC §13) -----------------------------------------


@pytest.mark.parametrize(
    "signer, claims, kid, expected",
    [
        ("brand-a", {}, "own", "brand-a"),
        ("brand-b", {}, "own", "brand-b"),
        ("brand-a", {"iss": None}, "own", "unknown_issuer"),
        ("brand-a", {"iss": "https://evil.example"}, "own", "unknown_issuer"),
        ("brand-a", {"iss": ISSUERS["ios"]}, "own", "unknown_issuer"),  # ios: not served here
        ("brand-a", {"iss": ISSUERS["brand-b"]}, "own", "unknown_key"),  # B judges: A's kid
        ("brand-a", {"iss": ISSUERS["brand-b"]}, None, "invalid_signature"),
        ("brand-b", {"iss": ISSUERS["brand-a"]}, "own", "unknown_key"),
        ("default", {"iss": ISSUERS["brand-a"]}, "own", "unknown_key"),
        ("default", {}, "own", "unknown_issuer"),
    ],
)
def test_on_a_shared_path_iss_picks_the_integration(tenants, signer, claims, kid, expected):
    token = tenants[signer].sign(tenants[signer].claims(**claims), kid=kid)
    body = ask(Client(), SHARED, token)
    assert body.get("error", body.get("integration")) == expected


def test_on_a_shared_path_the_one_without_issuer_takes_a_token_without_iss(tenants):
    Integration.objects.add("open", paths=["/shared/api/"])
    key, secret = Key.objects.generate_secret("tests", integration="open")
    now = int(chat_clock.now())
    claims = {"sub": "alice", "iat": now, "exp": now + 600}
    client = Client()
    assert ask(client, SHARED, hs256(secret, claims, kid=key.kid))["integration"] == "open"
    # open judges every token without iss: A's key is not open's
    assert verdict(client, SHARED, tenants["brand-a"].token(iss=None)) == "unknown_key"
    assert ask(client, SHARED, tenants["brand-a"].token())["integration"] == "brand-a"


# -- user revocations per user space ----------------------------------------------------------


def test_revoke_user_in_one_space_leaves_the_other_spaces_alice_alone(tenants, clock):
    client = Client()
    before = {name: tenants[name].token("alice") for name in TENANTS}
    RevokedUser.objects.revoke("alice", "tests", integration="brand-a")
    assert verdict(client, WHOAMI["brand-a"], before["brand-a"]) == "token_revoked"
    for name in ("brand-b", "default", "ios"):
        assert ask(client, WHOAMI[name], before[name])["user_id"] == "alice"
    # bob of brand-a was not revoked; a token of alice issued after the revocation is fine
    assert ask(client, WHOAMI["brand-a"], tenants["brand-a"].token("bob"))["user_id"] == "bob"
    clock.advance(5)
    after = tenants["brand-a"].token("alice", iat=int(clock.t))
    assert ask(client, WHOAMI["brand-a"], after)["user_id"] == "alice"
    assert RevokedUser.objects.get().user_space == "brand-a"
    audit = AuditEntry.objects.get(action="revoke_user")
    assert audit.detail == "alice (user space brand-a)"


@pytest.mark.parametrize("revoked_in", ["default", "ios"])
def test_web_and_ios_share_user_revocations(tenants, revoked_in):
    """One user space: revoking alice through either integration refuses her in both;
    brand-a and brand-b's alices are other people."""
    client = Client()
    before = {name: tenants[name].token("alice") for name in TENANTS}
    RevokedUser.objects.revoke("alice", "tests", integration=revoked_in)
    for name in ("default", "ios"):
        assert verdict(client, WHOAMI[name], before[name]) == "token_revoked"
    for name in ("brand-a", "brand-b"):
        assert verdict(client, WHOAMI[name], before[name]) == "ok"


# -- contacts and the chat session's subject per user space ----------------------------------


def test_contacts_through_requests_are_per_user_space(tenants):
    client = Client()
    pk = {
        name: ask(client, WHOAMI[name], tenants[name].token("alice"), contact=1)["contact"]
        for name in TENANTS
    }
    assert pk["default"] == pk["ios"]  # web and the iOS app: the same person
    assert len({pk["default"], pk["brand-a"], pk["brand-b"]}) == 3
    spaces = dict(Contact.objects.values_list("pk", "user_space"))
    assert {name: spaces[pk[name]] for name in TENANTS} == SPACES
    assert identity.find_contact("alice", user_space="brand-a").pk == pk["brand-a"]


def test_subject_binding_is_per_user_space(tenants, db):
    """A chat session holds one bound user per user space: bob of brand-b is not
    refused for alice of default, but bob of ios (default's space) is."""
    client = Client()
    client.force_login(User.objects.create_user("someone"))
    t = tenants
    assert verdict(client, WHOAMI["default"], t["default"].token("alice")) == "ok"
    assert verdict(client, WHOAMI["brand-b"], t["brand-b"].token("bob")) == "ok"
    assert verdict(client, WHOAMI["brand-a"], t["brand-a"].token("carol")) == "ok"
    assert verdict(client, WHOAMI["ios"], t["ios"].token("bob")) == "subject_changed"
    assert verdict(client, WHOAMI["ios"], t["ios"].token("alice")) == "ok"
    assert verdict(client, WHOAMI["brand-b"], t["brand-b"].token("alice")) == "subject_changed"
    assert verdict(client, SHARED, t["brand-a"].token("alice")) == "subject_changed"
    assert verdict(client, SHARED, t["brand-b"].token("bob")) == "ok"
    session = Session.objects.get().get_decoded()
    assert bound_subjects(session) == {"default": "alice", "brand-b": "bob", "brand-a": "carol"}


# -- contacts: keyed by (user space, user id) --------------------------------------------------


def person(user_id: str, user_space: str = "default", **claims: Any) -> SimpleNamespace:
    """A verified identity of ``user_space`` (what the middleware hands ``contact_for``)."""
    return SimpleNamespace(
        user_id=user_id,
        claims={"sub": user_id, "iat": 1, **claims},
        kid="k",
        anonymous=False,
        private=None,
        anonymous_id=None,
        user_space=user_space,
    )


def visitor(anonymous_id: str, user_space: str = "default") -> SimpleNamespace:
    return SimpleNamespace(
        user_id=None, claims={}, kid=None, anonymous=True, private=None,
        anonymous_id=anonymous_id, user_space=user_space,
    )  # fmt: skip


@pytest.mark.django_db
def test_the_same_user_id_in_two_spaces_is_two_contacts():
    ours = identity.contact_for(person("alice", name="Alice Default"))
    theirs = identity.contact_for(person("alice", "brand-b", name="Alice Brand"))
    assert ours.pk != theirs.pk
    assert (ours.user_space, theirs.user_space) == ("default", "brand-b")
    assert identity.find_contact("alice") == ours
    assert identity.find_contact("alice", user_space="brand-b") == theirs
    assert identity.find_contact("alice", user_space="brand-c") is None
    theirs.refresh_from_db()
    ours.refresh_from_db()
    assert (ours.first_name, ours.last_name) == ("Alice", "Default")
    assert (theirs.first_name, theirs.last_name) == ("Alice", "Brand")


@pytest.mark.django_db
def test_an_identity_without_a_user_space_is_defaults():
    """Identities built by hand before §13 (no ``user_space``) keep their contact."""
    bare = person("dave")
    del bare.user_space
    assert identity.contact_for(bare) == identity.find_contact("dave")


@pytest.mark.django_db
def test_deleting_alice_in_one_space_leaves_the_other_alice():
    identity.contact_for(person("alice", name="Alice Default"))
    identity.contact_for(person("alice", "brand-b", name="Alice Brand"))
    Message.objects.create(user_id="alice", text="default's alice wrote this")

    result = identity.delete_contact("alice", actor="tester", user_space="brand-b")

    assert result == {"user_id": "alice", "deleted": {"contact": 1}, "user_space": "brand-b"}
    assert list(Contact.objects.values_list("user_space", "user_id")) == [("default", "alice")]
    # The demo's chat is default's: its messages are default's alice's, and stay.
    assert Message.objects.filter(user_id="alice").count() == 1
    entry = AuditEntry.objects.get(action="delete_contact")
    assert entry.actor == "tester"
    assert entry.detail == "user space brand-b: alice (contact=1)"

    identity.delete_contact("alice", actor="tester")
    assert not Contact.objects.exists()
    assert Message.objects.filter(user_id="alice").count() == 0
    default_entry = AuditEntry.objects.filter(action="delete_contact").order_by("-pk").first()
    assert default_entry.detail == "alice (contact=1, messages=1)"


@pytest.mark.django_db
def test_a_long_user_id_never_pushes_the_space_out_of_the_audit_entry():
    identity.contact_for(person("x" * 255, "brand-b"))
    identity.delete_contact("x" * 255, user_space="brand-b")
    assert AuditEntry.objects.get().detail.startswith("user space brand-b: xxx")


@pytest.mark.django_db
def test_integrations_of_one_user_space_share_contacts():
    """web and ios (both in ``default``'s space) are the same people: one contact."""
    Integration.objects.add("ios", issuer="https://ios.example", paths=["/ios/api/"])
    space = Integration.objects.named("ios").user_space
    assert space == "default"
    first = identity.contact_for(person("bob", name="Bob Web"))
    second = identity.contact_for(person("bob", space, iat=2, email="bob@example.com"))
    assert first.pk == second.pk
    second.refresh_from_db()
    assert second.first_name == "Bob" and second.email == "bob@example.com"


ANON = "anon-" + "a" * 22


@pytest.mark.django_db
def test_link_anonymous_merges_within_one_user_space(settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": True}
    theirs = identity.contact_for(visitor(ANON, "brand-b"))
    theirs.user_data = {"cart": "brand-b's cart"}
    theirs.save()
    ours = identity.contact_for(person("alice", name="Alice Default"))

    link = continuity.link_anonymous(ANON, "alice", user_space="brand-b")

    assert (link.contact.user_space, link.contact.user_id) == ("brand-b", "alice")
    assert link.contact.user_data == {"cart": "brand-b's cart"}
    ours.refresh_from_db()
    assert ours.user_data == {}  # default's alice got nothing of brand-b's visitor
    assert not Contact.objects.filter(user_id=f"anon:{ANON}").exists()  # merged away
    assert continuity.link_anonymous(ANON, "alice", user_space="brand-b").pk == link.pk
    # One cookie id, one user: default's alice is another person.
    with pytest.raises(AnonymousLinkError, match="another user space"):
        continuity.link_anonymous(ANON, "alice")
    # Erasing brand-b's alice takes the link along; default's alice stays.
    result = identity.delete_contact("alice", user_space="brand-b")
    assert result["deleted"]["anonymous_links"] == 1
    assert Contact.objects.get().pk == ours.pk


@pytest.mark.django_db
def test_link_anonymous_defaults_to_the_default_space(settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": True}
    identity.contact_for(visitor(ANON))
    identity.contact_for(person("alice", "brand-b"))
    link = continuity.link_anonymous(ANON, "alice")
    assert (link.contact.user_space, link.contact.user_id) == ("default", "alice")
    assert Contact.objects.filter(user_space="brand-b").count() == 1


@pytest.mark.django_db
def test_the_demo_agent_page_shows_defaults_contacts_only(client, django_user_model):
    """The demo chat is default's: brand-b's alice is not the alice who wrote here."""
    identity.contact_for(person("alice", "brand-b", name="Brand Person"))
    Message.objects.create(user_id="alice", text="hello from default's alice")
    client.force_login(django_user_model.objects.create_user("agent", is_staff=True))
    page = client.get("/chat/agent/", {"user": "alice", "anonymous": 0})
    listing = client.get("/chat/agent/")
    assert "Brand Person" not in page.content.decode()
    assert "hello from default" in page.content.decode()
    assert "Brand Person" not in listing.content.decode()
    identity.contact_for(person("alice", name="Alice Default"))
    assert "Alice Default" in client.get("/chat/agent/").content.decode()


# -- WebSocket: a middleware per integration (SPEC §10, §13) ----------------------------------

WS = pytest.mark.django_db(transaction=True)
FAST = {"KEY_CACHE_SECONDS": 0.2}  # the watcher ticks every 0.1 s


def in_db(fn, *args, **kwargs):
    return database_sync_to_async(fn)(*args, **kwargs)


def socket_app(name: str) -> Any:
    """The echo consumer behind the middleware of ``name`` (``default``: built bare)."""
    return guarded() if name == "default" else guarded(integrations=[name])


@WS
@pytest.mark.parametrize("via", ["subprotocol", "identify"])
@pytest.mark.parametrize(
    "socket_of, signer, kid, code",
    [
        ("ios", "default", "own", "unknown_key"),
        ("ios", "default", None, "invalid_signature"),
        ("ios", "default", "issued", "unknown_key"),
        ("default", "ios", "own", "unknown_key"),
        ("default", "ios", None, "invalid_signature"),
        ("default", "ios", "issued", "unknown_key"),  # ES256, signed by the app for ios
        ("brand-a", "brand-b", "own", "unknown_key"),
        ("brand-b", "brand-a", None, "invalid_signature"),
        ("brand-a", "default", "own", "unknown_key"),
        ("default", "brand-a", "own", "unknown_key"),
    ],
)
async def test_a_socket_of_one_integration_refuses_anothers_tokens(
    tenants, via, socket_of, signer, kid, code
):
    t = tenants[signer]
    if kid == "issued":
        token = await in_db(tokens.issue, "alice", integration=signer)
    else:
        token = t.sign(t.claims(), kid=kid)
    own = await open_socket(socket_app(signer), token, via=via)
    await expect_identified(own, "alice")  # a valid token where it belongs
    await finish(own)
    comm = await open_socket(socket_app(socket_of), token, via=via)
    await expect_close(comm, 4401, code)
    await finish(comm)


@WS
@pytest.mark.parametrize("revoked_in", ["brand-a", "ios"])
async def test_revoke_user_closes_the_sockets_of_that_user_space_only(tenants, revoked_in):
    """Every integration's alice has a socket open; revoking alice in one user space
    closes its sockets (4401 token_revoked, within the bound) and no other."""
    closing = [name for name in TENANTS if SPACES[name] == SPACES[revoked_in]]
    with chat_settings(**FAST):
        sockets = {}
        for name in TENANTS:
            sockets[name] = await open_socket(socket_app(name), tenants[name].token("alice"))
            await expect_identified(sockets[name], "alice")
        started = time.monotonic()
        await in_db(RevokedUser.objects.revoke, "alice", "tests", integration=revoked_in)
        for name in closing:
            await expect_close(sockets[name], 4401, "token_revoked", timeout=2.2)
        assert time.monotonic() - started <= FAST["KEY_CACHE_SECONDS"] + 1
        for name in TENANTS:
            if name not in closing:
                await sockets[name].send_json_to({"type": "message", "text": "still here"})
                assert (await sockets[name].receive_json_from())["user"] == "alice"
        for comm in sockets.values():
            await finish(comm)


@WS
async def test_a_socket_of_two_user_spaces_takes_no_namesake_from_the_other(tenants):
    """On a socket both brands serve, alice of brand-b is not alice of brand-a."""
    app = guarded(integrations=["brand-a", "brand-b"])
    comm = await open_socket(app, tenants["brand-a"].token("alice"))
    await expect_identified(comm, "alice")
    renewal = tenants["brand-a"].token("alice", iat=int(chat_clock.now()))
    await comm.send_json_to({"type": "identify", "token": renewal})
    await expect_identified(comm, "alice")
    await comm.send_json_to({"type": "identify", "token": tenants["brand-b"].token("alice")})
    await expect_close(comm, 4401, "subject_changed")
    await finish(comm)


# -- propagation: what another process adds is in force within KEY_CACHE_SECONDS ---------------


def as_other_worker(snap: keyring.Snapshot, checked_ago: float) -> None:
    """This process stands for a worker that read ``snap`` ``checked_ago`` seconds ago."""
    keyring._State.snapshot = snap
    keyring._State.checked_at = keyring.time.monotonic() - checked_ago


@pytest.mark.django_db(transaction=True)
def test_an_integration_its_key_and_a_path_added_elsewhere_are_in_force_within_the_interval(
    clock,
):
    """Each change is made "by another process": this worker keeps its older snapshot.
    Until its interval has passed it may answer as before; once it has, the new way."""
    Key.objects.generate_secret("tests")
    client = Client()
    url = "/a/api/whoami"
    interval = keyring.get_snapshot().interval
    # KEY_CACHE_SECONDS (1 s), or half of it with a shared cache (the PostgreSQL lane)
    assert interval == (0.5 if conf.app_settings.KEY_CACHE_ALIAS else 1.0)

    def before_and_after(change, token, old, new) -> None:
        worker = keyring.get_snapshot()
        change()
        as_other_worker(worker, checked_ago=0)
        assert ask_or_not(client, url, token) == old
        as_other_worker(worker, checked_ago=interval)
        assert ask_or_not(client, url, token) == new

    before_and_after(
        lambda: Integration.objects.add("brand-a", issuer=ISSUERS["brand-a"], paths=["/a/api/"]),
        None,
        "unguarded",
        "security_not_configured",
    )
    made: dict[str, Any] = {}
    before_and_after(
        lambda: made.update(key=Key.objects.generate_secret("tests", integration="brand-a")),
        lambda: hs256(made["key"][1], Tenant("brand-a").claims(), kid=made["key"][0].kid),
        "security_not_configured",
        "brand-a",
    )
    brand_a_token = hs256(made["key"][1], Tenant("brand-a").claims(), kid=made["key"][0].kid)

    def add_path() -> None:
        row = Integration.objects.get(name="brand-a")
        row.paths = [*row.paths, "/shared/api/"]
        row.save()  # a plain save moves the version as the manager does

    url = SHARED
    before_and_after(add_path, brand_a_token, "unguarded", "brand-a")


def ask_or_not(client: Client, url: str, token: Any) -> str:
    """The integration that accepted, the refusal's code, or "unguarded"."""
    token = token() if callable(token) else token
    body = ask(client, url, token)
    if "error" in body:
        return body["error"]
    return body["integration"] if body["guarded"] else "unguarded"


# -- two real processes ------------------------------------------------------------------------

KEY_CACHE_SECONDS = 1.0  # tests/process_settings.py
SLACK = 0.5  # polling interval + a loaded CI machine

ELSEWHERE = {
    "add brand-a": (
        "from chat_security.models import Integration\n"
        "Integration.objects.add('brand-a', issuer='https://a.example', own_users=True,"
        " paths=['/a/api/'], actor='elsewhere')\n"
    ),
    "its secret": (
        "import json\n"
        "from chat_security.models import Key\n"
        "key, value = Key.objects.generate_secret('elsewhere', integration='brand-a')\n"
        "print(json.dumps({'kid': key.kid, 'secret': value}))\n"
    ),
    "revoke alice in brand-a": (
        "from chat_security.models import RevokedUser\n"
        "RevokedUser.objects.revoke('alice', 'elsewhere', integration='brand-a')\n"
    ),
    "add a path": (
        "from chat_security.models import Integration\n"
        "row = Integration.objects.get(name='brand-a')\n"
        "row.paths = [*row.paths, '/chat/api/worker']\n"
        "row.save()\n"
    ),
}


@pytest.fixture(params=["announced", "polled"])
def worker_env(request, tmp_path):
    """The server learns of changes from the shared cache, or by asking the database."""
    env = process_env("tests.worker_settings", tmp_path / "db.sqlite3")
    if request.param == "polled":
        env["CHAT_SECURITY_TEST_POLL"] = "1"
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "createcachetable")  # lane 1's shared cache (tests.worker_settings)
    return env


def http_get(base: str, url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(base + url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def answer(base: str, url: str, token: str | None) -> str:
    """What the server said, in one word: the refusal's code, or who accepted."""
    status, body = http_get(base, url, token)
    if status != 200:
        return body.get("error", str(status))
    return str(body.get("integration") or body.get("user_id") and "default")


def seconds_until(base: str, url: str, token: str | None, expected: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < KEY_CACHE_SECONDS + 5:
        if answer(base, url, token) == expected:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"{url} never answered {expected!r}")


def test_what_another_process_adds_is_in_force_on_the_server_within_the_interval(worker_env):
    """A server process; changes made by short-lived processes of their own (the Django
    shell, as a deploy script or another server would): an integration with its path, its
    key, a revocation in its user space, one more path. Timed from each writer's exit."""
    kid = json.loads(manage(worker_env, "chat_security", "generate-secret"))["kid"]
    default_token = manage(worker_env, "chat_security", "issue", "--sub", "alice").strip()
    assert kid
    with serving(
        worker_env, str(ROOT / "manage.py"), "runserver", "--noreload", "127.0.0.1:{port}"
    ) as port:
        base = f"http://127.0.0.1:{port}"
        assert seconds_until(base, "/chat/api/worker", default_token, "default") < 5
        assert answer(base, "/a/api/tenant", None) == "None"  # unguarded: the view says so
        taken = {}

        def elsewhere(what: str) -> str:
            return manage(worker_env, "shell", "-v", "0", "-c", ELSEWHERE[what])

        elsewhere("add brand-a")
        taken["integration"] = seconds_until(base, "/a/api/tenant", None, "security_not_configured")
        secret = json.loads(elsewhere("its secret"))
        now = int(time.time())
        claims = {"sub": "alice", "iss": ISSUERS["brand-a"], "iat": now - 5, "exp": now + 600}
        brand_token = hs256(secret["secret"], claims, kid=secret["kid"])
        taken["key"] = seconds_until(base, "/a/api/tenant", brand_token, "brand-a")
        assert answer(base, "/a/api/tenant", default_token) == "unknown_key"
        elsewhere("revoke alice in brand-a")
        taken["revoke-user"] = seconds_until(base, "/a/api/tenant", brand_token, "token_revoked")
        assert answer(base, "/chat/api/worker", default_token) == "default"  # default's alice
        elsewhere("add a path")
        taken["path"] = seconds_until(base, "/chat/api/worker", default_token, "unknown_key")
    print("seconds until the server obeyed:", {k: round(v, 2) for k, v in taken.items()})
    assert max(taken.values()) <= KEY_CACHE_SECONDS + SLACK, taken
