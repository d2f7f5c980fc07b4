"""Value rules shared by the contact record and the Visitor Details card (SPEC §8).

What a claim value may be once it is kept or shown: cleaned text, JSON
numbers, email addresses, phone numbers, http(s) URLs, ISO dates, language
tags, and the CRM link. ``identity`` (claims → contact) and ``agent_data``
(the card's items) both build on these; neither calls into the other for them.

Every function is pure: it takes a value as the JSON parser produced it and
returns the normalised value or ``None``; those that take ``ignored`` append a
``{"field", "reason"}`` entry for anything they drop. Nothing raises on bad
input: a wrong type costs the field, never the token.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email

from .base64url import CHARACTER
from .conf import app_settings

Ignored = list[dict[str, str]]

URL_MAX = 2048
EMAIL_MAX = 254
PHONE_INPUT_MAX = 64
# Beyond 2**53 a JSON number no longer round-trips through JavaScript.
NUMBER_MAX = 2**53
#: An anonymous visitor's cookie id (what ``marks.new_anonymous_id`` makes):
#: the one format the middleware, the WebSocket layer and ``link_anonymous`` accept.
ANONYMOUS_ID_RE = re.compile(rf"anon-{CHARACTER}{{22}}")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOCALE = re.compile(
    r"(?P<language>[A-Za-z]{2,3})(?:-(?P<script>[A-Za-z]{4}))?(?:-(?P<region>[A-Za-z]{2}|\d{3}))?"
)
_http_url = URLValidator(schemes=["http", "https"])
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def drop(ignored: Ignored, field: str, reason: str) -> None:
    ignored.append({"field": field, "reason": reason})


def clean_text(value: str) -> str:
    """Remove control characters, lone surrogates and bidi overrides; whitespace runs
    become one space.

    Lone surrogates (legal in JSON escapes) cannot be encoded by the
    database driver, and NUL is refused by PostgreSQL: either would turn a
    signed token into a 500. Bidi embeddings, overrides and isolates
    (U+202A–U+202E, U+2066–U+2069) would let a name reverse the verified
    fields shown next to it on an agent's screen.
    """
    out = []
    for ch in value:
        category = unicodedata.category(ch)
        if ch.isspace():
            out.append(" ")
        elif category not in ("Cc", "Cs") and ch not in _BIDI_CONTROLS:
            out.append(ch)
    return " ".join("".join(out).split())


def text_value(
    value: Any, field: str, ignored: Ignored, limit: int, *, numbers: bool = False
) -> str | None:
    """A non-empty cleaned string (numbers become strings when allowed), cut at ``limit``."""
    if numbers and is_number(value):
        value = number_text(value)
    if not isinstance(value, str):
        kinds = "a string or a number" if numbers else "a string"
        drop(ignored, field, f"must be {kinds}")
        return None
    text = clean_text(value)
    if not text:
        drop(ignored, field, "empty")
        return None
    if len(text) > limit:
        drop(ignored, field, f"cut to {limit} characters")
        text = text[: limit - 1].rstrip() + "…"
    return text


def is_number(value: Any) -> bool:
    """A finite JSON number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and abs(value) <= NUMBER_MAX


def number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def email_value(value: Any) -> str | None:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= EMAIL_MAX:
        return None
    email = value.strip()
    try:
        validate_email(email)
    except ValidationError:
        return None
    return email


def phone_e164(value: Any) -> str | None:
    """E.164 for a number in international format (+country code), else None.

    No default region: "07700 900123" is ambiguous without one. A number is
    kept when its length is possible for its country; allocation is not
    checked, so the fictional ranges used in documentation still pass.
    """
    if not isinstance(value, str) or not 0 < len(value) <= PHONE_INPUT_MAX:
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_display(e164: str) -> str:
    """The international, human-spaced form of an E.164 number."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def http_url(value: Any) -> str | None:
    """``value`` if it is an absolute http(s) URL, else None (no javascript:, data:, …)."""
    if not isinstance(value, str) or not 0 < len(value) <= URL_MAX:
        return None
    if value != value.strip() or any(
        unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS for c in value
    ):
        return None
    try:
        _http_url(value)
    except ValidationError:
        return None
    return value


def parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_datetime(value: Any) -> datetime | None:
    """An ISO 8601 date-time as an aware UTC datetime; a naive one is taken as UTC."""
    if not isinstance(value, str) or not 10 < len(value) <= 64 or not _DATE.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def normalise_locale(value: Any) -> str | None:
    """A BCP 47 language[-Script][-REGION] tag with canonical case (en-GB), else None."""
    match = _LOCALE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    return "-".join(parts)


def crm_url(crm_id: str) -> str | None:
    """The CRM link for ``crm_id`` from ``CRM_URL_TEMPLATE`` (the id URL-quoted), if set."""
    template = app_settings.CRM_URL_TEMPLATE
    if not crm_id or not isinstance(template, str) or "{crm_id}" not in template:
        return None
    if not template.startswith(("https://", "http://")):
        return None
    if crm_id in (".", ".."):
        # Quoting leaves dots alone and browsers resolve these as path segments:
        # the link would point at a parent page of the CRM, not at a record.
        return None
    return template.replace("{crm_id}", quote(crm_id, safe=""))
