from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.http import JsonResponse
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path

from chat_security import identity, tokens, values
from chat_security.exceptions import ChatSecurityError
from chat_security.identity_types import ChatIdentity
from chat_security.models import AuditEntry, Contact, Key, SecurityConfig
from chat_security.signals import contact_deleting
from demo_site.chat.models import Message


def contact_view(request):
    contact = request.chat_identity.contact
    return JsonResponse({"contact": contact.pk if contact else None})


urlpatterns = [path("chat/api/whoami", contact_view)]

VENDOR_EXAMPLE = {
    "userId": "user-12345",
    "email": "jane@example.com",
    "name": "Jane Doe",
    "phone": "+447700900123",
    "locale": "en-GB",
    "crmID": "CRM-56789",
    "userData": {"accountNumber": "AC-12345", "plan": "enterprise", "vipTier": "gold"},
    "agentData": [
        {"label": "Account", "value": "AC-12345"},
        {"label": "Plan", "value": "Enterprise", "type": "status", "color": "info"},
        {"label": "VIP Tier", "value": "Gold", "type": "status", "color": "warning"},
        {"label": "Verified", "value": True, "type": "boolean"},
        {"label": "Member Since", "value": "2024-03-15", "type": "date"},
        {"label": "Last Login", "value": "2026-04-23T14:30:00Z", "type": "datetime"},
        {"label": "Balance", "value": 1250.00, "type": "currency", "currency": "USD"},
        {"label": "Points", "value": 48750, "type": "number"},
        {"label": "Email", "value": "jane@example.com", "type": "email"},
        {"label": "Mobile", "value": "+447700900123", "type": "phone"},
        {
            "label": "CRM Record",
            "value": "https://crm.example.com/12345",
            "type": "link",
            "text": "View in CRM",
        },
    ],
}


def reasons(result: dict) -> dict[str, str]:
    return {entry["field"]: entry["reason"] for entry in result["ignored"]}


# -- preview: the rules ------------------------------------------------------------


def test_preview_of_the_vendor_example():
    result = identity.preview(VENDOR_EXAMPLE, {"cardLast4": "4242", "dob": "1990-01-01"})
    assert list(result) == [
        "user_id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "locale",
        "crm_id",
        "user_data",
        "agent_data",
        "private_keys",
        "ignored",
    ]
    assert result["user_id"] == "user-12345"
    assert result["email"] == "jane@example.com"
    assert (result["first_name"], result["last_name"]) == ("Jane", "Doe")
    assert result["phone"] == "+447700900123"
    assert result["locale"] == "en-GB"
    assert result["crm_id"] == "CRM-56789"
    assert result["user_data"] == VENDOR_EXAMPLE["userData"]
    assert [i["type"] for i in result["agent_data"]] == [
        "plain",
        "status",
        "status",
        "boolean",
        "date",
        "datetime",
        "currency",
        "number",
        "email",
        "phone",
        "link",
    ]
    assert result["agent_data"][5]["value"] == "2026-04-23T14:30:00+00:00"
    assert result["agent_data"][10] == {
        "label": "CRM Record",
        "type": "link",
        "value": "https://crm.example.com/12345",
        "text": "View in CRM",
    }
    assert result["private_keys"] == ["cardLast4", "dob"]
    assert result["ignored"] == []
    # Key names only: no private value anywhere in the preview.
    assert "4242" not in json.dumps(result)


def test_preview_is_pure():
    # No django_db mark: any query would raise RuntimeError here.
    assert identity.preview(VENDOR_EXAMPLE)["user_id"] == "user-12345"


@pytest.mark.parametrize(
    "claims, expected",
    [({"sub": "a"}, "a"), ({"userId": "b"}, "b"), ({"sub": "c", "userId": "c"}, "c")],
)
def test_user_id_is_sub_or_user_id(claims, expected):
    assert identity.preview(claims)["user_id"] == expected


