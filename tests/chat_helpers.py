"""Helpers shared by the site-integration tests (middleware, tag, views, demo chat)."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.test import override_settings

from chat_security import keys
from chat_security.models import Key, SecurityConfig


def sign(secret: str, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def stored_secret(key: Key) -> str:
    """The signing secret ``key`` stores, decrypted: for tests only (the package
    hands a secret out once, from the manager method that creates it)."""
    return keys.decrypt(key.encrypted_material)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def security_off() -> None:
    SecurityConfig.set_enabled(False, actor="tests")


@pytest.fixture
def secret(clock, db):
    """An active signing secret: ``(key, value)``."""
    return Key.objects.generate_secret(actor="tests")


@pytest.fixture
def token_for(secret, clock):
    """``token_for(sub, **claims)``: a valid one-hour HS256 token."""
    key, value = secret

    def make(sub: str = "user-1", **claims: Any) -> str:
        payload = {"sub": sub, "iat": int(clock.t), "exp": int(clock.t) + 3600, **claims}
        return sign(value, payload, kid=key.kid)

    return make


@pytest.fixture
def alice(db, django_user_model):
    return django_user_model.objects.create_user(
        "alice", "alice@example.com", "pw-alice", first_name="Alice", last_name="Example"
    )


@pytest.fixture
def bob(db, django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob")


def chat_settings(**overrides: Any) -> override_settings:
    """``override_settings`` for some CHAT_SECURITY keys, keeping the others."""
    return override_settings(CHAT_SECURITY={**settings.CHAT_SECURITY, **overrides})


#: CLAIMS_BUILDERs whose claims the engine cannot sign or would itself refuse
#: (the tag must still render the page; the token endpoint answers 503, never 500).
REFUSED_BUILDERS: dict[str, Any] = {
    "datetime": lambda user: {
        "sub": str(user.pk),
        "member_since": datetime.datetime(2031, 5, 17, 9, 30, tzinfo=datetime.UTC),
    },
    "iss-not-a-string": lambda user: {"sub": str(user.pk), "iss": 2031},
    "nbf-not-a-number": lambda user: {"sub": str(user.pk), "nbf": "2031-05-17"},
    "nbf-in-the-future": lambda user: {"sub": str(user.pk), "nbf": 2031 * 10**6},
    "not-a-dict": lambda user: None,
}
