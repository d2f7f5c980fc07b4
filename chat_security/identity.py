"""Identity claims -> contact record (SPEC §8), and deletion (GDPR).

``preview`` is the pure rule set: what a token's claims would give the
contact and what was dropped, and why. ``contact_for`` applies it to the
database, once per token and never over data from a newer token (by ``iat``,
then ``exp``). ``delete_contact`` is the one deletion path the CLI and the
admin share; it follows the links that ``continuity.link_anonymous`` records
when an anonymous visitor logs in. A contact is keyed by (user space, user
id) (SPEC §13): integrations sharing a user space share contacts, and alice
of a tenant with its own users is not ``default``'s alice; every function
here that takes a user id takes ``user_space`` too, ``"default"`` unless
told. The decrypted
``user_payload`` (``private``) is never written anywhere by this module;
``preview`` reports only its key names.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from django.db import IntegrityError, transaction

from . import clock
from .agent_data import normalise_agent_data
from .conf import app_settings
from .exceptions import ChatSecurityError, TokenError
from .integrations import DEFAULT_USER_SPACE
from .log import get_logger
from .models import AnonymousLink, AuditEntry, Contact
from .signals import contact_deleting
from .tokens import user_id_of
from .user_data import merge_user_data, normalise_user_data
from .values import (
    Ignored,
    clean_text,
    drop,
    email_value,
    is_number,
    normalise_locale,
    number_text,
    phone_e164,
    text_value,
)

logger = get_logger(__name__)

#: Contacts of anonymous visitors are keyed "anon:<cookie id>". Verified user
#: ids with this prefix get no contact, so neither side can reach the other's.
ANON_PREFIX = "anon:"
NAME_MAX = 150
CRM_ID_MAX = 255
_ANON_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")
_FIELDS = ("email", "first_name", "last_name", "phone", "locale", "crm_id")
#: what a user's contact takes from a merged anonymous one, where it has nothing
MERGED_FIELDS = (*_FIELDS, "agent_data")


# -- single claims -----------------------------------------------------------------


def _email(claims: dict[str, Any], ignored: Ignored) -> str | None:
    value = email_value(claims["email"])
    if value is None:
        drop(ignored, "email", "not a valid email address")
    return value


def split_name(name: str) -> tuple[str, str]:
    """First word -> first name, the rest -> last name; one word -> first name only.

    The split is positional: it never guesses which part is the family name,
    and a name written without spaces (山田太郎, محمد) stays whole in the first
    name. Sites that know better send ``given_name``/``family_name``.
    """
    words = clean_text(name).split(" ")
    first, last = words[0], " ".join(words[1:])
    return first[:NAME_MAX], last[:NAME_MAX]


def _names(claims: dict[str, Any], ignored: Ignored) -> dict[str, str]:
    names: dict[str, str] = {}
    if "name" in claims:
        value = claims["name"]
        if isinstance(value, str) and clean_text(value):
            names["first_name"], names["last_name"] = split_name(value)
            if any(len(part) > NAME_MAX for part in clean_text(value).split(" ", 1)):
                drop(ignored, "name", f"cut to {NAME_MAX} characters per part")
        else:
            drop(ignored, "name", "must be a non-empty string")
    # OpenID Connect's explicit parts win over the positional split.
    for claim, field in (("given_name", "first_name"), ("family_name", "last_name")):
        if claim in claims:
            text = text_value(claims[claim], claim, ignored, NAME_MAX)
            if text is not None:
                names[field] = text
    return names


def _phone(claims: dict[str, Any], ignored: Ignored) -> str | None:
    value = phone_e164(claims["phone"])
    if value is None:
        drop(ignored, "phone", "not a phone number in international format (+country code)")
    return value


def _locale(claims: dict[str, Any], ignored: Ignored) -> str | None:
    value = normalise_locale(claims["locale"])
    if value is None:
        drop(ignored, "locale", "not a language tag like en-GB")
    return value


def _crm_id(claims: dict[str, Any], ignored: Ignored) -> str | None:
    value = claims["crmID"]
    if is_number(value):
        value = number_text(value)
    if not isinstance(value, str) or not clean_text(value):
        drop(ignored, "crmID", "must be a non-empty string or a number")
        return None
    value = clean_text(value)
    if len(value) > CRM_ID_MAX:
        # A cut identifier would link to another record: drop it instead.
        drop(ignored, "crmID", f"longer than {CRM_ID_MAX} characters")
        return None
    return value


# -- the preview -------------------------------------------------------------------


def _extract(claims: dict[str, Any], ignored: Ignored) -> dict[str, Any]:
    """The contact fields the claims carry (present and valid only)."""
    fields: dict[str, Any] = {}
    steps = (("email", _email), ("phone", _phone), ("locale", _locale), ("crm_id", _crm_id))
    fields.update(_names(claims, ignored))
    for field, step in steps:
        claim = "crmID" if field == "crm_id" else field
        if claim in claims:
            value = step(claims, ignored)
            if value is not None:
                fields[field] = value
    if "userData" in claims:
        user_data = normalise_user_data(claims["userData"], ignored)
        if user_data is not None:
            fields["user_data"] = user_data
    if "agentData" in claims:
        items = normalise_agent_data(
            claims["agentData"], app_settings.AGENT_DATA_MAX_ITEMS, ignored
        )
        if items is not None:
            fields["agent_data"] = items
    return fields


def preview(claims: dict[str, Any], private: Any = None) -> dict[str, Any]:
    """What the contact record would receive from ``claims``; pure, no database.

    ``private`` (the decrypted ``user_payload``) contributes its key names only.
    """
    ignored: Ignored = []
    claims = claims if isinstance(claims, dict) else {}
    try:
        user_id: str | None = user_id_of(claims)
    except TokenError as exc:
        user_id = None
        drop(ignored, "sub", exc.detail)
    fields = _extract(claims, ignored)
    return {
        "user_id": user_id,
        **{name: fields.get(name) for name in _FIELDS},
        "user_data": fields.get("user_data"),
        "agent_data": fields.get("agent_data"),
        "private_keys": sorted(str(k) for k in private) if isinstance(private, dict) else [],
        "ignored": ignored,
    }


# -- the contact record ------------------------------------------------------------


def token_stamp(claims: dict[str, Any]) -> str:
    """A digest of the claims (iat/exp included), so each token is applied once."""
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _seconds(value: Any) -> float | None:
    if type(value) not in (int, float):
        return None  # absent, or not a number (bool included): no time
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def token_time(claims: dict[str, Any]) -> tuple[float | None, float | None]:
    """The token's ``(iat, exp)`` in seconds; None for a claim it lacks."""
    return _seconds(claims.get("iat")), _seconds(claims.get("exp"))


