"""``{% load chat_security_agent %}{% visitor_details contact %}``: the agent's card.

The card shows what a verified token said about the visitor: identity
fields and the ``agentData`` items, formatted in the agent's active locale
and time zone (Django l10n). Items are re-validated here, so anything stored
that does not fit the rules is skipped; every value goes through the
template's autoescaping (nothing is marked safe), and links are only ever
http(s), mailto: with a validated address, or tel: with an E.164 number.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from ..agent_data import normalise_agent_data
from ..conf import app_settings
from ..models import Contact
from ..values import email_value, http_url, parse_date, parse_datetime, phone_display, phone_e164

register = template.Library()

# ISO 4217 minor units that are not 2 (the default).
_ZERO: tuple[str, ...] = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF")
_ZERO += ("UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF")
_THREE = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")
_MINOR_UNITS = {**dict.fromkeys(_ZERO, 0), **dict.fromkeys(_THREE, 3), "CLF": 4, "UYW": 4}


def _number(value: int | float, decimals: int | None = None) -> str:
    number: int | float | Decimal = value
    if isinstance(value, float):
        # str() gives the shortest round-tripping digits; Decimal keeps them exact.
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return str(value)
    return formats.number_format(number, decimals, use_l10n=True, force_grouping=True)


def _datetime(iso: str) -> tuple[str, str]:
    parsed = parse_datetime(iso)
    if parsed is None:
        return iso, iso
    try:
        local = timezone.localtime(parsed)
    except (OverflowError, ValueError):
        local = parsed
    return formats.date_format(local, "DATETIME_FORMAT", use_l10n=True), parsed.isoformat()


def display_item(item: dict[str, Any]) -> dict[str, Any]:
    """What the template needs for one normalised item: text, href, machine value."""
    kind, value = item["type"], item["value"]
    shown: dict[str, Any] = {"label": item["label"], "type": kind, "text": str(value)}
    if kind == "date":
        parsed = parse_date(value)
        assert parsed is not None  # normalised items hold valid dates only
        shown["machine"] = value
        shown["text"] = formats.date_format(parsed, "DATE_FORMAT", use_l10n=True)
    elif kind == "datetime":
        shown["text"], shown["machine"] = _datetime(value)
    elif kind == "number":
        shown["text"] = _number(value)
    elif kind == "currency":
        code = item["currency"]
        shown["text"] = _number(value, _MINOR_UNITS.get(code, 2))
        shown["currency"] = code
    elif kind == "email":
        shown["href"] = f"mailto:{value}"
    elif kind == "phone":
        shown["href"] = f"tel:{value}"
        shown["text"] = phone_display(value)
    elif kind == "link":
        shown["href"] = value
        shown["text"] = item.get("text") or value
    elif kind == "boolean":
        shown["ok"] = value is True
        shown["text"] = _("Yes") if value else _("No")
    elif kind == "status":
        shown["color"] = item["color"]
    return shown


def _identity_rows(contact: Contact) -> dict[str, Any]:
    email = email_value(contact.email)
    phone = phone_e164(contact.phone)
    return {
        "name": contact.display_name,
        "email": email,
        "phone": phone,
        "phone_text": phone_display(phone) if phone else "",
        "locale": contact.locale,
        "crm_id": contact.crm_id,
        "crm_url": http_url(contact.crm_url),
    }


@register.inclusion_tag("chat_security/visitor_details.html")
def visitor_details(contact: Contact | None) -> dict[str, Any]:
    """The Visitor Details card for ``contact`` (a Contact or None)."""
    if not isinstance(contact, Contact):
        return {"contact": None}
    items = normalise_agent_data(contact.agent_data, app_settings.AGENT_DATA_MAX_ITEMS, [])
    return {
        "contact": contact,
        "verified": not contact.anonymous,
        "user_id": contact.user_id,
        "identity": _identity_rows(contact),
        "items": [display_item(i) for i in items or []] if not contact.anonymous else [],
    }
