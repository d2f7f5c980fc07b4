"""The default claims builder for tokens the app issues (``CLAIMS_BUILDER``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.module_loading import import_string

from .conf import app_settings
from .exceptions import ChatSecurityError


def default_claims(user: Any) -> dict[str, Any]:
    """User id (primary key), email and full name of a Django user."""
    claims: dict[str, Any] = {"sub": str(user.pk)}
    email = getattr(user, "email", "")
    if email:
        claims["email"] = email
    get_full_name = getattr(user, "get_full_name", None)
    name = get_full_name() if callable(get_full_name) else ""
    if name:
        claims["name"] = name
    return claims


def build_claims(user: Any) -> dict[str, Any]:
    """Claims for ``user`` from the configured builder.

    Raises :class:`~chat_security.exceptions.ChatSecurityError` when the builder
    returns no mapping; what its values are worth is the engine's to judge
    (``tokens.issue`` refuses what its verifier would refuse).
    """
    builder = app_settings.CLAIMS_BUILDER
    if isinstance(builder, str):
        builder = import_string(builder)
    claims = builder(user)
    if not isinstance(claims, Mapping):
        raise ChatSecurityError(
            f"CLAIMS_BUILDER must return a dict of claims, not {type(claims).__name__}"
        )
    return dict(claims)