def is_newer(time: tuple[float | None, float | None], contact: Contact) -> bool:
    """Whether a token of ``time`` = (iat, exp) may overwrite ``contact``'s data.

    Newer means a later ``iat``, or the same ``iat`` and a later ``exp``. A claim
    the token lacks counts as the oldest time: a token without ``iat`` never
    overwrites data from one with ``iat``, and is ordered against other tokens
    without it by ``exp``. When neither the token nor the one applied last has
    either claim nothing orders them, and each new token is applied (once).
    """
    held = (contact.token_iat, contact.token_exp)
    if time == (None, None) and held == (None, None):
        return True
    return _order(time) > _order(held)


def _order(time: tuple[float | None, float | None]) -> tuple[float, float]:
    iat, exp = time
    return (-math.inf if iat is None else iat, -math.inf if exp is None else exp)


def _applies(contact: Contact, claims: dict[str, Any], stamp: str) -> bool:
    return contact.last_token != stamp and is_newer(token_time(claims), contact)


def _assign(contact: Contact, fields: dict[str, Any], stamp: str, claims: dict[str, Any]) -> None:
    for name in _FIELDS:
        if name in fields:
            setattr(contact, name, fields[name])
    if "user_data" in fields:
        contact.user_data = merge_user_data(contact.user_data, fields["user_data"])
    if "agent_data" in fields:
        contact.agent_data = fields["agent_data"]
    contact.last_token = stamp
    contact.token_iat, contact.token_exp = token_time(claims)
    contact.updated_at = clock.now_dt()


def _apply(
    user_id: str,
    claims: dict[str, Any],
    stamp: str,
    space: str = DEFAULT_USER_SPACE,
    retry: bool = True,
) -> Contact | None:
    fields = _extract(claims, [])
    try:
        with transaction.atomic():
            found = Contact.objects.select_for_update().filter(user_space=space, user_id=user_id)
            contact = found.first()
            if contact is None:
                contact = Contact(user_space=space, user_id=user_id, created_at=clock.now_dt())
            elif contact.anonymous:
                return None
            elif not _applies(contact, claims, stamp):
                return contact  # another request applied this or a newer token meanwhile
            _assign(contact, fields, stamp, claims)
            contact.save()
    except IntegrityError:
        # Created by a concurrent first request: apply on top of that row.
        if not retry:
            raise
        return _apply(user_id, claims, stamp, space, retry=False)
    logger.debug("contact %s updated from a new token", user_id)
    return contact


