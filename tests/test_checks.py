"""System checks (chat_security.checks, and the middleware checks of deploy_checks):
each id fires for a bad value, none for the defaults."""

from __future__ import annotations

import math
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from chat_security import checks, deploy_checks
from chat_security.conf import DEFAULTS, DURATIONS, ChatSecuritySettings, app_settings

from .tokencraft import chat_settings

GOOD_KEY = "an-encryption-key-of-at-least-32-characters"


def ids(overrides: dict | None = None, **django_settings) -> list[str]:
    conf = {"ENCRYPTION_KEYS": [GOOD_KEY], **(overrides or {})}
    with override_settings(CHAT_SECURITY=conf, **django_settings):
        found = checks.check_settings() + deploy_checks.check_middleware()
    return [m.id for m in found]


def test_defaults_pass():
    assert ids() == []
    assert ids(dict(DEFAULTS, ENCRYPTION_KEYS=[GOOD_KEY])) == []


def test_timedelta_durations_pass():
    assert ids({name: timedelta(seconds=60) for name in DURATIONS}) == []


def test_the_facade_declares_every_duration_as_float_seconds():
    # The declarations are for mypy; the values come from __getattr__.
    assert ChatSecuritySettings.__annotations__ == dict.fromkeys(DURATIONS, "float")
    assert all(type(getattr(app_settings, name)) is float for name in DURATIONS)


def test_w001_without_encryption_keys():
    with override_settings(CHAT_SECURITY={}):
        found = checks.check_settings()
    assert [m.id for m in found] == ["chat_security.W001"]
    assert "SECRET_KEY" in found[0].msg and found[0].hint


def test_w001_when_chat_security_is_absent(settings):
    del settings.CHAT_SECURITY
    assert [m.id for m in checks.check_settings()] == ["chat_security.W001"]


@pytest.mark.parametrize("value", [[], "ENCRYPTION_KEYS", ["short"], [GOOD_KEY, 5], ("",)])
def test_e013_encryption_keys(value):
    assert "chat_security.E013" in ids({"ENCRYPTION_KEYS": value})


def test_e001_not_a_dict():
    with override_settings(CHAT_SECURITY=["HS256"]):
        assert [m.id for m in checks.check_settings()] == ["chat_security.E001"]


def test_e002_unknown_key():
    found = ids({"LEEWAYY": 30})
    assert found == ["chat_security.E002"]


def test_e002_suggests_the_closest_valid_key():
    with override_settings(CHAT_SECURITY={"ENCRYPTION_KEY": ["k" * 40], "leeway": 5, "ZZZ": 1}):
        [error] = [m for m in checks.check_settings() if m.id == "chat_security.E002"]
    assert "'ENCRYPTION_KEY' → 'ENCRYPTION_KEYS'" in error.hint
    assert "'leeway' → 'LEEWAY'" in error.hint and "ZZZ'" not in error.hint
    with override_settings(CHAT_SECURITY={"ZZZ": 1}):
        [error] = [m for m in checks.check_settings() if m.id == "chat_security.E002"]
    assert error.hint == "Check the spelling against the settings reference."


BAD_VALUES = [
    ("E003", "PROTECTED_PATHS", "/chat/api/"),
    ("E003", "PROTECTED_PATHS", ["chat/api/"]),
    ("E003", "PROTECTED_PATHS", [""]),
    ("E003", "PROTECTED_PATHS", [5]),
    ("E004", "MAX_TOKEN_BYTES", 0),
    ("E004", "MAX_TOKEN_BYTES", 100),
    ("E004", "MAX_TOKEN_BYTES", 1 << 21),
    ("E004", "MAX_TOKEN_BYTES", "8192"),
    ("E004", "MAX_TOKEN_BYTES", 8192.0),
    ("E004", "MAX_TOKEN_BYTES", True),
    ("E005", "LEEWAY", -1),
    ("E005", "LEEWAY", "30"),
    ("E005", "LEEWAY", True),
    ("E005", "LEEWAY", math.nan),
    ("E005", "MAX_TOKEN_LIFETIME", 0),
    ("E005", "MAX_TOKEN_LIFETIME", math.inf),
    ("E005", "DEFAULT_TOKEN_TTL", 0),
    ("E005", "GRACE_PERIOD", -3600),
    ("E005", "GRACE_PERIOD", 10**20),
    ("E005", "GRACE_PERIOD", timedelta(seconds=-1)),
    ("E005", "KEY_CACHE_SECONDS", None),
    ("E005", "USAGE_FLUSH_SECONDS", [60]),
    ("E007", "REQUIRE_EXP", 1),
    ("E007", "REQUIRE_EXP", "yes"),
    ("E008", "ALLOWED_ALGORITHMS", []),
    ("E008", "ALLOWED_ALGORITHMS", ["HS256", "none"]),
    ("E008", "ALLOWED_ALGORITHMS", ["HS512"]),
    ("E008", "ALLOWED_ALGORITHMS", "HS256"),
    ("E009", "AUDIENCE", ""),
    ("E009", "AUDIENCE", 5),
    ("E009", "AUDIENCE", []),
    ("E009", "ISSUER", ["ok", 3]),
    ("E010", "JS_VARIABLE", "Convrs User"),
    ("E010", "JS_VARIABLE", "1abc"),
    ("E010", "JS_VARIABLE", "x;alert(1)"),
    ("E010", "JS_VARIABLE", None),
    ("E011", "CLAIMS_BUILDER", "no.such.module.builder"),
    ("E011", "CLAIMS_BUILDER", "chat_security.conf.DEFAULTS"),
    ("E011", "CLAIMS_BUILDER", 5),
    ("E012", "CRM_URL_TEMPLATE", "crm.example.com/{crm_id}"),
    ("E012", "CRM_URL_TEMPLATE", "https://crm.example.com/"),
    ("E012", "CRM_URL_TEMPLATE", "javascript:alert('{crm_id}')"),
    ("E014", "ANONYMOUS_IDS", "true"),
    ("E014", "ANONYMOUS_COOKIE_NAME", "bad name;"),
    ("E014", "ANONYMOUS_COOKIE_NAME", ""),
    ("E015", "USER_DATA_MAX_BYTES", 0),
    ("E015", "USER_DATA_MAX_BYTES", "4096"),
    ("E015", "AGENT_DATA_MAX_ITEMS", -1),
    ("E015", "AGENT_DATA_MAX_ITEMS", False),
]


