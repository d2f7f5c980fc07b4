"""``request.chat_identity``: who the chat API is talking to (SPEC §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verified import VerifiedToken

_UNSET: Any = object()


class ChatIdentity:
    """The verified (or anonymous) person behind a protected request.

    ``contact`` is looked up lazily: most chat requests only need ``user_id``,
    and the contact record costs database work. ``claims`` and ``private``
    come from the verification result when first read (copying them costs
    more than the rest of a repeated token's check).
    """

    __slots__ = ("user_id", "kid", "anonymous", "anonymous_id", "_claims", "_private", "_result",
                 "_contact", "_integration", "_user_space")  # fmt: skip

    def __init__(
        self,
        *,
        user_id: str | None,
        claims: dict[str, Any] | None = None,
        kid: str | None = None,
        anonymous: bool = False,
        private: Any = None,
        anonymous_id: str | None = None,
        integration: str = "default",
        user_space: str = "default",
    ) -> None:
        self.user_id = user_id
        self.kid = kid
        self.anonymous = anonymous
        self.anonymous_id = anonymous_id
        self._claims: dict[str, Any] | None = claims if claims is not None else {}
        self._private = private
        self._result: VerifiedToken | None = None
        self._contact = _UNSET
        self._integration, self._user_space = integration, user_space

    @classmethod
    def verified(cls, result: VerifiedToken) -> ChatIdentity:
        identity = cls.__new__(cls)  # on every verified request: no keyword handling
        identity.user_id, identity.kid, identity.anonymous = result.user_id, result.kid, False
        identity.anonymous_id, identity._claims, identity._private = None, None, None
        identity._result, identity._contact = result, _UNSET
        identity._integration = identity._user_space = "default"  # the result's are read
        return identity

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims (``{}`` for an anonymous visitor)."""
        if self._result is not None:
            return self._result.claims
        assert self._claims is not None  # None only beside a result (``verified``)
        return self._claims

    @property
    def integration(self) -> str:
        """The integration whose keys and rules accepted the token (SPEC §13)."""
        return self._result.integration if self._result is not None else self._integration

    @property
    def user_space(self) -> str:
        """The user space ``user_id`` belongs to: contacts and revocations are kept per space."""
        return self._result.user_space if self._result is not None else self._user_space

    @property
    def private(self) -> Any:
        """The decrypted ``user_payload``, if the token carried one."""
        return self._result.private if self._result is not None else self._private

    @classmethod
    def anonymous_visitor(
        cls, anonymous_id: str | None = None, integration: Any = None
    ) -> ChatIdentity:
        """An unverified visitor; ``integration`` (its entry) is the one whose switch,
        being off, let it in: its contact is kept in that integration's user space."""
        if integration is None:
            return cls(user_id=None, anonymous=True, anonymous_id=anonymous_id)
        return cls(
            user_id=None,
            anonymous=True,
            anonymous_id=anonymous_id,
            integration=integration.name,
            user_space=integration.user_space,
        )

    @property
    def is_verified(self) -> bool:
        return not self.anonymous

    @property
    def contact(self) -> Any:
        """The contact record for this identity (``identity.contact_for``), computed once."""
        if self._contact is _UNSET:
            from .identity import contact_for

            self._contact = contact_for(self)
        return self._contact

    async def acontact(self) -> Any:
        """:attr:`contact` for async views (the lookup touches the database)."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(lambda: self.contact)()

    def __repr__(self) -> str:
        # Never show claims or private data: identities end up in logs and tracebacks.
        if self.anonymous:
            return f"<ChatIdentity anonymous id={self.anonymous_id!r}>"
        return f"<ChatIdentity user_id={self.user_id!r} kid={self.kid!r}>"
