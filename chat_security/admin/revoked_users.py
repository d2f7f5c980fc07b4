"""Revoked users as the Developer – WebChat panel shows them (SPEC §3 step 8, §13).

The read side of *Revoke a user*: the newest few revocations and how many in
all, and what a revocation refuses, for the confirmation page. The action
and the read-only list of every revocation are in ``revocations``.
"""

from __future__ import annotations

from typing import Any

from ..integrations import DEFAULT_USER_SPACE
from ..models import Integration, RevokedUser
from ..timefmt import exact_utc, relative

RECENT_REVOKED_USERS = 5


def revoked_user_row(revoked: RevokedUser, now: float) -> dict[str, Any]:
    first = revoked.first_revoked_at
    return {
        "user_id": revoked.user_id,
        "user_space": revoked.user_space,
        "since": exact_utc(revoked.revoked_at),
        "since_relative": relative(revoked.revoked_at.timestamp(), now),
        # shown only when a later revocation moved the iat cut-off
        "first": exact_utc(first) if first and first != revoked.revoked_at else "",
        "by": revoked.revoked_by,
    }


def revoked_users_summary(now: float) -> dict[str, Any]:
    """The panel's *Revoke a user* section: the newest few and how many in all.

    ``revoked_in_other_spaces``: one of them is in a user space other than
    ``default``'s, so the table names each one's space even on a site that now has
    one integration (the one that owned it was removed; its revocations stay).
    """
    newest = RevokedUser.objects.order_by("-revoked_at", "-pk")[:RECENT_REVOKED_USERS]
    rows = [revoked_user_row(r, now) for r in newest]
    return {
        "revoked_users": rows,
        "revoked_in_other_spaces": any(r["user_space"] != DEFAULT_USER_SPACE for r in rows),
        "revoked_users_count": RevokedUser.objects.count(),
    }


def _user_space_warning(integration: Integration) -> str:
    """Who else the revocation holds for (SPEC §13); "" when ``default`` is alone in it."""
    space = integration.user_space
    if integration.own_users:
        return (
            f"It holds in the user space {space} only (integration {integration.name} has "
            "its own users): a user with this id in default's user space, or in another, "
            "is not revoked."
        )
    sharing = list(
        Integration.objects.filter(user_space=space).order_by("name").values_list("name", flat=True)
    )
    if len(sharing) < 2:  # default alone: a one-chat site reads as before
        return ""
    return (
        f"It holds for every integration that shares default's users ({', '.join(sharing)}): "
        "they are the same people."
    )


def revoke_user_warnings(user_id: str, now: float, integration: Integration) -> list[str]:
    """What revoking ``user_id`` in ``integration``'s user space refuses (SPEC §3 step 8,
    §13), for the confirmation page."""
    warnings = [
        "Every token of this user issued before the moment you confirm (an iat before "
        "it) is refused with token_revoked, on the chat API and on WebSockets.",
        "Every token of this user without iat is refused too, unless it had already expired.",
        "Open chat connections of this user are closed (token_revoked).",
        "Tokens your site issues for this user after this moment are accepted: this ends "
        "the sessions the user has now. To keep them out, also stop issuing tokens for them.",
    ]
    space = _user_space_warning(integration)
    if space:
        warnings.insert(0, space)
    existing = RevokedUser.objects.filter(
        user_space=integration.user_space, user_id=user_id
    ).first()
    if existing is not None:
        warnings.insert(
            0,
            f"This user was already revoked at {exact_utc(existing.revoked_at)} "
            f"({relative(existing.revoked_at.timestamp(), now)}); revoking again also "
            "refuses the tokens issued since then.",
        )
    warnings.append("A revocation cannot be undone.")
    return warnings
