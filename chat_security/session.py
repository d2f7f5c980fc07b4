"""The token kept in the login session (SPEC §6, "generate once at login, reuse").

The template tag and ``GET /api/chat-token`` both ask :func:`kept_token`. It
signs a token the first time, keeps it in ``request.session`` and hands the
same token back until 75 % of its lifetime has passed — or until its key is
no longer the active one or the user's tokens were revoked — so a page view
costs a session read, not a signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from . import clock, jws, keyring, tokens
from .claims import build_claims
from .exceptions import ChatSecurityError
from .integrations import DEFAULT_INTEGRATION, DEFAULT_USER_SPACE
from .models import KeyState

#: Session key of the kept token (a small dict, JSON-serialisable).
TOKEN_SESSION_KEY = "chat_security.token"
#: Session key of the user id the chat session is bound to (``subject_changed``).
SUBJECT_SESSION_KEY = "chat_security.subject"
#: Share of a token's lifetime after which a fresh one is issued.
REFRESH_FRACTION = 0.75


@dataclass(frozen=True)
class KeptToken:
    """A token and when to replace it; times are POSIX seconds (integers)."""

    token: str
    issued_at: float
    expires_at: int
    refresh_at: int
    kid: str
    sub: str

    def as_json(self) -> dict[str, Any]:
        return {"token": self.token, "expires_at": self.expires_at, "refresh_at": self.refresh_at}

    def as_session(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "refresh_at": self.refresh_at,
            "kid": self.kid,
            "sub": self.sub,
        }


def kept_token(request: HttpRequest, integration: str = DEFAULT_INTEGRATION) -> KeptToken | None:
    """The logged-in user's chat token, reused from the session while it is fresh.

    ``integration`` names the integration that signs it (SPEC §13; each keeps
    its own token in the session).

    ``None`` for anonymous users. Raises :class:`~chat_security.exceptions.ChatSecurityError`
    when no token can be issued: ``KeyStateError`` without an active secret,
    ``TokenError`` (with its SPEC §4 code) for claims the verifier would refuse
    (a ``datetime``, an ``iss`` that is no string, an ``nbf`` in the future), and
    ``KeyStoreUnavailable`` when the key store cannot be read.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    owner = str(user.pk)
    session = getattr(request, "session", None)
    key = _scoped(TOKEN_SESSION_KEY, integration)
    stored = session.get(key) if session is not None else None
    kept = _reusable(stored, owner, integration)
    if kept is None:
        kept = issue_for(user, integration)
        if session is not None:
            session[key] = {**kept.as_session(), "owner": owner}
    return kept


def _scoped(key: str, name: str) -> str:
    """A session key of ``default`` as before; of another integration or space, suffixed."""
    return key if name == DEFAULT_INTEGRATION else f"{key}.{name}"


def issue_for(user: Any, integration: str = DEFAULT_INTEGRATION) -> KeptToken:
    """Sign a new token for ``user`` with claims from ``CLAIMS_BUILDER``; raises as
    :func:`kept_token` does."""
    claims = build_claims(user)
    sub = claims.pop("sub", None)
    alias = claims.pop("userId", None)
    sub = alias if sub is None else sub
    if not isinstance(sub, str):
        raise ChatSecurityError("CLAIMS_BUILDER must return the user id as a string 'sub'")
    token = tokens.issue(sub, claims, integration=integration)
    issued = jws.parse(token)  # our own token: read back iat/exp/kid exactly as signed
    iat, exp = issued.claims["iat"], int(issued.claims["exp"])
    return KeptToken(
        token=token,
        issued_at=iat,
        expires_at=exp,
        refresh_at=int(iat + REFRESH_FRACTION * (exp - iat)),
        kid=issued.header["kid"],
        sub=sub,
    )


def _reusable(stored: Any, owner: str, integration: str) -> KeptToken | None:
    if not isinstance(stored, dict) or stored.get("owner") != owner:
        return None
    try:
        kept = KeptToken(
            token=str(stored["token"]),
            issued_at=float(stored["iat"]),
            expires_at=int(stored["exp"]),
            refresh_at=int(stored["refresh_at"]),
            kid=str(stored["kid"]),
            sub=str(stored["sub"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    now = clock.now()
    if now >= kept.refresh_at:
        return None
    # In-memory checks only: a rotated or revoked key, or a revoke-user, means re-issue now
    # rather than handing out a token the API would refuse.
    snapshot = keyring.get_snapshot()
    entry = snapshot.by_kid.get(kept.kid)
    owner_entry = snapshot.integrations.get(integration)
    if (
        entry is None
        or owner_entry is None
        or entry.integration != integration
        or entry.state(now) != KeyState.ACTIVE
    ):
        return None
    space = owner_entry.user_space
    if snapshot.revocation_refusing(kept.sub, kept.issued_at, kept.expires_at, space) is not None:
        return None
    return kept


# -- the chat session's subject (HTTP and WebSocket alike) ------------------------------


def existing_session(session: Any) -> Any:
    """``session`` if the browser brought one that exists, else None; never creates one."""
    if session is None:
        return None
    session.get(SUBJECT_SESSION_KEY)  # loads it; a stale cookie leaves no session key
    return session if session.session_key else None


def bound_subject(session: Any, user_space: str = DEFAULT_USER_SPACE) -> str | None:
    """The user id the chat session is bound to in ``user_space`` (``subject_changed``)."""
    if session is None:
        return None
    subject = session.get(_scoped(SUBJECT_SESSION_KEY, user_space))
    return subject if isinstance(subject, str) else None


def bound_subjects(session: Any) -> dict[str, str] | None:
    """User space -> the user id the chat session is bound to there (None: no session).

    A session holds one binding per user space (SPEC §13): web and the iOS app
    share one; a tenant with its own users has its own.
    """
    if session is None:
        return None
    bound = {}
    for key in list(session.keys()):
        if key == SUBJECT_SESSION_KEY or key.startswith(SUBJECT_SESSION_KEY + "."):
            subject = session.get(key)
            if isinstance(subject, str):
                bound[key[len(SUBJECT_SESSION_KEY) + 1 :] or DEFAULT_USER_SPACE] = subject
    return bound


def bind_subject(session: Any, user_id: str, user_space: str = DEFAULT_USER_SPACE) -> bool:
    """Bind the chat session to its first verified user of ``user_space``; True if it changed."""
    key = _scoped(SUBJECT_SESSION_KEY, user_space)
    if session is None or session.get(key) == user_id:
        return False
    session[key] = user_id
    return True


def end_chat_session(request: HttpRequest) -> bool:
    """Forget the chat session's bound user id and kept token (the widget's logout).

    Returns whether there was anything to forget. Never creates a session.
    """
    session = getattr(request, "session", None)
    if session is None or session.session_key is None:
        return False
    found = False
    for key in list(session.keys()):
        if any(
            key == k or key.startswith(k + ".") for k in (SUBJECT_SESSION_KEY, TOKEN_SESSION_KEY)
        ):
            del session[key]
            found = True
    return found
