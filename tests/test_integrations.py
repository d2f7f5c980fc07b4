"""Integrations across tenants (SPEC §13): user spaces end to end.

A token of one integration is never accepted on another's path or socket;
integrations with their own users share no contacts, revocations or subject
binding with ``default``; integrations in one user space share all three.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chat_security import identity
from chat_security.models import AuditEntry, Contact, Integration
from demo_site.chat.models import Message


def person(user_id: str, user_space: str = "default", **claims) -> SimpleNamespace:
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


# -- contacts: keyed by (user space, user id) -----------------------------------------


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
