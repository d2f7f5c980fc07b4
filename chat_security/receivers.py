"""Receivers that keep this process's key snapshot honest (connected in ``apps.ready``).

Caches derived from *settings* clear themselves: each registers with
``conf.register_cache``, and conf's one ``setting_changed`` receiver runs them.
Nothing imports this module but the app config, so it may import the store
and the keyring without forming a cycle.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import keyring
from .models import (
    Integration,
    Key,
    RevokedUser,
    SecurityConfig,
    key_store_changed,
    store_changed,
)


@receiver(post_save, sender=Integration)
@receiver(post_delete, sender=Integration)
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
