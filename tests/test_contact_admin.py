from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import override_settings
from django.urls import reverse

from chat_security import identity
from chat_security.admin.contacts import GDPR_ACTION
from chat_security.models import AuditEntry, Contact
from demo_site.chat.models import Message

CHANGELIST = "admin:chat_security_contact_changelist"
SECRET = "PRIVATE-VALUE-7a6b5c"


def make_contact(sub: str, user_space: str = "default", **claims) -> Contact:
    token_claims = {"sub": sub, "iat": 1, **claims}
    return identity.contact_for(
        SimpleNamespace(
            user_id=sub,
            claims=token_claims,
            kid="k",
            anonymous=False,
            private={"privCardNumber": SECRET},
            anonymous_id=None,
            user_space=user_space,
        )
    )


@pytest.fixture
def people(db):
    jane = make_contact(
        "user-jane",
        name="Jane Doe",
        email="jane@example.com",
        crmID="CRM-1",
        userData={"plan": "gold"},
        agentData=[{"label": "<script>x</script>", "value": "Gold", "type": "status"}],
    )
    bob = make_contact("user-bob", name="Bob Stone")
    for text in ("one", "two"):
        Message.objects.create(user_id="user-jane", text=text)
    Message.objects.create(user_id="user-bob", text="bob's")
    return jane, bob


