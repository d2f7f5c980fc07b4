"""The package's exceptions and the stable error codes of SPEC §4."""

from __future__ import annotations

from typing import Any

#: code -> one-line human explanation. These names are a public contract.
ERROR_CODES: dict[str, str] = {
    "missing_token": "No token was sent where one is required.",
    "token_too_large": "The token is larger than MAX_TOKEN_BYTES and was not parsed.",
    "malformed": "The token is not a well-formed compact JWS (three base64url parts of JSON).",
    "algorithm_not_allowed": "The token's signing algorithm is not accepted for this kind of key.",
    "unknown_key": "The token's kid does not name a key this site knows.",
    "key_retired": "The key named by the token's kid has been retired or revoked.",
    "security_not_configured": "No usable key of the needed kind exists yet.",
    "invalid_signature": "The signature does not match any usable key.",
    "missing_claim": "A required claim is absent.",
    "expired": "The token has expired.",
    "not_yet_valid": "The token is not valid yet (nbf or iat lies in the future).",
    "lifetime_too_long": "The token's lifetime exceeds MAX_TOKEN_LIFETIME.",
    "invalid_claim": "A claim has the wrong type or an unacceptable value.",
    "subject_changed": "This chat session started with another user id.",
    "token_revoked": "Tokens for this user were revoked after this token was issued.",
    "payload_decryption_failed": "The encrypted user_payload cannot be decrypted.",
    "unknown_issuer": "Several integrations serve here and the token's iss names none of them.",
}

#: what to do about each code; the admin's token tester adds the facts.
HINTS: dict[str, str] = {
    "missing_token": "Send the token as 'Authorization: Bearer <jwt>'.",
    "token_too_large": "Keep claims small; move bulky data out of the token.",
    "malformed": "Paste the whole token exactly as your JWT library produced it.",
    "algorithm_not_allowed": "Sign with HS256 using the signing secret, or with a private "
    "key whose public key is registered here, in the algorithm its type sets: RS256 (RSA), "
    "ES256 (EC P-256), EdDSA (Ed25519).",
    "unknown_key": "Drop the kid header or use the kid shown in the admin panel (for an "
    "identity provider's key set: a kid it publishes; the set is fetched again at most "
    "once per JWKS_COOLDOWN_SECONDS).",
    "key_retired": "Sign with the current active key; the admin panel shows its kid.",
    "security_not_configured": "Generate a signing secret or add a public key first.",
    "invalid_signature": "Check that your backend signs with the current secret or the "
    "private key matching a registered public key.",
    "missing_claim": "Include 'exp' and the user id ('sub' or 'userId') in every token.",
    "expired": "Issue a new token; a lifetime of 1 h is recommended.",
    "not_yet_valid": "Check the clock of the server that signs tokens.",
    "lifetime_too_long": "Issue shorter-lived tokens (1 h is recommended).",
    "invalid_claim": "Fix the claim's type or value in your token builder.",
    "subject_changed": "Log out (this destroys the chat session) before chatting as another user.",
    "token_revoked": "Issue a new token for this user.",
    "payload_decryption_failed": "Encrypt user_payload to the current service public key "
    "(RSA-OAEP-256 + A256GCM).",
    "unknown_issuer": "Put the iss of the integration this token is for in the token (the "
    "admin panel shows each integration's issuer).",
}


class ChatSecurityError(Exception):
    """Base class for everything this package raises on purpose."""


class TokenError(ChatSecurityError):
    """A token was refused. ``code`` is one of :data:`ERROR_CODES`.

    ``facts`` carries machine-readable context (e.g. the expiry time) that the
    admin tester turns into a hint; it never holds secret material.
    """

    def __init__(self, code: str, detail: str | None = None, **facts: Any) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.detail = detail or ERROR_CODES[code]
        self.facts = facts
        super().__init__(f"{code}: {self.detail}")

    @property
    def one_line(self) -> str:
        """The detail on one line, for a 401 body or a WebSocket error frame."""
        return " ".join(str(self.detail).split()) or ERROR_CODES[self.code]


class KeyImportError(ChatSecurityError):
    """A pasted or uploaded key was refused; the message says why."""


class KeyStateError(ChatSecurityError):
    """A key operation does not fit the store's current state."""


class KeyStoreUnavailable(ChatSecurityError):
    """The key store could not be read (e.g. the database is down)."""


#: The fix for stored key material that no ENCRYPTION_KEYS entry decrypts.
UNREADABLE_KEY_FIX = (
    "list the key it was encrypted with second in CHAT_SECURITY['ENCRYPTION_KEYS'] "
    "(SECRET_KEY, if ENCRYPTION_KEYS was unset then), run 'manage.py chat_security "
    "reencrypt', then remove the old key"
)


class KeySetStale(KeyStoreUnavailable):
    """An integration's fetched key set is older than ``JWKS_MAX_STALE`` (SPEC §14):
    its identity provider has not answered for that long. Answered 503; the
    detail names the source and its last fetch's error."""

    def __init__(self, integration: str, url: str, error: str = "") -> None:
        self.integration, self.url = integration, url
        self.detail = (
            f"The keys of integration {integration} from {url} could not be fetched for longer "
            "than JWKS_MAX_STALE" + (f" ({error})" if error else "") + "; try again."
        )
        super().__init__(self.detail)


class KeyUnreadable(KeyStoreUnavailable):
    """A usable key's stored material decrypts with no ``ENCRYPTION_KEYS`` entry.

    Usually ``ENCRYPTION_KEYS`` was set (or changed) after the key was made.
    Answered like an outage (503, the request is never let through), but
    trying again does not help: the message names the keys and the fix.
    """

    def __init__(self, kids: list[str]) -> None:
        self.kids = sorted(set(kids))
        self.detail = (
            f"Key {', '.join(self.kids)} cannot be decrypted with ENCRYPTION_KEYS (set or "
            f"changed after the key was made): {UNREADABLE_KEY_FIX}."
        )
        super().__init__(self.detail)


class AnonymousLinkError(ChatSecurityError):
    """``link_anonymous`` refused: a malformed id, or an anonymous id already linked
    to another user (SPEC §11); the message says which."""