def test_bad_user_id_is_reported_not_raised():
    result = identity.preview({"sub": "a", "userId": "b", "email": "x@example.com"})
    assert result["user_id"] is None
    assert result["email"] == "x@example.com"
    assert reasons(result)["sub"] == "sub and userId differ"


@pytest.mark.parametrize(
    "email, kept",
    [
        ("jane@example.com", "jane@example.com"),
        ("  jane@example.com ", "jane@example.com"),
        ("jane@", None),
        ("not an email", None),
        ("a@b@example.com", None),
        ("x" * 250 + "@example.com", None),
        (42, None),
        (["jane@example.com"], None),
    ],
)
def test_email_kept_only_if_valid(email, kept):
    result = identity.preview({"sub": "u", "email": email})
    assert result["email"] == kept
    if kept is None:
        assert reasons(result)["email"] == "not a valid email address"


@pytest.mark.parametrize(
    "name, first, last",
    [
        ("Jane Doe", "Jane", "Doe"),
        ("Cher", "Cher", ""),
        ("Jean Claude Van Damme", "Jean", "Claude Van Damme"),
        ("  Ana \t María\n López ", "Ana", "María López"),
        ("山田太郎", "山田太郎", ""),
        ("山田\u3000太郎", "山田", "太郎"),
        ("محمد بن سلمان", "محمد", "بن سلمان"),
        ("Zoë\x00 O'Brien\u0085", "Zoë", "O'Brien"),
    ],
)
def test_name_split(name, first, last):
    result = identity.preview({"sub": "u", "name": name})
    assert (result["first_name"], result["last_name"]) == (first, last)
    assert result["ignored"] == []


def test_long_names_are_capped():
    result = identity.preview({"sub": "u", "name": "A" * 400 + " " + "B" * 400})
    assert (len(result["first_name"]), len(result["last_name"])) == (150, 150)
    assert reasons(result)["name"] == "cut to 150 characters per part"


@pytest.mark.parametrize("name", ["", "   ", 7, None, {"first": "x"}])
def test_bad_name_ignored(name):
    result = identity.preview({"sub": "u", "name": name})
    assert result["first_name"] is None and result["last_name"] is None
    assert reasons(result)["name"] == "must be a non-empty string"


def test_given_and_family_name_win_over_the_split():
    result = identity.preview(
        {"sub": "u", "name": "山田 太郎", "given_name": "太郎", "family_name": "山田"}
    )
    assert (result["first_name"], result["last_name"]) == ("太郎", "山田")


@pytest.mark.parametrize(
    "phone, kept",
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+1 (650) 253-0000", "+16502530000"),
        ("+８１ ３ １２３４ ５６７８", "+81312345678"),
        ("07700 900123", None),  # no country code and no default region
        ("+1 555 0100", None),  # too short for its country
        ("+999 123456", None),
        ("call me", None),
        ("+" + "1" * 80, None),
        (447700900123, None),
    ],
)
def test_phone_to_e164(phone, kept):
    result = identity.preview({"sub": "u", "phone": phone})
    assert result["phone"] == kept
    if kept is None:
        assert "international format" in reasons(result)["phone"]


