"""Receivers that keep per-process caches honest, and the package's own signals."""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from . import keyring, keys, middleware
from .conf import app_settings
from .models import Key, RevokedUser, SecurityConfig, key_store_changed, store_changed

#: Sent before a contact is deleted (GDPR); receivers delete what they tie to it.
#: Arguments: ``user_id`` (str), ``contact``; receivers return a description
#: of what they deleted (e.g. ``{"messages": 12}``).
contact_deleting = Signal()


@receiver(post_save, sender=Key)
@receiver(post_delete, sender=Key)
@receiver(post_save, sender=SecurityConfig)
@receiver(post_save, sender=RevokedUser)
@receiver(post_delete, sender=RevokedUser)
def _keys_changed(**kwargs: Any) -> None:
    # The manager methods already moved the version; this also covers a plain
    # save() or delete() elsewhere (same transaction, so it commits with it).
    store_changed()


@receiver(key_store_changed)
def _store_changed(**kwargs: Any) -> None:
    keyring.invalidate()


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    """The one place every cache derived from settings is dropped (``override_settings``)."""
    if setting in ("CHAT_SECURITY", "SECRET_KEY"):
        app_settings.clear_cache()
        keys.clear_caches()
        middleware.protected_prefixes.cache_clear()
        keyring.reset()
