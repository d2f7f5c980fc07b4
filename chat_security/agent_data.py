"""The ``agentData`` claim: the typed items of the Visitor Details card (SPEC §8).

One rule set for both sides of the card: ``identity`` runs it when a token
is applied to the contact, and the card's template tag re-runs it over what
the database holds. The value rules underneath (text, numbers, email, phone,
links, dates) live in ``values``. Every function here is pure: it returns
the normalised items and appends a ``{"field", "reason"}`` entry to
``ignored`` for anything it drops; nothing raises on bad input.

``normalise_agent_data`` is idempotent, so the card re-runs it over what the
database holds; an item stored by an older version or edited by hand is
skipped there too.
"""

from __future__ import annotations

import re
from typing import Any

from .values import (
    Ignored,
    drop,
    email_value,
    http_url,
    is_number,
    parse_date,
    parse_datetime,
    phone_e164,
    text_value,
)

DISPLAY_TYPES = (
    "plain",
    "date",
    "datetime",
    "number",
    "currency",
    "email",
    "phone",
    "link",
    "boolean",
    "status",
)
STATUS_COLORS = ("success", "danger", "warning", "info", "primary", "secondary")
DEFAULT_STATUS_COLOR = "primary"

LABEL_MAX = 100
VALUE_MAX = 500
LINK_TEXT_MAX = 100

_CURRENCY = re.compile(r"[A-Za-z]{3}")
_ITEM_KEYS = {"label", "value", "type"}
_EXTRA_KEYS = {"currency": {"currency"}, "link": {"text"}, "status": {"color"}}


def normalise_agent_data(
    value: Any, max_items: int, ignored: Ignored, field: str = "agentData"
) -> list[dict[str, Any]] | None:
    """The items the card can show, in order, capped at ``max_items``."""
    if not isinstance(value, list):
        drop(ignored, field, "must be a list of {label, value, type?} objects")
        return None
    items: list[dict[str, Any]] = []
    for index, raw in enumerate(value):
        if len(items) >= max_items:
            drop(
                ignored,
                f"{field}[{index}:]",
                f"{len(value) - index} more item(s) over AGENT_DATA_MAX_ITEMS ({max_items})",
            )
            break
        item = normalise_item(raw, f"{field}[{index}]", ignored)
        if item is not None:
            items.append(item)
    return items


def normalise_item(raw: Any, where: str, ignored: Ignored) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        drop(ignored, where, "item must be an object with label and value")
        return None
    kind = raw.get("type", "plain")
    if kind is None:
        kind = "plain"
    if not isinstance(kind, str) or kind not in DISPLAY_TYPES:
        shown = kind[:30] if isinstance(kind, str) else type(kind).__name__
        drop(ignored, where, f"unknown type {shown!r}; use one of {', '.join(DISPLAY_TYPES)}")
        return None
    label = text_value(raw.get("label"), f"{where}.label", ignored, LABEL_MAX, numbers=True)
    if label is None:
        drop(ignored, where, "label is required")
        return None
    if raw.get("value") is None:
        drop(ignored, where, "value is required")
        return None
    item = _TYPED[kind](raw, where, ignored)
    if item is None:
        return None
    for key in sorted(set(raw) - _ITEM_KEYS - _EXTRA_KEYS.get(kind, set()))[:10]:
        drop(ignored, f"{where}.{str(key)[:40]}", f"not a member of a {kind} item")
    return {"label": label, "type": kind, **item}


def _plain(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    value = raw["value"]
    if isinstance(value, bool):
        value = "true" if value else "false"
    local: Ignored = []
    text = text_value(value, f"{where}.value", local, VALUE_MAX, numbers=True)
    if text is None:
        drop(ignored, where, "value must be a string, number or boolean")
        return None
    ignored.extend(local)
    return {"value": text}


def _date(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    parsed = parse_date(raw["value"])
    if parsed is None:
        drop(ignored, where, "date must be a YYYY-MM-DD string")
        return None
    return {"value": parsed.isoformat()}


def _datetime(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    parsed = parse_datetime(raw["value"])
    if parsed is None:
        drop(ignored, where, "datetime must be an ISO 8601 string like 2026-04-23T14:30:00Z")
        return None
    return {"value": parsed.isoformat()}


def _number(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    if not is_number(raw["value"]):
        drop(ignored, where, "number must be a JSON number (at most 2**53 in size)")
        return None
    return {"value": raw["value"]}


def _currency(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    code = raw.get("currency")
    if not (isinstance(code, str) and _CURRENCY.fullmatch(code)):
        drop(ignored, where, "currency needs a 3-letter ISO 4217 code in 'currency'")
        return None
    if not is_number(raw["value"]):
        drop(ignored, where, "currency value must be a JSON number")
        return None
    return {"value": raw["value"], "currency": code.upper()}


def _email(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    value = email_value(raw["value"])
    if value is None:
        drop(ignored, where, "not a valid email address")
        return None
    return {"value": value}


def _phone(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    value = phone_e164(raw["value"])
    if value is None:
        drop(ignored, where, "not a phone number in international format (+country code)")
        return None
    return {"value": value}


def _link(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    url = http_url(raw["value"])
    if url is None:
        drop(ignored, where, "link must be an absolute http or https URL")
        return None
    item: dict[str, Any] = {"value": url}
    if raw.get("text") is not None:
        text = text_value(raw["text"], f"{where}.text", ignored, LINK_TEXT_MAX, numbers=True)
        if text is not None:
            item["text"] = text
    return item


def _boolean(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    if not isinstance(raw["value"], bool):
        drop(ignored, where, "boolean value must be true or false")
        return None
    return {"value": raw["value"]}


def _status(raw: dict[str, Any], where: str, ignored: Ignored) -> dict[str, Any] | None:
    local: Ignored = []
    text = text_value(raw["value"], f"{where}.value", local, VALUE_MAX, numbers=True)
    if text is None:
        drop(ignored, where, "status value must be a string or a number")
        return None
    ignored.extend(local)
    color = raw.get("color", DEFAULT_STATUS_COLOR)
    if color not in STATUS_COLORS:
        drop(
            ignored,
            f"{where}.color",
            f"must be one of {', '.join(STATUS_COLORS)}; {DEFAULT_STATUS_COLOR} used",
        )
        color = DEFAULT_STATUS_COLOR
    return {"value": text, "color": color}


_TYPED = {
    "plain": _plain,
    "date": _date,
    "datetime": _datetime,
    "number": _number,
    "currency": _currency,
    "email": _email,
    "phone": _phone,
    "link": _link,
    "boolean": _boolean,
    "status": _status,
}