@pytest.mark.parametrize(
    "locale, kept",
    [
        ("en-GB", "en-GB"),
        ("en-gb", "en-GB"),
        ("FR", "fr"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("en_GB", None),
        ("english", None),
        ("en-GB-x-private", None),
        ("e", None),
        (44, None),
    ],
)
def test_locale(locale, kept):
    result = identity.preview({"sub": "u", "locale": locale})
    assert result["locale"] == kept
    if kept is None:
        assert reasons(result)["locale"] == "not a language tag like en-GB"


@pytest.mark.parametrize(
    "crm_id, kept",
    [
        ("CRM-1", "CRM-1"),
        (12345, "12345"),
        (12345.0, "12345"),
        (1.5, "1.5"),
        (True, None),
        ("", None),
        ("x" * 256, None),
        ({"id": 1}, None),
    ],
)
def test_crm_id(crm_id, kept):
    result = identity.preview({"sub": "u", "crmID": crm_id})
    assert result["crm_id"] == kept
    if kept is None:
        assert "crmID" in reasons(result)


def test_crm_url_quotes_the_id():
    with override_settings(
        CHAT_SECURITY={"CRM_URL_TEMPLATE": "https://crm.example.com/c/{crm_id}"}
    ):
        assert values.crm_url("a/b c?") == "https://crm.example.com/c/a%2Fb%20c%3F"
        assert Contact(crm_id="42").crm_url == "https://crm.example.com/c/42"
        assert values.crm_url("") is None
    assert values.crm_url("42") is None  # no template configured


def test_user_data_keeps_scalars_and_says_why_it_drops_the_rest():
    result = identity.preview(
        {
            "sub": "u",
            "userData": {
                "plan": "gold",
                "seats": 5,
                "ratio": 0.5,
                "vip": False,
                "nothing": None,
                "nested": {"a": 1},
                "list": [1, 2],
                "huge": 10**30,
                "": "empty key",
                "k" * 101: "long key",
                "ctl": "a\x00b\ud800c",
            },
        }
    )
    assert result["user_data"] == {
        "plan": "gold",
        "seats": 5,
        "ratio": 0.5,
        "vip": False,
        "ctl": "abc",
    }
    why = reasons(result)
    assert why["userData.nothing"].startswith("null is not kept")
    assert why["userData.nested"].startswith("an object or list is not kept")
    assert why["userData.list"].startswith("an object or list is not kept")
    assert why["userData.huge"] == "number out of range (at most 2**53)"
    assert why["userData."].startswith("keys must be")
    assert why["userData." + "k" * 100].startswith("keys must be")


@pytest.mark.parametrize("value", ["text", ["a"], 3, True])
def test_user_data_must_be_an_object(value):
    result = identity.preview({"sub": "u", "userData": value})
    assert result["user_data"] is None
    assert reasons(result)["userData"] == "must be an object"


@override_settings(CHAT_SECURITY={"USER_DATA_MAX_BYTES": 40})
def test_user_data_is_cut_to_the_size_cap():
    result = identity.preview(
        {"sub": "u", "userData": {"a": "x" * 10, "b": "y" * 30, "c": 1, "d": "é" * 4}}
    )
    kept = result["user_data"]
    assert kept == {"a": "x" * 10, "c": 1, "d": "é" * 4}
    size = len(json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode())
    assert size <= 40
    assert reasons(result) == {"userData.b": "over USER_DATA_MAX_BYTES (40 bytes)"}


def test_agent_data_bad_items_are_skipped_with_reasons():
    items = [
        {"label": "ok", "value": "fine"},
        "not an object",
        {"value": "no label"},
        {"label": "no value"},
        {"label": "t", "value": "x", "type": "html"},
        {"label": "d", "value": "15/03/2024", "type": "date"},
        {"label": "dt", "value": "yesterday", "type": "datetime"},
        {"label": "n", "value": "48750", "type": "number"},
        {"label": "c", "value": 10, "type": "currency"},
        {"label": "c2", "value": 10, "type": "currency", "currency": "DOLLARS"},
        {"label": "e", "value": "nope", "type": "email"},
        {"label": "p", "value": "12345", "type": "phone"},
        {"label": "l", "value": "javascript:alert(1)", "type": "link"},
        {"label": "l2", "value": "ftp://example.com/x", "type": "link"},
        {"label": "l3", "value": " https://example.com", "type": "link"},
        {"label": "b", "value": "true", "type": "boolean"},
        {"label": "s", "value": {"x": 1}, "type": "status"},
        {"label": "plain", "value": [1]},
    ]
    result = identity.preview({"sub": "u", "agentData": items})
    assert result["agent_data"] == [{"label": "ok", "type": "plain", "value": "fine"}]
    why = reasons(result)
    for index in range(1, len(items)):
        assert f"agentData[{index}]" in why, index
    assert why["agentData[12]"] == "link must be an absolute http or https URL"
    assert why["agentData[4]"].startswith("unknown type 'html'")
    assert why["agentData[2]"] == "label is required"


def test_agent_data_normalisation_of_each_type():
    items = [
        {"label": 2024, "value": 7},
        {"label": "Flag", "value": False},
        {"label": "Local", "value": "2026-04-23T16:30:00+02:00", "type": "datetime"},
        {"label": "Naive", "value": "2026-04-23T14:30:00", "type": "datetime"},
        {"label": "Cur", "value": 5, "type": "currency", "currency": "eur"},
        {"label": "Tel", "value": "+1 650 253 0000", "type": "phone"},
        {"label": "Link", "value": "https://example.com/a?b=c", "type": "link", "text": 5},
        {"label": "Badge", "value": "Gold", "type": "status"},
        {"label": "Badge2", "value": "Bad", "type": "status", "color": "red"},
        {"label": "Extra", "value": "x", "colour": "typo"},
    ]
    result = identity.preview({"sub": "u", "agentData": items})
    got = result["agent_data"]
    assert got[0] == {"label": "2024", "type": "plain", "value": "7"}
    assert got[1]["value"] == "false"
    assert got[2]["value"] == got[3]["value"] == "2026-04-23T14:30:00+00:00"
    assert got[4] == {"label": "Cur", "type": "currency", "value": 5, "currency": "EUR"}
    assert got[5]["value"] == "+16502530000"
    assert got[6]["text"] == "5"
    assert got[7]["color"] == got[8]["color"] == "primary"
    assert got[9] == {"label": "Extra", "type": "plain", "value": "x"}
    why = reasons(result)
    assert why["agentData[8].color"].startswith("must be one of success, danger")
    assert why["agentData[9].colour"] == "not a member of a plain item"


def test_agent_data_caps():
    long = {"label": "L" * 300, "value": "V" * 900}
    with override_settings(CHAT_SECURITY={"AGENT_DATA_MAX_ITEMS": 3}):
        result = identity.preview(
            {"sub": "u", "agentData": [long] + [{"label": "x", "value": 1}] * 9}
        )
    items = result["agent_data"]
    assert len(items) == 3
    assert len(items[0]["label"]) == 100 and items[0]["label"].endswith("…")
    assert len(items[0]["value"]) == 500
    why = reasons(result)
    assert why["agentData[3:]"] == "7 more item(s) over AGENT_DATA_MAX_ITEMS (3)"
    assert why["agentData[0].label"] == "cut to 100 characters"
    assert why["agentData[0].value"] == "cut to 500 characters"


@pytest.mark.parametrize("value", [{"label": "x", "value": 1}, "list?", 5, None])
def test_agent_data_must_be_a_list(value):
    result = identity.preview({"sub": "u", "agentData": value})
    assert result["agent_data"] is None
    assert reasons(result)["agentData"].startswith("must be a list")


def test_wrong_types_in_every_claim_are_ignored_field_by_field():
    claims = {
        "sub": "u",
        "email": 1,
        "name": ["Jane"],
        "phone": {"n": 1},
        "locale": True,
        "crmID": None,
        "userData": "x",
        "agentData": {"a": 1},
    }
    result = identity.preview(claims)
    assert result["user_id"] == "u"
    assert set(reasons(result)) == {
        "email",
        "name",
        "phone",
        "locale",
        "crmID",
        "userData",
        "agentData",
    }


def _random_json(rng: random.Random, depth: int = 0):
    choices = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(10**20), 10**20),
        lambda: rng.uniform(-1e300, 1e300),
        lambda: "".join(
            chr(rng.choice([0, 0x41, 0xE9, 0x3000, 0xD800, 0x1F600, 0x0A]))
            for _ in range(rng.randint(0, 20))
        ),
        lambda: rng.choice(["+447700900123", "en-GB", "2024-03-15", "https://x.example", "a@b.co"]),
    ]
    if depth < 3:
        choices.append(lambda: [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))])
        choices.append(
            lambda: {
                rng.choice(
                    ["label", "value", "type", "text", "color", "currency", "k"]
                ): _random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 5))
            }
        )
    return rng.choice(choices)()