@pytest.mark.parametrize(("code", "name", "value"), BAD_VALUES, ids=repr)
def test_each_error_fires_for_a_bad_value(code, name, value):
    found = ids({name: value})
    assert f"chat_security.{code}" in found
    assert all(f.startswith("chat_security.") for f in found)


def test_every_error_message_is_one_line_with_a_hint():
    conf = {"ENCRYPTION_KEYS": [GOOD_KEY], **{name: value for _code, name, value in BAD_VALUES}}
    with override_settings(CHAT_SECURITY=conf):
        found = checks.check_settings()
    assert {m.id for m in found} >= {
        f"chat_security.{c}" for c, _n, _v in BAD_VALUES if c not in ("E006",)
    }
    for message in found:
        assert "\n" not in message.msg
        assert message.hint


def test_e006_ttl_longer_than_lifetime():
    assert ids({"DEFAULT_TOKEN_TTL": 7200, "MAX_TOKEN_LIFETIME": 3600}) == ["chat_security.E006"]
    assert ids({"DEFAULT_TOKEN_TTL": 3600, "MAX_TOKEN_LIFETIME": 3600}) == []


def test_valid_non_default_values_pass():
    assert (
        ids(
            {
                "PROTECTED_PATHS": ["/chat/api/", "/support/"],
                "AUDIENCE": ["chat"],
                "ISSUER": "https://shop.example.com",
                "CLAIMS_BUILDER": lambda user: {},
                "CRM_URL_TEMPLATE": "https://crm.example.com/c/{crm_id}",
                "ALLOWED_ALGORITHMS": ["RS256"],
                "JS_VARIABLE": "$chat_user",
                "ANONYMOUS_IDS": True,
                "LEEWAY": 0,
                "GRACE_PERIOD": 0,
            }
        )
        == []
    )


SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
OURS = "chat_security.middleware.ChatSecurityMiddleware"


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ([SESSION, AUTH, OURS], []),
        ([OURS, SESSION, AUTH], ["chat_security.E016"]),
        ([SESSION, OURS, AUTH], ["chat_security.E016"]),
        ([OURS], []),
        ([SESSION, AUTH], ["chat_security.E022"]),
        ([SESSION, AUTH, OURS, OURS], ["chat_security.W008"]),
        ([OURS, SESSION, AUTH, OURS], ["chat_security.W008", "chat_security.E016"]),
    ],
)
def test_e016_middleware_order(stack, expected):
    assert ids(MIDDLEWARE=stack) == expected


UPDATE = "django.middleware.cache.UpdateCacheMiddleware"
FETCH = "django.middleware.cache.FetchFromCacheMiddleware"
BOTH = "django.middleware.cache.CacheMiddleware"


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ([UPDATE, SESSION, AUTH, OURS, FETCH], []),
        ([SESSION, AUTH, OURS, FETCH], []),
        ([UPDATE, SESSION, AUTH, OURS], []),
        # A cached page would be served before the token is checked.
        ([UPDATE, SESSION, AUTH, FETCH, OURS], ["chat_security.E016"]),
        ([FETCH, SESSION, AUTH, OURS], ["chat_security.E016"]),
        # The cache would store a protected response before it is marked private.
        ([SESSION, AUTH, OURS, UPDATE, FETCH], ["chat_security.E016"]),
        ([SESSION, AUTH, BOTH, OURS], ["chat_security.E016"]),
        ([SESSION, AUTH, OURS, BOTH], ["chat_security.E016"]),
    ],
)
def test_e016_site_wide_cache_order(stack, expected):
    assert ids(MIDDLEWARE=stack) == expected


