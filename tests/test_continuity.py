"""Anonymous → verified continuity (SPEC §11): ``link_anonymous``, the signal,
GDPR deletion that follows the links, the demo's login hook and the admin."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import chat_security
from chat_security import (
    AnonymousLinkError,
    anonymous_linked,
    contact_deleting,
    continuity,
    identity,
)
from chat_security.models import AnonymousLink, AuditEntry, Contact
from demo_site.chat.models import Message
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, security_off
from tests.test_cli import cli

secret, token_for = chat_helpers.secret, chat_helpers.token_for
alice, bob = chat_helpers.alice, chat_helpers.bob

MESSAGES = "/chat/api/messages"
LOGIN = "/accounts/login/"
COOKIE = "chat_anonymous_id"


def anon_id(n: int = 1) -> str:
    """A well-formed anonymous cookie id ("anon-" and 22 characters)."""
    return f"anon-{'x' * 20}{n:02d}"


def anonymous_contact(n: int = 1, **fields) -> Contact:
    return Contact.objects.create(user_id=f"anon:{anon_id(n)}", anonymous=True, **fields)


def user_contact(user_id: str = "user-1", **fields) -> Contact:
    return Contact.objects.create(user_id=user_id, **fields)


def apply_token(sub: str, **claims) -> Contact:
    token_claims = {"sub": sub, "iat": 1, **claims}
    return identity.contact_for(
        SimpleNamespace(
            user_id=sub, claims=token_claims, kid="k", anonymous=False, anonymous_id=None
        )
    )


@pytest.fixture
def linked_signals():
    """What ``anonymous_linked`` carried, call by call."""
    seen = []

    def record(sender, **kwargs):
        seen.append({"sender": sender, **kwargs})

    anonymous_linked.connect(record, dispatch_uid="tests.record_linked")
    yield seen
    anonymous_linked.disconnect(dispatch_uid="tests.record_linked")


@pytest.fixture
def deleting_signals():
    seen = []

    def record(sender, **kwargs):
        seen.append(kwargs)

    contact_deleting.connect(record, dispatch_uid="tests.record_deleting")
    yield seen
    contact_deleting.disconnect(dispatch_uid="tests.record_deleting")


# -- the public API --------------------------------------------------------------------


def test_the_continuity_names_are_public():
    assert chat_security.link_anonymous is continuity.link_anonymous
    assert {"link_anonymous", "anonymous_linked", "AnonymousLinkError", "anonymous_id_of"} <= set(
        chat_security.__all__
    )
    assert issubclass(AnonymousLinkError, chat_security.ChatSecurityError)


# -- merging -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_merge_fills_only_the_fields_the_user_lacks(clock):
    anonymous_contact(
        email="anon@example.com",
        first_name="Anon",
        phone="+441234567890",
        locale="fr-FR",
        agent_data=[{"label": "Plan", "value": "trial"}],
    )
    user_contact(email="user@example.com", first_name="", last_name="Smith", crm_id="C-1")

    link = continuity.link_anonymous(anon_id(), "user-1")

    user = Contact.objects.get(user_id="user-1")
    assert link.contact == user
    assert user.email == "user@example.com"  # the user's own value wins
    assert (user.first_name, user.last_name) == ("Anon", "Smith")  # lacking → filled
    assert (user.phone, user.locale, user.crm_id) == ("+441234567890", "fr-FR", "C-1")
    assert user.agent_data == [{"label": "Plan", "value": "trial"}]
    assert not user.anonymous
    assert not Contact.objects.filter(user_id=f"anon:{anon_id()}").exists()


@pytest.mark.django_db
def test_merge_adds_only_the_user_data_keys_the_user_lacks(clock):
    anonymous_contact(user_data={"plan": "trial", "cart": 3, "newsletter": True})
    user_contact(user_data={"plan": "gold", "seats": 5})
    continuity.link_anonymous(anon_id(), "user-1")
    assert Contact.objects.get(user_id="user-1").user_data == {
        "plan": "gold",
        "seats": 5,
        "cart": 3,
        "newsletter": True,
    }


@pytest.mark.django_db
def test_merged_user_data_respects_the_cap_and_never_drops_the_users_keys(clock):
    anonymous_contact(user_data={"big": "x" * 80, "small": 1})
    user_contact(user_data={"mine": "y" * 60})
    with chat_settings(USER_DATA_MAX_BYTES=100):
        continuity.link_anonymous(anon_id(), "user-1")
    # {"mine":"y…60"} is 71 bytes: "big" no longer fits, "small" does.
    assert Contact.objects.get(user_id="user-1").user_data == {"mine": "y" * 60, "small": 1}

    anonymous_contact(2, user_data={"more": 1})
    with chat_settings(USER_DATA_MAX_BYTES=10):  # lowered below what the user holds
        continuity.link_anonymous(anon_id(2), "user-1")
    assert Contact.objects.get(user_id="user-1").user_data == {"mine": "y" * 60, "small": 1}


@pytest.mark.django_db
def test_a_user_without_a_contact_gets_one_from_the_anonymous_data(clock):
    anonymous_contact(email="anon@example.com", user_data={"cart": 2})
    continuity.link_anonymous(anon_id(), "user-1")
    user = Contact.objects.get()
    assert (user.user_id, user.anonymous) == ("user-1", False)
    assert (user.email, user.user_data) == ("anon@example.com", {"cart": 2})
    assert user.created_at is not None and user.updated_at is not None
    assert user.last_token == "" and (user.token_iat, user.token_exp) == (None, None)


@pytest.mark.django_db
def test_the_users_first_token_still_applies_over_merged_data(clock):
    anonymous_contact(email="anon@example.com", first_name="Anon", user_data={"cart": 2})
    continuity.link_anonymous(anon_id(), "user-1")
    contact = apply_token("user-1", email="real@example.com", userData={"plan": "gold"})
    assert contact.email == "real@example.com" and contact.first_name == "Anon"
    assert contact.user_data == {"cart": 2, "plan": "gold"}


# -- the link and the signal -------------------------------------------------------------


@pytest.mark.django_db
def test_the_link_is_recorded_and_the_signal_carries_the_ids(clock, linked_signals):
    anonymous_contact()
    user = user_contact()
    link = continuity.link_anonymous(anon_id(), "user-1")

    stored = AnonymousLink.objects.get()
    assert stored == link and stored.anonymous_id == anon_id() and stored.contact == user
    assert stored.linked_at.timestamp() == clock.t
    assert str(stored) == f"{anon_id()} -> {user.pk}"
    assert len(linked_signals) == 1
    sent = linked_signals[0]
    assert sent["sender"] is AnonymousLink
    assert (sent["anonymous_id"], sent["user_id"]) == (anon_id(), "user-1")
    assert sent["contact"].pk == user.pk
    assert user.anonymous_links.get() == stored


@pytest.mark.django_db
def test_the_signal_is_sent_before_the_anonymous_contact_goes(clock):
    anonymous_contact()
    still_there = []

    def look(sender, **kwargs):
        still_there.append(Contact.objects.filter(user_id=f"anon:{anon_id()}").exists())

    anonymous_linked.connect(look, dispatch_uid="tests.look")
    try:
        continuity.link_anonymous(anon_id(), "user-1")
    finally:
        anonymous_linked.disconnect(dispatch_uid="tests.look")
    assert still_there == [True]
    assert not Contact.objects.filter(anonymous=True).exists()


@pytest.mark.django_db
def test_without_an_anonymous_contact_the_link_and_the_signal_still_happen(clock, linked_signals):
    link = continuity.link_anonymous(anon_id(), "user-1")
    assert AnonymousLink.objects.get() == link
    assert [(s["anonymous_id"], s["user_id"]) for s in linked_signals] == [(anon_id(), "user-1")]
    # The user's contact exists (empty), so a GDPR deletion of the user finds the link.
    user = Contact.objects.get()
    assert user.user_id == "user-1" and user.email == "" and link.contact == user


@pytest.mark.django_db
def test_linking_the_same_pair_again_changes_nothing(clock, linked_signals):
    anonymous_contact(email="anon@example.com")
    first = continuity.link_anonymous(anon_id(), "user-1")
    before = Contact.objects.get(user_id="user-1")
    clock.advance(3600)

    again = continuity.link_anonymous(anon_id(), "user-1")

    assert again == first and again.linked_at == first.linked_at
    assert AnonymousLink.objects.count() == 1
    after = Contact.objects.get(user_id="user-1")
    assert (after.email, after.updated_at) == (before.email, before.updated_at)
    # Signalled again, so anything written under the id since would follow.
    assert len(linked_signals) == 2


@pytest.mark.django_db
def test_a_repeat_picks_up_what_was_written_under_the_id_since(clock):
    anonymous_contact()
    Message.objects.create(user_id=anon_id(), anonymous=True, text="before login")
    continuity.link_anonymous(anon_id(), "user-1")
    # The browser kept its cookie (a site that does not renew it) and chatted again.
    anonymous_contact(user_data={"cart": 1})
    Message.objects.create(user_id=anon_id(), anonymous=True, text="after logout")
    continuity.link_anonymous(anon_id(), "user-1")
    assert list(Message.objects.values_list("user_id", "anonymous", "text")) == [
        ("user-1", False, "before login"),
        ("user-1", False, "after logout"),
    ]
    assert Contact.objects.get().user_data == {"cart": 1}


@pytest.mark.django_db
def test_a_link_to_a_second_user_is_refused_and_changes_nothing(clock, linked_signals):
    continuity.link_anonymous(anon_id(), "user-1")
    anonymous_contact(email="anon@example.com")
    with pytest.raises(AnonymousLinkError, match="already linked to another user"):
        continuity.link_anonymous(anon_id(), "user-2")
    assert [(link.anonymous_id, link.contact.user_id) for link in AnonymousLink.objects.all()] == [
        (anon_id(), "user-1")
    ]
    assert not Contact.objects.filter(user_id="user-2").exists()
    assert Contact.objects.filter(user_id=f"anon:{anon_id()}", email="anon@example.com").exists()
    assert len(linked_signals) == 1


@pytest.mark.django_db
def test_one_user_may_link_several_anonymous_ids(clock):
    for n in (1, 2, 3):
        continuity.link_anonymous(anon_id(n), "user-1")
    user = Contact.objects.get()
    assert sorted(user.anonymous_links.values_list("anonymous_id", flat=True)) == [
        anon_id(1),
        anon_id(2),
        anon_id(3),
    ]


@pytest.mark.django_db
def test_a_failing_receiver_undoes_the_whole_link(clock):
    anonymous_contact(email="anon@example.com")
    user_contact()
    Message.objects.create(user_id=anon_id(), anonymous=True, text="hi")

    def broken(sender, **kwargs):
        raise RuntimeError("the app could not move its data")

    anonymous_linked.connect(broken, dispatch_uid="tests.broken")
    try:
        with pytest.raises(RuntimeError):
            continuity.link_anonymous(anon_id(), "user-1")
    finally:
        anonymous_linked.disconnect(dispatch_uid="tests.broken")
    assert not AnonymousLink.objects.exists()
    assert Contact.objects.get(user_id="user-1").email == ""
    assert Contact.objects.filter(user_id=f"anon:{anon_id()}").exists()
    assert Message.objects.get().anonymous  # the demo's move was rolled back too


# -- concurrency -----------------------------------------------------------------------------


def _race(monkeypatch, competitor: str) -> None:
    """Another process commits a link of the id to ``competitor`` just after our
    SELECT saw none: our INSERT then hits the unique constraint."""
    other = Contact.objects.get_or_create(user_id=competitor)[0]
    AnonymousLink.objects.create(anonymous_id=anon_id(), contact=other)
    real_filter = AnonymousLink.objects.filter

    def filter_before_the_commit(*args, **kwargs):
        monkeypatch.setattr(AnonymousLink.objects, "filter", real_filter)
        return real_filter(*args, **kwargs).none()

    monkeypatch.setattr(AnonymousLink.objects, "filter", filter_before_the_commit)


@pytest.mark.django_db
def test_a_concurrent_link_to_another_user_is_refused_on_retry(clock, monkeypatch):
    _race(monkeypatch, competitor="user-2")
    with pytest.raises(AnonymousLinkError, match="another user"):
        continuity.link_anonymous(anon_id(), "user-1")
    assert AnonymousLink.objects.get().contact.user_id == "user-2"


@pytest.mark.django_db
def test_a_concurrent_link_of_the_same_pair_is_taken_as_done(clock, monkeypatch):
    _race(monkeypatch, competitor="user-1")
    link = continuity.link_anonymous(anon_id(), "user-1")
    assert AnonymousLink.objects.get() == link and link.contact.user_id == "user-1"


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "anonymous_id",
    [
        None,
        12,
        "",
        "anon-short",
        "anon-" + "x" * 23,
        f"anon:{anon_id()}",  # the contact key, not the cookie id
        "anon-" + "x" * 21 + "!",
        " " + anon_id(),
        "user-" + "x" * 22,
    ],
)
def test_malformed_anonymous_ids_are_refused(anonymous_id, clock):
    with pytest.raises(AnonymousLinkError, match="visitor cookie id"):
        continuity.link_anonymous(anonymous_id, "user-1")
    assert not AnonymousLink.objects.exists() and not Contact.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("user_id", "reason"),
    [
        (None, "must be a string"),
        (7, "must be a string"),
        ("", "1–255 characters"),
        ("x" * 256, "1–255 characters"),
        (" user", "printable ASCII"),
        ("usér", "printable ASCII"),
        ("user\n", "printable ASCII"),
        ("anon:someone", "reserved"),
    ],
)
def test_malformed_user_ids_are_refused(user_id, reason, clock):
    with pytest.raises(AnonymousLinkError, match=reason):
        continuity.link_anonymous(anon_id(), user_id)
    assert not AnonymousLink.objects.exists() and not Contact.objects.exists()


# -- GDPR ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_the_user_follows_the_links(clock, deleting_signals):
    anonymous_contact(1)
    Message.objects.create(user_id=anon_id(1), anonymous=True, text="anon one")
    continuity.link_anonymous(anon_id(1), "user-1")  # moves "anon one" to the user
    continuity.link_anonymous(anon_id(2), "user-1")  # no contact, nothing to move
    Message.objects.create(user_id=anon_id(2), anonymous=True, text="written since")
    anonymous_contact(2)  # re-created by that later anonymous chat
    Message.objects.create(user_id="user-1", text="as the user")
    Message.objects.create(user_id=anon_id(3), anonymous=True, text="someone else")
    Message.objects.create(user_id=anon_id(1), anonymous=False, text="a user whose sub looks anon")

    result = identity.delete_contact("user-1", actor="tests")

    assert result == {
        "user_id": "user-1",
        "deleted": {"contact": 1, "messages": 3, "anonymous_contacts": 1, "anonymous_links": 2},
    }
    assert list(Message.objects.values_list("text", flat=True)) == [
        "someone else",
        "a user whose sub looks anon",
    ]
    assert not Contact.objects.exists() and not AnonymousLink.objects.exists()
    calls = {
        (c["user_id"], c["contact"].anonymous, c["contact"].pk is None) for c in deleting_signals
    }
    assert calls == {
        (anon_id(1), True, True),  # merged away: an unsaved stand-in
        (anon_id(2), True, False),  # still a row
        ("user-1", False, False),
    }
    stand_in = next(c["contact"] for c in deleting_signals if c["user_id"] == anon_id(1))
    assert stand_in.user_id == f"anon:{anon_id(1)}"
    audit = AuditEntry.objects.get(action="delete_contact")
    assert "anonymous_links=2" in audit.detail


@pytest.mark.django_db
def test_delete_contact_cli_reports_the_linked_counts(clock):
    continuity.link_anonymous(anon_id(), "user-1")
    Message.objects.create(user_id=anon_id(), anonymous=True, text="later")
    result = cli("delete-contact", "user-1")
    assert result.code == 0
    assert result.json["deleted"] == {"contact": 1, "messages": 1, "anonymous_links": 1}
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_deleting_an_anonymous_contact_erases_its_link(clock):
    continuity.link_anonymous(anon_id(), "user-1")
    anonymous_contact()  # the same browser chatted again
    result = identity.delete_contact(f"anon:{anon_id()}")
    assert result["deleted"] == {"contact": 1, "anonymous_links": 1}
    assert not AnonymousLink.objects.exists()
    assert Contact.objects.filter(user_id="user-1").exists()


@pytest.mark.django_db
def test_deletion_costs_the_same_queries_however_many_ids_are_linked(clock):
    def queries_to_delete(user_id: str, numbers: range) -> int:
        for n in numbers:
            continuity.link_anonymous(anon_id(n), user_id)
            anonymous_contact(n)  # re-created, so there is a row to delete as well
        with CaptureQueriesContext(connection) as captured:
            identity.delete_contact(user_id)
        return len(captured.captured_queries)

    one, three = queries_to_delete("user-1", range(1, 2)), queries_to_delete("user-3", range(3, 6))
    # The package's own work is constant; the demo's receiver deletes once per id.
    assert three - one == 2


# -- the demo's receivers --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_demo_moves_only_that_anonymous_conversation(clock):
    Message.objects.create(user_id=anon_id(1), anonymous=True, text="mine")
    Message.objects.create(user_id=anon_id(1), anonymous=True, sender="agent", text="reply")
    Message.objects.create(user_id=anon_id(2), anonymous=True, text="another visitor")
    Message.objects.create(user_id=anon_id(1), anonymous=False, text="a sub that looks anon")
    results = anonymous_linked.send(
        sender=AnonymousLink, anonymous_id=anon_id(1), user_id="7", contact=None
    )
    assert {"messages": 2} in [result for _receiver, result in results]
    assert list(Message.objects.values_list("user_id", "anonymous", "text")) == [
        ("7", False, "mine"),
        ("7", False, "reply"),
        (anon_id(2), True, "another visitor"),
        (anon_id(1), False, "a sub that looks anon"),
    ]


def post(client: Client, text: str, headers=None):
    return client.post(
        MESSAGES, json.dumps({"text": text}), content_type="application/json", headers=headers or {}
    )


def login(client: Client, username: str, password: str):
    response = client.post(LOGIN, {"username": username, "password": password})
    assert response.status_code == 302, response.content
    return response


def verified_history(client: Client) -> list[str]:
    token = client.get("/api/chat-token").json()["token"]
    body = client.get(MESSAGES, headers=bearer(token)).json()
    return [m["text"] for m in body["messages"]]


@pytest.mark.django_db
def test_login_keeps_the_anonymous_conversation(alice, secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = Client()
        assert post(browser, "hello, anyone?").status_code == 201
        assert post(browser, "I need help with my order").status_code == 201
        cookie = browser.cookies[COOKIE].value
        Message.objects.create(user_id=cookie, anonymous=True, sender="agent", text="On it!")
        assert Contact.objects.filter(user_id=f"anon:{cookie}").exists()

        response = login(browser, "alice", "pw-alice")

        # The id is spent: the login response gives the browser a new one.
        renewed = response.cookies[COOKIE].value
        assert renewed != cookie and renewed.startswith("anon-")
        assert verified_history(browser) == [
            "hello, anyone?",
            "I need help with my order",
            "On it!",
        ]
        link = AnonymousLink.objects.get()
        assert (link.anonymous_id, link.contact.user_id) == (cookie, str(alice.pk))
        assert not Contact.objects.filter(anonymous=True).exists()
        assert not Message.objects.filter(anonymous=True).exists()

        # Any device of alice's sees it too (history follows the user id).
        other = Client()
        other.force_login(alice)
        assert "On it!" in verified_history(other)


@pytest.mark.django_db
def test_after_logout_the_browser_starts_a_new_anonymous_conversation(alice, bob, secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = Client()
        post(browser, "alice, before login")
        login(browser, "alice", "pw-alice")
        browser.post("/accounts/logout/")
        assert browser.get(MESSAGES).json()["messages"] == []  # not alice's conversation
        post(browser, "bob, before login")
        login(browser, "bob", "pw-bob")
        assert verified_history(browser) == ["bob, before login"]
        assert AnonymousLink.objects.count() == 2


@pytest.mark.django_db
def test_login_without_an_anonymous_id_links_nothing(alice, secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = Client()
        response = login(browser, "alice", "pw-alice")
        assert COOKIE not in response.cookies
    with chat_settings(ANONYMOUS_IDS=False):
        browser = Client()
        browser.cookies[COOKIE] = anon_id()
        response = login(browser, "alice", "pw-alice")
        assert COOKIE not in response.cookies
    browser = Client()
    browser.cookies[COOKIE] = "anon-forged"
    with chat_settings(ANONYMOUS_IDS=True):
        login(browser, "alice", "pw-alice")
    assert not AnonymousLink.objects.exists()


@pytest.mark.django_db
def test_a_refused_link_does_not_stop_the_login(alice, bob, secret, caplog):
    continuity.link_anonymous(anon_id(), str(bob.pk))
    Message.objects.create(user_id=anon_id(), anonymous=True, text="bob's, later")
    browser = Client()
    browser.cookies[COOKIE] = anon_id()
    with chat_settings(ANONYMOUS_IDS=True), caplog.at_level(logging.WARNING, "demo_site.chat"):
        response = login(browser, "alice", "pw-alice")
    assert "already linked to another user" in caplog.text
    assert response.cookies[COOKIE].value != anon_id()  # spent all the same
    assert Message.objects.get().anonymous  # not alice's
    assert AnonymousLink.objects.get().contact.user_id == str(bob.pk)


@pytest.mark.django_db
def test_an_unexpected_failure_does_not_stop_the_login(alice, secret, monkeypatch, caplog):
    import demo_site.chat.receivers as receivers

    def broken(*args):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(receivers, "link_anonymous", broken)
    browser = Client()
    browser.cookies[COOKIE] = anon_id()
    with chat_settings(ANONYMOUS_IDS=True), caplog.at_level(logging.ERROR, "demo_site.chat"):
        response = login(browser, "alice", "pw-alice")
    assert "RuntimeError" in caplog.text
    assert COOKIE not in response.cookies  # kept, so the next login tries again


def test_anonymous_id_of_reads_a_well_formed_cookie_only(settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": True}
    factory = RequestFactory()
    assert chat_security.anonymous_id_of(factory.get("/")) is None
    request = factory.get("/")
    request.COOKIES[COOKIE] = anon_id()
    assert chat_security.anonymous_id_of(request) == anon_id()
    request.COOKIES[COOKIE] = anon_id() + "x"
    assert chat_security.anonymous_id_of(request) is None
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ANONYMOUS_IDS": False}
    request.COOKIES[COOKIE] = anon_id()
    assert chat_security.anonymous_id_of(request) is None


@pytest.mark.django_db
def test_the_login_hook_costs_a_few_queries(alice, clock, django_assert_num_queries):
    from demo_site.chat.receivers import link_on_login

    anonymous_contact(user_data={"cart": 1})
    Message.objects.create(user_id=anon_id(), anonymous=True, text="hi")
    request = RequestFactory().get("/")
    request.COOKIES[COOKIE] = anon_id()
    with chat_settings(ANONYMOUS_IDS=True):
        # savepoint, lock both contacts, the link, insert the user's contact, insert
        # the link, move the messages, delete the anonymous contact (and, by
        # cascade, links to it: none), release
        with django_assert_num_queries(9):
            link_on_login(request=request, user=alice)
        # Repeated (a site that does not renew the id): nothing left to write.
        with django_assert_num_queries(5):
            link_on_login(request=request, user=alice)


# -- the admin -------------------------------------------------------------------------------


@pytest.fixture
def viewer(client, db):
    user = User.objects.create_user("agent", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_contact", content_type__app_label="chat_security")
    )
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_users_contact_page_lists_its_links(viewer, clock):
    anonymous_contact(email="anon@example.com")
    continuity.link_anonymous(anon_id(), "user-1")
    clock.advance(60)
    continuity.link_anonymous(anon_id(2), "user-1")
    user = Contact.objects.get(user_id="user-1")

    page = viewer.get(reverse("admin:chat_security_contact_change", args=[user.pk]))

    body = page.content.decode()
    assert page.status_code == 200
    assert "Anonymous conversations merged into this contact" in body
    assert body.index(anon_id(2)) < body.index(anon_id(1))  # newest first
    assert "<time datetime=" in body
    assert 'name="anonymous_id"' not in body  # read-only


@pytest.mark.django_db
def test_a_contact_without_links_says_so_and_anonymous_contacts_show_nothing(viewer, clock):
    user = user_contact()
    anonymous = anonymous_contact()
    page = viewer.get(reverse("admin:chat_security_contact_change", args=[user.pk]))
    assert "no anonymous conversation has been linked" in page.content.decode()
    page = viewer.get(reverse("admin:chat_security_contact_change", args=[anonymous.pk]))
    assert page.status_code == 200
    assert "Anonymous conversations merged" not in page.content.decode()


@pytest.mark.django_db
def test_the_admin_deletion_reports_the_links(admin_client, clock):
    continuity.link_anonymous(anon_id(), "user-1")
    Message.objects.create(user_id=anon_id(), anonymous=True, text="later")
    user = Contact.objects.get()
    url = reverse("admin:chat_security_contact_delete", args=[user.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert "Deleted user-1 (contact: 1, messages: 1, anonymous_links: 1)." in shown
    assert not Message.objects.exists() and not AnonymousLink.objects.exists()