def test_random_claim_values_never_raise():
    rng = random.Random(5)
    names = ["email", "name", "phone", "locale", "crmID", "userData", "agentData", "given_name"]
    for _ in range(2000):
        claims = {"sub": "u", **{n: _random_json(rng) for n in rng.sample(names, 4)}}
        result = identity.preview(claims)
        json.dumps(result)  # serialisable for the CLI
        assert all(set(entry) == {"field", "reason"} for entry in result["ignored"])


def test_private_keys_names_only():
    assert identity.preview({"sub": "u"}, {"b": 1, "a": {"deep": 2}})["private_keys"] == ["a", "b"]
    assert identity.preview({"sub": "u"}, "a string")["private_keys"] == []
    assert identity.preview({"sub": "u"}, None)["private_keys"] == []


# -- contact_for ---------------------------------------------------------------------


def verified(claims: dict, private=None) -> SimpleNamespace:
    return SimpleNamespace(
        user_id=tokens.user_id_of(claims),
        claims=claims,
        kid="k",
        anonymous=False,
        private=private,
        anonymous_id=None,
    )


@pytest.mark.django_db
def test_first_request_of_a_token_writes_later_ones_only_read(django_assert_num_queries):
    claims = {**VENDOR_EXAMPLE, "iat": 1, "exp": 2}
    contact = identity.contact_for(verified(claims))
    assert contact.pk and contact.email == "jane@example.com"
    assert contact.phone == "+447700900123"
    assert contact.locale == "en-GB" and contact.crm_id == "CRM-56789"
    assert len(contact.agent_data) == 11
    with django_assert_num_queries(1) as ctx:
        again = identity.contact_for(verified(claims))
    assert again.pk == contact.pk
    assert ctx.captured_queries[0]["sql"].lstrip().upper().startswith("SELECT")
    # A new token (new iat) is applied once.
    with CaptureQueriesContext(connection) as ctx:
        identity.contact_for(verified({**claims, "iat": 3, "name": "Jane Smith"}))
    assert any("UPDATE" in q["sql"].upper() for q in ctx.captured_queries)
    assert Contact.objects.get(pk=contact.pk).last_name == "Smith"