def test_e016_names_the_cache_middleware_and_the_fix():
    with override_settings(MIDDLEWARE=[UPDATE, SESSION, AUTH, FETCH, OURS]):
        (error,) = deploy_checks.check_middleware()
    assert error.id == "chat_security.E016"
    assert FETCH in error.msg and "before" in error.msg
    assert "FetchFromCacheMiddleware" in error.hint and "last" in error.hint


def test_check_command_fails_when_the_cache_answers_first(settings):
    others = [m for m in settings.MIDDLEWARE if m != OURS]
    settings.MIDDLEWARE = [UPDATE, *others, FETCH, OURS]  # "ours last", as the README said
    with pytest.raises(SystemCheckError) as info:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    assert "chat_security.E016" in str(info.value)
    settings.MIDDLEWARE = [UPDATE, *others, OURS, FETCH]
    call_command("check", stdout=StringIO(), stderr=StringIO())


def test_check_command_fails_with_the_id():
    with chat_settings({"LEEWAY": -5}), pytest.raises(SystemCheckError) as info:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    assert "chat_security.E005" in str(info.value)


def test_check_command_fails_for_middleware_order(settings):
    settings.MIDDLEWARE = [OURS, SESSION, AUTH]
    with pytest.raises(SystemCheckError) as info:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    assert "chat_security.E016" in str(info.value)


def test_check_command_passes_for_the_test_settings():
    out = StringIO()
    call_command("check", stdout=out, stderr=StringIO())
    assert "no issues" in out.getvalue()


@pytest.mark.django_db
def test_migrations_are_complete():
    out = StringIO()
    call_command("makemigrations", "chat_security", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_e022_when_the_middleware_is_missing(settings):
    """Issue 17, item 6: an error (it was W002, then a 500 in views reading chat_identity)."""
    from chat_security.deploy_checks import check_middleware

    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]
    [error] = check_middleware()
    assert error.id == "chat_security.E022" and error.is_serious()
    assert "request.chat_identity" in error.hint and "SILENCED_SYSTEM_CHECKS" in error.hint
    with pytest.raises(SystemCheckError, match="chat_security.E022"):
        call_command("check", stdout=StringIO(), stderr=StringIO())
    settings.SILENCED_SYSTEM_CHECKS = ["chat_security.E022"]
    call_command("check", stdout=StringIO(), stderr=StringIO())


def test_w008_when_the_middleware_is_listed_twice(settings):
    from chat_security.deploy_checks import check_middleware

    settings.MIDDLEWARE = [*settings.MIDDLEWARE, OURS]
    [warning] = check_middleware()
    assert warning.id == "chat_security.W008" and "2 times" in warning.msg and warning.hint


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("CHAT_SECURITY_ENCRYPTION_KEYS", 'CHAT_SECURITY = {"ENCRYPTION_KEYS": ...}'),
        ("CHAT_SECURITY_PROTECTED_PATHS", 'os.environ["CHAT_SECURITY_PROTECTED_PATHS"]'),
        ("CHAT_SECURITY_ENCRYPTION_KEY", 'did you mean CHAT_SECURITY = {"ENCRYPTION_KEYS"'),
        ("CHAT_SECURITY_NOTHING_LIKE_IT", "CHAT_SECURITY has no key 'NOTHING_LIKE_IT'."),
    ],
)
def test_e021_a_chat_security_name_set_as_a_django_setting(name, hint):
    with override_settings(**{name: ["an-encryption-key-of-at-least-32-characters"]}):
        [error] = checks.check_stray_settings()
        assert error.id == "chat_security.E021" and name in error.msg
        assert hint in error.hint
        with pytest.raises(SystemCheckError, match="chat_security.E021"):
            call_command("check", stdout=StringIO(), stderr=StringIO())
    assert checks.check_stray_settings() == []


def test_the_cli_refuses_to_act_on_a_stray_setting():
    from .test_cli import cli

    with override_settings(CHAT_SECURITY_ENCRYPTION_KEYS=["x" * 40]):
        cli("generate-secret").assert_bad_input("chat_security.E021")


def test_no_middleware_message_when_it_is_in_place():
    from chat_security.deploy_checks import check_middleware

    assert check_middleware() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, []),
        (0.5, []),
        (600, []),
        (0, ["chat_security.E017"]),
        (601, ["chat_security.E017"]),
        (-1, ["chat_security.E005"]),
        ("ten", ["chat_security.E005"]),
    ],
)
def test_e017_websocket_identify_timeout(value, expected):
    assert ids({"WEBSOCKET_IDENTIFY_TIMEOUT": value}) == expected