def _anonymous_contact(space: str, anonymous_id: Any) -> Contact | None:
    if not app_settings.ANONYMOUS_IDS:
        return None
    if not isinstance(anonymous_id, str) or not _ANON_ID.fullmatch(anonymous_id):
        return None
    key = ANON_PREFIX + anonymous_id
    contact = Contact.objects.filter(user_space=space, user_id=key).first()
    if contact is None:
        try:
            with transaction.atomic():
                contact = Contact.objects.create(user_space=space, user_id=key, anonymous=True)
        except IntegrityError:
            contact = Contact.objects.filter(user_space=space, user_id=key).first()
    return contact if contact is not None and contact.anonymous else None


def contact_for(identity: Any) -> Contact | None:
    """The contact of a ``ChatIdentity``, created or updated from its token.

    A verified identity's token is applied on its first request only, and
    only when it is newer than the token applied last (:func:`is_newer`: by
    ``iat``, then ``exp``; a token without ``iat`` counts as the oldest), so
    two devices with live tokens cannot take turns overwriting each other.
    Later requests with the same token, or with an older one, cost one SELECT
    and no write. Anonymous visitors with a cookie id get an ``anonymous``
    contact; without one, None. The contact is the one of the identity's
    ``user_space`` (SPEC §13): the same user id in another space is another
    contact.
    """
    space = user_space_of(identity)
    user_id = getattr(identity, "user_id", None)
    if getattr(identity, "anonymous", True) or not isinstance(user_id, str) or not user_id:
        return _anonymous_contact(space, getattr(identity, "anonymous_id", None))
    if user_id.startswith(ANON_PREFIX):
        logger.warning("verified user id uses the reserved %r prefix; no contact", ANON_PREFIX)
        return None
    claims = getattr(identity, "claims", None)
    claims = claims if isinstance(claims, dict) else {}
    stamp = token_stamp(claims)
    contact = Contact.objects.filter(user_space=space, user_id=user_id).first()
    if contact is not None and (contact.anonymous or not _applies(contact, claims, stamp)):
        return None if contact.anonymous else contact
    return _apply(user_id, claims, stamp, space)


def user_space_of(identity: Any) -> str:
    """The identity's user space; ``"default"`` for an object that names none.

    A value that is not a user space name (not a non-empty string) also falls
    back to ``"default"``: an identity built by hand keeps working as before.
    """
    space = getattr(identity, "user_space", None)
    return space if isinstance(space, str) and space else DEFAULT_USER_SPACE


# -- deletion ----------------------------------------------------------------------


def external_id(contact: Contact) -> str:
    """The id other apps key their data by: the ``sub``, or the anonymous cookie id."""
    if contact.anonymous and contact.user_id.startswith(ANON_PREFIX):
        return contact.user_id[len(ANON_PREFIX) :]
    return contact.user_id


def find_contact(
    user_id: str, *, anonymous: bool = False, user_space: str = DEFAULT_USER_SPACE
) -> Contact | None:
    """The contact of a verified user id or, with ``anonymous``, of an anonymous cookie id.

    The inverse of :func:`external_id`, so a site's agent screens need not know
    how anonymous contacts are keyed. Looks in ``user_space`` only (SPEC §13).
    Only looks: never creates or updates.
    """
    if not isinstance(user_id, str) or not user_id:
        return None
    key = ANON_PREFIX + user_id if anonymous else user_id
    return Contact.objects.filter(user_space=user_space, user_id=key, anonymous=anonymous).first()


def _count(deleted: dict[str, int], name: str, count: Any) -> None:
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        deleted[name] = deleted.get(name, 0) + count


def add_counts(counts: dict[str, int], results: list[tuple[Any, Any]]) -> None:
    """Add up the ``{"name": count}`` descriptions receivers of a signal returned."""
    for _receiver, result in results:
        if isinstance(result, dict):
            for name, count in result.items():
                _count(counts, str(name), count)