def wrote(ctx) -> bool:
    return any(q["sql"].lstrip().upper().startswith("UPDATE") for q in ctx.captured_queries)


@pytest.mark.django_db
def test_an_older_token_never_overwrites_newer_contact_data(django_assert_num_queries):
    # A phone (token A) and a laptop (token B) take turns: only B's data may stay.
    phone = {"sub": "u-2dev", "iat": 100, "exp": 1000, "email": "old@example.com"}
    laptop = {"sub": "u-2dev", "iat": 200, "exp": 1100, "email": "new@example.com"}
    identity.contact_for(verified(phone))
    assert Contact.objects.get(user_id="u-2dev").email == "old@example.com"
    identity.contact_for(verified(laptop))
    for _ in range(2):
        with django_assert_num_queries(1):  # one SELECT, no write
            contact = identity.contact_for(verified(phone))
        assert contact.email == "new@example.com"
        with django_assert_num_queries(1):
            identity.contact_for(verified(laptop))
    contact = Contact.objects.get(user_id="u-2dev")
    assert contact.email == "new@example.com"
    assert (contact.token_iat, contact.token_exp) == (200, 1100)


@pytest.mark.django_db
def test_same_iat_is_ordered_by_exp_and_equal_times_apply_once():
    base = {"sub": "u-tie", "iat": 100}
    identity.contact_for(verified({**base, "exp": 500, "email": "a@example.com"}))
    identity.contact_for(verified({**base, "exp": 600, "email": "b@example.com"}))
    identity.contact_for(verified({**base, "exp": 500, "email": "a@example.com"}))
    # Same iat and exp but other claims: no way to tell which is newer; the first stays.
    with CaptureQueriesContext(connection) as ctx:
        identity.contact_for(verified({**base, "exp": 600, "email": "c@example.com"}))
    assert not wrote(ctx)
    assert Contact.objects.get(user_id="u-tie").email == "b@example.com"


