"""The ``userData`` claim: a flat object of scalars, merged by top-level key (SPEC §8).

``identity`` runs these when a token is applied to the contact and when an
anonymous visitor's contact is merged into a user's (§11). Pure functions:
they return the new object and append a ``{"field", "reason"}`` entry to
``ignored`` for anything they drop; nothing raises on bad input.
"""

from __future__ import annotations

import json
from typing import Any

from .conf import app_settings
from .values import Ignored, clean_text, drop, is_number

USER_DATA_KEY_MAX = 100


def _entry_size(key: str, value: Any) -> int:
    """Bytes of ``"key":value`` in compact UTF-8 JSON."""
    text = json.dumps({key: value}, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "replace")) - 2


def fit_user_data(pairs: list[tuple[str, Any]], cap: int, ignored: Ignored) -> dict[str, Any]:
    """Keep pairs in order while the JSON object stays within ``cap`` bytes."""
    kept: dict[str, Any] = {}
    size = 2  # "{}"
    for key, value in pairs:
        extra = _entry_size(key, value) + (1 if kept else 0)
        if size + extra > cap:
            field = f"userData.{key[:USER_DATA_KEY_MAX]}"
            drop(ignored, field, f"over USER_DATA_MAX_BYTES ({cap} bytes)")
            continue
        kept[key] = value
        size += extra
    return kept


def normalise_user_data(value: Any, ignored: Ignored) -> dict[str, Any] | None:
    """Scalar values only, keys and strings cleaned, the whole capped in size."""
    if not isinstance(value, dict):
        drop(ignored, "userData", "must be an object")
        return None
    pairs: list[tuple[str, Any]] = []
    for raw_key, item in value.items():
        key = clean_text(str(raw_key))
        field = f"userData.{key[:USER_DATA_KEY_MAX]}"
        if not key or len(key) > USER_DATA_KEY_MAX:
            drop(ignored, field, f"keys must be 1–{USER_DATA_KEY_MAX} characters")
        elif isinstance(item, bool) or is_number(item):
            pairs.append((key, item))
        elif isinstance(item, str):
            pairs.append((key, clean_text(item)))
        elif isinstance(item, int | float):
            drop(ignored, field, "number out of range (at most 2**53)")
        else:
            kind = "null" if item is None else "an object or list"
            drop(ignored, field, f"{kind} is not kept: only strings, numbers and booleans")
    return fit_user_data(pairs, app_settings.USER_DATA_MAX_BYTES, ignored)


def merge_user_data(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Top-level merge; when over the cap the token's keys win over older ones."""
    old = old if isinstance(old, dict) else {}
    merged = {**old, **new}
    priority = list(new.items()) + [(k, v) for k, v in old.items() if k not in new]
    kept = fit_user_data(priority, app_settings.USER_DATA_MAX_BYTES, [])
    return {k: v for k, v in merged.items() if k in kept}


def add_missing_keys(mine: Any, theirs: Any) -> dict[str, Any]:
    """``mine`` plus the keys of ``theirs`` it lacks, while the whole stays within
    ``USER_DATA_MAX_BYTES``. ``mine`` is kept whole, even over a cap lowered
    since it was stored; nothing is added to it then.
    """
    merged = dict(mine) if isinstance(mine, dict) else {}
    theirs = theirs if isinstance(theirs, dict) else {}
    cap = app_settings.USER_DATA_MAX_BYTES
    # Bytes of ``merged`` as compact JSON: braces, entries, commas between them.
    size = 2 + sum(_entry_size(k, v) for k, v in merged.items()) + max(len(merged) - 1, 0)
    for key, value in theirs.items():
        extra = _entry_size(key, value) + (1 if merged else 0)
        if key not in merged and size + extra <= cap:
            merged[key] = value
            size += extra
    return merged