def _delete_rows(contacts: Any, deleted: dict[str, int]) -> None:
    """Delete ``contacts`` (a queryset); count the rows that cascade from them."""
    _total, by_model = contacts.delete()
    for label, count in by_model.items():
        if label == AnonymousLink._meta.label:
            _count(deleted, "anonymous_links", count)
        elif label != Contact._meta.label:
            _count(deleted, label, count)


def _delete_linked(contact: Contact, deleted: dict[str, int]) -> None:
    """The GDPR deletion of ``contact`` reaches the anonymous ids linked to it.

    ``contact_deleting`` goes out for each, with the anonymous contact or, where
    that was merged away, an unsaved stand-in, so receivers find the data they
    still key by the anonymous id. The link rows go with ``contact`` (cascade).
    """
    if contact.anonymous:
        # Erasing an anonymous id erases its link too (nothing keeps the id).
        links = AnonymousLink.objects.filter(anonymous_id=external_id(contact))
        _count(deleted, "anonymous_links", links.delete()[0])
        return
    keys = {
        ANON_PREFIX + i: i for i in contact.anonymous_links.values_list("anonymous_id", flat=True)
    }
    if not keys:
        return
    space = contact.user_space
    found = Contact.objects.select_for_update().filter(
        user_space=space, user_id__in=keys, anonymous=True
    )
    rows = {row.user_id: row for row in found.order_by("user_id")}
    for key, anonymous_id in keys.items():
        anonymous = rows.get(key) or Contact(user_space=space, user_id=key, anonymous=True)
        add_counts(
            deleted,
            contact_deleting.send(sender=Contact, user_id=anonymous_id, contact=anonymous),
        )
    if rows:
        _count(deleted, "anonymous_contacts", len(rows))
        _delete_rows(Contact.objects.filter(pk__in=[row.pk for row in rows.values()]), deleted)


def delete_contact(
    user_id: str, actor: str = "", user_space: str = DEFAULT_USER_SPACE
) -> dict[str, Any]:
    """Delete the contact ``user_id`` of ``user_space`` and everything tied to it (GDPR erasure).

    Only that space's contact goes (SPEC §13): erasing alice of a tenant with
    its own users leaves ``default``'s alice, and the reverse. The CLI's
    ``delete-contact --integration NAME`` passes that integration's user space.

    Receivers of ``contact_deleting`` get ``user_id`` = :func:`external_id`
    (for an anonymous contact "anon:<cookie id>" that is the cookie id) and
    ``contact``, delete their data and return counts (e.g. ``{"messages": 12}``);
    rows that cascade from the contact are counted too. A user's contact takes
    the anonymous ids linked to it along (:func:`link_anonymous`): the signal
    goes out for each, and the counts include ``anonymous_links`` and
    ``anonymous_contacts``. An id with no contact deletes nothing and returns
    ``{"contact": 0}`` (an erasure request may come twice); the audit log records it.
    Raises ChatSecurityError for an empty id or user space.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ChatSecurityError("give the contact's user id")
    if not isinstance(user_space, str) or not user_space:
        raise ChatSecurityError("give the contact's user space (default: 'default')")
    with transaction.atomic():
        found = Contact.objects.select_for_update().filter(user_space=user_space, user_id=user_id)
        contact = found.first()
        deleted: dict[str, int] = {"contact": 0 if contact is None else 1}
        if contact is not None:
            _delete_linked(contact, deleted)
            add_counts(
                deleted,
                contact_deleting.send(
                    sender=Contact, user_id=external_id(contact), contact=contact
                ),
            )
            _delete_rows(Contact.objects.filter(pk=contact.pk), deleted)
        summary = ", ".join(f"{k}={v}" for k, v in deleted.items())
        named = _named(user_id, user_space)
        AuditEntry.record(actor, "delete_contact", detail=f"{named} ({summary})")
    logger.info("contact %s deleted by %s: %s", user_id, actor or "-", summary)
    result: dict[str, Any] = {"user_id": user_id, "deleted": deleted}
    if user_space != DEFAULT_USER_SPACE:
        result["user_space"] = user_space
    return result


def _named(user_id: str, user_space: str) -> str:
    """The user id as the audit log names it: after its space unless that is ``default``.

    The space comes first so the log's length cap cuts a long id, never the space.
    """
    return user_id if user_space == DEFAULT_USER_SPACE else f"user space {user_space}: {user_id}"