@pytest.mark.django_db
def test_a_token_without_iat_counts_as_the_oldest():
    identity.contact_for(verified({"sub": "u-noiat", "exp": 500, "email": "a@example.com"}))
    identity.contact_for(verified({"sub": "u-noiat", "exp": 600, "email": "b@example.com"}))
    identity.contact_for(verified({"sub": "u-noiat", "exp": 550, "email": "x@example.com"}))
    assert Contact.objects.get(user_id="u-noiat").email == "b@example.com"  # exp orders them
    identity.contact_for(verified({"sub": "u-noiat", "iat": 1, "email": "c@example.com"}))
    identity.contact_for(verified({"sub": "u-noiat", "exp": 9999, "email": "d@example.com"}))
    assert Contact.objects.get(user_id="u-noiat").email == "c@example.com"
    # Without any time claim there is nothing to order by: each new token applies once.
    identity.contact_for(verified({"sub": "u-notime", "email": "e@example.com"}))
    identity.contact_for(verified({"sub": "u-notime", "email": "f@example.com"}))
    assert Contact.objects.get(user_id="u-notime").email == "f@example.com"


@pytest.mark.django_db
def test_an_older_token_loses_to_a_newer_one_applied_meanwhile():
    # A request whose unlocked read came before a newer token landed reaches
    # _apply: the locked re-read must compare the times again.
    identity.contact_for(verified({"sub": "u-race", "iat": 100, "email": "a@example.com"}))
    identity.contact_for(verified({"sub": "u-race", "iat": 300, "email": "c@example.com"}))
    claims = {"sub": "u-race", "iat": 200, "email": "b@example.com"}
    identity._apply("u-race", claims, identity.token_stamp(claims))
    assert Contact.objects.get(user_id="u-race").email == "c@example.com"


@pytest.mark.django_db
def test_merge_semantics_over_three_tokens():
    first = {
        "sub": "u-3",
        "iat": 1,
        "email": "first@example.com",
        "name": "Ann Lee",
        "userData": {"plan": "free", "seats": 1, "region": "eu"},
        "agentData": [{"label": "Plan", "value": "Free"}],
    }
    second = {
        "sub": "u-3",
        "iat": 2,
        "email": "not-valid",  # ignored: the old email stays
        "userData": {"plan": "pro", "trial": True},
        # no name, no agentData: both keep their old values
    }
    third = {
        "sub": "u-3",
        "iat": 3,
        "phone": "+16502530000",
        "userData": {"seats": 5, "region": {"nested": "ignored"}},
        "agentData": [{"label": "Seats", "value": 5, "type": "number"}],
    }
    identity.contact_for(verified(first))
    c = Contact.objects.get(user_id="u-3")
    assert c.user_data == {"plan": "free", "seats": 1, "region": "eu"}

    identity.contact_for(verified(second))
    c.refresh_from_db()
    assert c.user_data == {"plan": "pro", "seats": 1, "region": "eu", "trial": True}
    assert c.email == "first@example.com"
    assert (c.first_name, c.last_name) == ("Ann", "Lee")
    assert c.agent_data == [{"label": "Plan", "type": "plain", "value": "Free"}]

    identity.contact_for(verified(third))
    c.refresh_from_db()
    assert c.user_data == {"plan": "pro", "seats": 5, "region": "eu", "trial": True}
    assert c.agent_data == [{"label": "Seats", "type": "number", "value": 5}]
    assert c.phone == "+16502530000"
    assert c.email == "first@example.com"
    assert Contact.objects.filter(user_id="u-3").count() == 1


@pytest.mark.django_db
@override_settings(CHAT_SECURITY={"USER_DATA_MAX_BYTES": 35})
def test_merged_user_data_stays_within_the_cap_newest_keys_win():
    identity.contact_for(
        verified({"sub": "u", "iat": 1, "userData": {"old1": "aaaa", "old2": "bbbb"}})
    )
    identity.contact_for(verified({"sub": "u", "iat": 2, "userData": {"new": "cccccccc"}}))
    data = Contact.objects.get(user_id="u").user_data
    assert data["new"] == "cccccccc"
    assert len(json.dumps(data, separators=(",", ":")).encode()) <= 35
    assert len(data) == 2  # one old key had to go


