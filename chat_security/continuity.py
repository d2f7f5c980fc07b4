"""Anonymous → verified continuity (SPEC §11): one visitor, one contact, after login.

A visitor who chatted before logging in has a contact keyed ``anon:<cookie
id>``. :func:`link_anonymous` merges it into the user's contact, records an
``AnonymousLink`` (which a GDPR deletion of the user follows) and sends
``anonymous_linked`` so other apps can move their own rows.

Both contacts are of one user space (SPEC §13), ``"default"`` unless told:
an anonymous conversation of a tenant with its own users merges into that
tenant's user, never into ``default``'s namesake. A cookie id is linked once,
to one user of one space.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from . import clock
from .exceptions import AnonymousLinkError, TokenError
from .identity import ANON_PREFIX, MERGED_FIELDS, add_counts
from .integrations import DEFAULT_USER_SPACE
from .log import get_logger
from .models import AnonymousLink, Contact
from .signals import anonymous_linked
from .tokens import user_id_of
from .user_data import add_missing_keys
from .values import ANONYMOUS_ID_RE

logger = get_logger(__name__)


def _link_ids(anonymous_id: Any, user_id: Any) -> str:
    if not isinstance(anonymous_id, str) or not ANONYMOUS_ID_RE.fullmatch(anonymous_id):
        raise AnonymousLinkError(
            "the anonymous id must be a visitor cookie id: 'anon-' and 22 characters "
            "of A-Z, a-z, 0-9, '_' or '-'"
        )
    try:
        user_id_of({"sub": user_id})
    except TokenError as exc:
        raise AnonymousLinkError(str(exc.detail)) from None
    if user_id.startswith(ANON_PREFIX):
        raise AnonymousLinkError(f"user ids starting with {ANON_PREFIX!r} are reserved")
    return ANON_PREFIX + anonymous_id


def merge_anonymous(contact: Contact, anonymous: Contact) -> bool:
    """Fill in what ``contact`` lacks from ``anonymous``; whether anything changed.

    The user's own values win: a field only where the user's is empty,
    ``userData`` keys only where the user has none, and only while they fit in
    ``USER_DATA_MAX_BYTES`` (the user's keys are never dropped for them).
    """
    changed = False
    for name in MERGED_FIELDS:
        if not getattr(contact, name) and getattr(anonymous, name):
            setattr(contact, name, getattr(anonymous, name))
            changed = True
    user_data = add_missing_keys(contact.user_data, anonymous.user_data)
    if user_data != contact.user_data:
        contact.user_data = user_data
        changed = True
    return changed


def link_anonymous(
    anonymous_id: str, user_id: str, user_space: str = DEFAULT_USER_SPACE
) -> AnonymousLink:
    """Link an anonymous visitor's id to the user who just logged in (SPEC §11).

    ``user_space`` is the space of both contacts (SPEC §13): the user's, and
    the anonymous ``anon:<id>`` one merged into it.

    In one transaction: merges the ``anon:<id>`` contact into the user's (see
    :func:`merge_anonymous`; the user's contact is created if it does not
    exist), records an ``AnonymousLink``, sends ``anonymous_linked``
    (``anonymous_id``, ``user_id``, ``contact``) so other apps move their data,
    then deletes the anonymous contact: the user's contact now holds its data
    and the link remembers the id, for a GDPR deletion of the user.

    Idempotent: linking the same pair again returns the same link and changes
    nothing that is already done; it merges and signals again, so what was
    written under the anonymous id since (the browser chatted anonymously
    again) follows. Raises :class:`AnonymousLinkError` for a malformed id and
    for an anonymous id already linked to another user (a namesake in another
    user space is another user).
    """
    key = _link_ids(anonymous_id, user_id)
    if not isinstance(user_space, str) or not user_space:
        raise AnonymousLinkError("give the user space of the user (default: 'default')")
    try:
        return _link(anonymous_id, user_id, key, user_space)
    except IntegrityError:
        # A concurrent first link of this id, or first contact of this user: once
        # more, on top of the committed row (or refused, if that links another user).
        return _link(anonymous_id, user_id, key, user_space)


def _link(anonymous_id: str, user_id: str, key: str, space: str) -> AnonymousLink:
    with transaction.atomic():
        # Both rows locked in one statement, always in the same order.
        locked = Contact.objects.select_for_update().filter(
            user_space=space, user_id__in=(key, user_id)
        )
        rows = {row.user_id: row for row in locked.order_by("user_id")}
        link = (
            AnonymousLink.objects.filter(anonymous_id=anonymous_id)
            .select_related("contact")
            .first()
        )
        if link is not None and link.contact.user_id != user_id:
            raise AnonymousLinkError("this anonymous id is already linked to another user")
        if link is not None and link.contact.user_space != space:
            raise AnonymousLinkError(
                "this anonymous id is already linked to a user of another user space"
            )
        contact = rows.get(user_id) or Contact(user_space=space, user_id=user_id)
        anonymous = rows.get(key)
        anonymous = anonymous if anonymous is not None and anonymous.anonymous else None
        changed = anonymous is not None and merge_anonymous(contact, anonymous)
        if changed or contact.pk is None:
            contact.updated_at = clock.now_dt()
            contact.save()
        if link is None:
            link = AnonymousLink.objects.create(anonymous_id=anonymous_id, contact=contact)
        link.contact = contact
        moved: dict[str, int] = {}
        results = anonymous_linked.send(
            sender=AnonymousLink, anonymous_id=anonymous_id, user_id=user_id, contact=contact
        )
        add_counts(moved, results)
        if anonymous is not None:
            anonymous.delete()
    logger.info("anonymous visitor linked to contact %s: %s", user_id, moved or "nothing moved")
    return link