@pytest.fixture
def staff(db):
    def make(*codenames: str) -> User:
        user = User.objects.create_user("agent", password="pw", is_staff=True)
        for codename in codenames:
            user.user_permissions.add(
                Permission.objects.get(codename=codename, content_type__app_label="chat_security")
            )
        return User.objects.get(pk=user.pk)

    return make


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_list_and_search_by_user_id(admin_client, people):
    response = admin_client.get(reverse(CHANGELIST), {"q": "user-jane"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "user-jane" in body and "user-bob" not in body
    assert "Jane Doe" in body


def test_change_view_is_read_only_and_shows_no_private_data(admin_client, people):
    jane, _bob = people
    url = reverse("admin:chat_security_contact_change", args=[jane.pk])
    with override_settings(CHAT_SECURITY={"CRM_URL_TEMPLATE": "https://crm.example.com/{crm_id}"}):
        response = admin_client.get(url)
    body = response.content.decode()
    assert response.status_code == 200
    assert "jane@example.com" in body and "&quot;plan&quot;: &quot;gold&quot;" in body
    assert 'href="https://crm.example.com/CRM-1"' in body
    assert "cs-visitor" in body and "&lt;script&gt;x&lt;/script&gt;" in body
    assert "<script>x</script>" not in body
    assert SECRET not in body and "privCardNumber" not in body
    assert 'name="email"' not in body  # no editable inputs
    assert jane.last_token not in body
    # Posting a change does nothing.
    response = admin_client.post(url, {"email": "evil@example.com"})
    assert response.status_code == 403
    jane.refresh_from_db()
    assert jane.email == "jane@example.com"


def test_contacts_cannot_be_added(admin_client, db):
    assert admin_client.get(reverse("admin:chat_security_contact_add")).status_code == 403


def test_gdpr_action_confirms_then_deletes_everything_and_reports(admin_client, people):
    jane, bob = people
    url = reverse(CHANGELIST)
    changelist = admin_client.get(url).content.decode()
    assert str(GDPR_ACTION) in changelist
    data = {"action": "delete_selected", "_selected_action": [jane.pk]}

    confirm = admin_client.post(url, data)
    assert confirm.status_code == 200  # the confirmation page; nothing deleted yet
    assert "Are you sure" in confirm.content.decode()
    assert Contact.objects.filter(pk=jane.pk).exists()

    done = admin_client.post(url, {**data, "post": "yes"}, follow=True)
    assert done.status_code == 200
    assert "Deleted user-jane (contact: 1, messages: 2)." in texts(done)
    assert not Contact.objects.filter(user_id="user-jane").exists()
    assert not Message.objects.filter(user_id="user-jane").exists()
    assert Contact.objects.filter(pk=bob.pk).exists()
    assert Message.objects.filter(user_id="user-bob").count() == 1
    audit = AuditEntry.objects.get(action="delete_contact")
    assert audit.actor == "admin:admin" and audit.detail.startswith("user-jane")
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert entry.object_repr == "user-jane"  # no name kept in the admin log


def test_single_delete_button_takes_the_same_path(admin_client, people):
    jane, _bob = people
    url = reverse("admin:chat_security_contact_delete", args=[jane.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Deleted user-jane (contact: 1, messages: 2)." in texts(response)
    assert not Message.objects.filter(user_id="user-jane").exists()


def test_action_needs_the_delete_permission(client, people, staff):
    jane, _bob = people
    client.force_login(staff("view_contact"))
    url = reverse(CHANGELIST)
    listing = client.get(url)
    assert listing.status_code == 200
    assert str(GDPR_ACTION) not in listing.content.decode()
    client.post(url, {"action": "delete_selected", "_selected_action": [jane.pk], "post": "yes"})
    assert Contact.objects.filter(pk=jane.pk).exists()
    assert Message.objects.filter(user_id="user-jane").count() == 2


def test_delete_permission_is_enough(client, people, staff):
    jane, _bob = people
    client.force_login(staff("view_contact", "delete_contact"))
    url = reverse(CHANGELIST)
    data = {"action": "delete_selected", "_selected_action": [jane.pk], "post": "yes"}
    response = client.post(url, data, follow=True)
    assert "Deleted user-jane (contact: 1, messages: 2)." in texts(response)


def test_non_staff_cannot_reach_contacts(client, people):
    user = User.objects.create_user("visitor", password="pw")
    client.force_login(user)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "/login/" in response["Location"]


# -- user spaces (SPEC §13) ------------------------------------------------------------------


@pytest.fixture
def namesakes(people):
    """jane of default (with messages) and jane of brand-b: two people, one id."""
    return people[0], make_contact("user-jane", "brand-b", name="Jane Brand")


def test_the_list_shows_and_filters_by_user_space(admin_client, namesakes):
    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "brand-b" in listing and "Jane Doe" in listing and "Jane Brand" in listing
    assert 'href="?user_space=brand-b"' in listing  # the filter's link
    only_b = admin_client.get(reverse(CHANGELIST), {"user_space": "brand-b"})
    body = only_b.content.decode()
    assert "Jane Brand" in body and "Jane Doe" not in body


def test_the_change_view_names_the_user_space(admin_client, namesakes):
    _jane, brand_jane = namesakes
    url = reverse("admin:chat_security_contact_change", args=[brand_jane.pk])
    body = admin_client.get(url).content.decode()
    assert "User space" in body and "brand-b" in body


def test_deleting_one_space_s_contact_leaves_the_namesake(admin_client, namesakes):
    jane, brand_jane = namesakes
    url = reverse(CHANGELIST)
    data = {"action": "delete_selected", "_selected_action": [brand_jane.pk], "post": "yes"}
    done = admin_client.post(url, data, follow=True)
    assert "Deleted brand-b: user-jane (contact: 1)." in texts(done)
    assert set(Contact.objects.values_list("user_space", "user_id")) == {
        ("default", "user-jane"),
        ("default", "user-bob"),
    }
    assert Message.objects.filter(user_id="user-jane").count() == 2  # default's jane's
    audit = AuditEntry.objects.get(action="delete_contact")
    assert audit.detail == "user space brand-b: user-jane (contact=1)"
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert entry.object_repr == "brand-b: user-jane"
    # and default's jane, by the single delete button: her messages go with her
    url = reverse("admin:chat_security_contact_delete", args=[jane.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "Deleted user-jane (contact: 1, messages: 2)." in texts(response)