@pytest.mark.django_db
def test_private_data_is_never_stored_on_the_contact():
    secret = "PRIVATE-4111111111111111"
    identity.contact_for(verified({"sub": "u", "iat": 1, "name": "A B"}, {"card": secret}))
    row = Contact.objects.filter(user_id="u").values().get()
    assert secret not in json.dumps(row, default=str)
    assert "card" not in json.dumps(row, default=str)


@pytest.mark.django_db
def test_contact_through_the_real_engine_and_chat_identity(clock):
    Key.objects.generate_secret()
    token = tokens.issue("u-42", {"email": "u42@example.com", "name": "Ada Lovelace"})
    chat_identity = ChatIdentity.verified(tokens.verify(token))
    contact = chat_identity.contact
    assert contact.user_id == "u-42" and contact.first_name == "Ada"
    assert chat_identity.contact is contact  # computed once


@pytest.mark.django_db
def test_a_concurrent_first_request_is_retried(monkeypatch):
    real_save = Contact.save
    calls = []

    def racing_save(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            Contact.objects.create(user_id=self.user_id)  # the other request won
            raise IntegrityError("duplicate user_id")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Contact, "save", racing_save)
    contact = identity.contact_for(verified({"sub": "race", "iat": 1, "name": "Bo Di"}))
    assert contact.first_name == "Bo"
    assert Contact.objects.filter(user_id="race").count() == 1


# -- anonymous visitors ----------------------------------------------------------------


def anonymous(anonymous_id):
    return SimpleNamespace(
        user_id=None, claims={}, kid=None, anonymous=True, private=None, anonymous_id=anonymous_id
    )


@pytest.mark.django_db
@override_settings(CHAT_SECURITY={"ANONYMOUS_IDS": True})
def test_anonymous_visitor_gets_a_persistent_contact():
    first = identity.contact_for(anonymous("anon-abcdefghijklmnopqrstuv"))
    assert first.anonymous and first.user_id == "anon:anon-abcdefghijklmnopqrstuv"
    again = identity.contact_for(ChatIdentity.anonymous_visitor("anon-abcdefghijklmnopqrstuv"))
    assert again.pk == first.pk
    assert identity.contact_for(anonymous(None)) is None
    assert identity.contact_for(anonymous("bad id with spaces")) is None


@pytest.mark.django_db
@pytest.mark.urls(__name__)
@override_settings(CHAT_SECURITY={"ANONYMOUS_IDS": True})
def test_anonymous_history_survives_reloads_through_the_middleware(client):
    SecurityConfig.set_enabled(False)
    first = client.get("/chat/api/whoami").json()["contact"]
    assert first is not None
    assert client.get("/chat/api/whoami").json()["contact"] == first  # cookie kept
    contact = Contact.objects.get(pk=first)
    assert contact.anonymous and contact.user_id.startswith("anon:anon-")
    stranger = Client().get("/chat/api/whoami").json()["contact"]
    assert stranger not in (None, first)


@pytest.mark.django_db
def test_anonymous_contacts_need_the_setting():
    assert identity.contact_for(anonymous("anon-abcdefghijklmnopqrstuv")) is None
    assert not Contact.objects.exists()


@pytest.mark.django_db
@override_settings(CHAT_SECURITY={"ANONYMOUS_IDS": True})
def test_verified_and_anonymous_namespaces_never_meet():
    anon = identity.contact_for(anonymous("x1"))
    # A verified user whose sub spells the anonymous key gets no contact at all...
    assert identity.contact_for(verified({"sub": "anon:x1", "iat": 1, "name": "Eve"})) is None
    anon.refresh_from_db()
    assert anon.first_name == "" and anon.anonymous
    # ...and a sub equal to the raw cookie id is a different, verified contact.
    other = identity.contact_for(verified({"sub": "x1", "iat": 1}))
    assert other.pk != anon.pk and not other.anonymous


# -- deletion ------------------------------------------------------------------------


@pytest.mark.django_db
def test_delete_contact_removes_everything_and_says_what():
    identity.contact_for(verified({"sub": "gone", "iat": 1, "name": "Gone User"}))
    identity.contact_for(verified({"sub": "stays", "iat": 1}))
    for text in ("a", "b", "c"):
        Message.objects.create(user_id="gone", text=text)
    Message.objects.create(user_id="gone", anonymous=True, text="an anonymous namesake")
    Message.objects.create(user_id="stays", text="keep me")

    result = identity.delete_contact("gone", actor="tester")

    assert result == {"user_id": "gone", "deleted": {"contact": 1, "messages": 3}}
    assert not Contact.objects.filter(user_id="gone").exists()
    assert not Message.objects.filter(user_id="gone", anonymous=False).exists()
    assert Message.objects.filter(user_id="gone", anonymous=True).count() == 1
    assert Message.objects.filter(user_id="stays").count() == 1
    entry = AuditEntry.objects.get(action="delete_contact")
    assert entry.actor == "tester" and entry.detail.startswith("gone ")


@pytest.mark.django_db
@override_settings(CHAT_SECURITY={"ANONYMOUS_IDS": True})
def test_delete_anonymous_contact_deletes_its_cookie_conversation():
    identity.contact_for(anonymous("anon-cookie"))
    Message.objects.create(user_id="anon-cookie", anonymous=True, text="hello")
    Message.objects.create(user_id="anon-cookie", anonymous=False, text="verified namesake")
    result = identity.delete_contact("anon:anon-cookie")
    assert result["deleted"] == {"contact": 1, "messages": 1}
    assert Message.objects.filter(anonymous=False).count() == 1


@pytest.mark.django_db
def test_delete_unknown_contact_returns_zero_counts():
    """Issue 17, item 9: as docs/python-api.md says, counts; an erasure may be asked twice."""
    identity.contact_for(verified({"sub": "somebody", "iat": 1}))
    assert identity.delete_contact("nobody", actor="tester") == {
        "user_id": "nobody",
        "deleted": {"contact": 0},
    }
    assert Contact.objects.filter(user_id="somebody").exists()
    entry = AuditEntry.objects.get(action="delete_contact")
    assert entry.actor == "tester" and entry.detail == "nobody (contact=0)"
    with pytest.raises(ChatSecurityError, match="user id"):
        identity.delete_contact("")


@pytest.mark.django_db
def test_a_failing_receiver_deletes_nothing():
    identity.contact_for(verified({"sub": "u", "iat": 1}))
    Message.objects.create(user_id="u", text="x")

    def broken(**kwargs):
        raise RuntimeError("downstream store unavailable")

    contact_deleting.connect(broken, dispatch_uid="test-broken")
    try:
        with pytest.raises(RuntimeError):
            identity.delete_contact("u")
    finally:
        contact_deleting.disconnect(dispatch_uid="test-broken")
    assert Contact.objects.filter(user_id="u").exists()
    assert Message.objects.filter(user_id="u").exists()
    assert not AuditEntry.objects.filter(action="delete_contact").exists()


@pytest.mark.django_db
def test_cli_delete_contact(capsys):
    identity.contact_for(verified({"sub": "cli-user", "iat": 1}))
    Message.objects.create(user_id="cli-user", text="x")
    Message.objects.create(user_id="cli-user", text="y")
    call_command("chat_security", "delete-contact", "cli-user")
    out = json.loads(capsys.readouterr().out)
    assert out == {"user_id": "cli-user", "deleted": {"contact": 1, "messages": 2}}
    assert AuditEntry.objects.get(action="delete_contact").actor == "cli"
    call_command("chat_security", "delete-contact", "cli-user")  # again: nothing left
    assert json.loads(capsys.readouterr().out) == {"user_id": "cli-user", "deleted": {"contact": 0}}
