"""What a verification leaves behind: the result callers get, and this process's memory.

:class:`VerifiedToken` is what :func:`chat_security.verify` returns. The
memory (``MEMORY``) lets a token this process verified before skip
parsing, the signature and JWE decryption; ``tokens`` decides when a
remembered token may be used and re-runs every time- and store-dependent
check on it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .conf import app_settings, register_cache
from .lru import ByteBoundedLRU

if TYPE_CHECKING:
    from .jws import ParsedToken
    from .keyring import KeyEntry


class VerifiedToken:
    """A token that passed every check.

    ``header``, ``claims`` and ``private`` are this result's own deep copies,
    plain JSON types (dict, list, str, numbers, bool, None) all the way down:
    changing any of them, nested values such as ``userData`` included, never
    changes what a later :func:`verify` of the same token returns, and
    ``json.dumps`` takes them as they are. The engine makes each copy when it
    is first read, so a caller that only wants ``user_id`` pays for none.
    Read-only: the attributes cannot be reassigned.
    """

    __slots__ = ("_src", "_state", "_copies")

    def __init__(
        self,
        *,
        user_id: str,
        header: dict[str, Any],
        claims: dict[str, Any],
        kid: str,
        key_kind: str,
        key_state: str,
        private: Any = None,
        integration: str = "default",
        user_space: str = "default",
    ) -> None:
        self._src: Remembered | _Given = _Given(
            user_id, header, claims, private, _KeyName(kid, key_kind), integration, user_space
        )
        self._state = key_state
        self._copies: dict[str, Any] | None = None

    @classmethod
    def _sharing(cls, remembered: Remembered, key_state: str) -> VerifiedToken:
        """A result over the engine's own values, each copied when first read."""
        result = cls.__new__(cls)
        result._src, result._state, result._copies = remembered, key_state, None
        return result

    def _own(self, name: str) -> Any:
        copies = self._copies
        if copies is None:
            copies = self._copies = {}
        elif name in copies:
            return copies[name]
        value = getattr(self._src, name)
        if self._src.nested:
            value = _fresh(value)
        elif type(value) is dict:
            value = dict(value)
        copies[name] = value
        return value

    @property
    def user_id(self) -> str:
        return self._src.user_id

    @property
    def kid(self) -> str:
        return self._src.key.kid

    @property
    def key_kind(self) -> str:
        return self._src.key.kind

    @property
    def key_state(self) -> str:
        return self._state

    @property
    def integration(self) -> str:
        """The name of the integration whose keys and rules accepted it (SPEC §13)."""
        return self._src.integration

    @property
    def user_space(self) -> str:
        """The user space its user id belongs to (contacts, revocations, the session)."""
        return self._src.user_space

    @property
    def header(self) -> dict[str, Any]:
        header: dict[str, Any] = self._own("header")
        return header

    @property
    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = self._own("claims")
        return claims

    @property
    def private(self) -> Any:
        return self._own("private")

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as plain values, never with the engine's record (keys inside).
        return _rebuild, self._fields()

    def __eq__(self, other: object) -> bool:
        if type(other) is not VerifiedToken:
            return NotImplemented
        return self._fields() == other._fields()

    # Equal by value but not hashable (the idiom; typeshed types __hash__ as a method).
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"VerifiedToken(user_id={self.user_id!r}, header={self.header!r}, "
            f"claims={self.claims!r}, kid={self.kid!r}, key_kind={self.key_kind!r}, "
            f"key_state={self.key_state!r}, integration={self.integration!r})"
        )


#: VerifiedToken's fields, in the order pickling stores them.
_FIELDS = (
    "user_id", "header", "claims", "kid", "key_kind", "key_state", "private", "integration",
    "user_space",
)  # fmt: skip


def _rebuild(*fields: Any) -> VerifiedToken:
    return VerifiedToken(**dict(zip(_FIELDS, fields, strict=True)))


@dataclass(slots=True)
class _KeyName:
    kid: str
    kind: str


@dataclass(slots=True)
class _Given:
    """What a VerifiedToken built by hand holds (the engine's are ``Remembered``)."""

    user_id: str
    header: dict[str, Any]
    claims: dict[str, Any]
    private: Any
    key: _KeyName
    integration: str
    user_space: str
    nested: bool = True  # unknown: copy all the way down


# -- the memory of verified tokens ----------------------------------------------


@dataclass(slots=True)
class Remembered:
    """A token that verified against ``keyset``: what a hit needs to re-check it.

    Not the parsed token itself: its signing input and signature (another
    copy of the token's bytes) serve no purpose once the signature matched.
    """

    keyset: object  # Snapshot.keyset when it verified
    header: dict[str, Any]
    claims: dict[str, Any]
    key: KeyEntry
    user_id: str
    private: Any
    service_key: KeyEntry | None  # the key that decrypted user_payload, if any
    #: whether header, claims or private hold dicts or lists a result must copy;
    #: most chat tokens are flat, and a flat result then costs two dict() calls
    nested: bool
    #: step 6's numbers, read and validated once: ``exp`` (None: the token has
    #: none) and the latest of ``nbf`` and ``iat`` (-inf: neither)
    exp: float | None
    not_before: float
    #: the integration that judged it, and its user space
    integration: str = "default"
    user_space: str = "default"
    #: what the entry is charged in the memory (:func:`cost_of`)
    cost: int = 0

    def times_pass(self, now: float) -> bool:
        """Step 6 at ``now``: the comparisons :func:`check_times` makes, on numbers read once.

        LEEWAY and MAX_TOKEN_LIFETIME are read now; a settings change empties
        the memory anyway.
        """
        leeway = app_settings.LEEWAY
        exp = self.exp
        return self.not_before <= now + leeway and (
            exp is None
            or (now <= exp + leeway and exp - now <= app_settings.MAX_TOKEN_LIFETIME + leeway)
        )


#: Bytes (estimated) the verified-token memory may hold per process. A
#: typical chat token (~300 characters, a few claims) costs about 2.4 KiB, so
#: this keeps ~13,000 live tokens: every user of a site with 10,000 people
#: chatting at once, renewals included, with every worker seeing every user.
#: A 1 MiB token (MAX_TOKEN_BYTES at its ceiling) of ordinary claims costs
#: ~1.7 MiB; one made of many tiny JSON values up to ~15 MiB, all counted.
VERIFIED_MEMORY_BYTES = 32 * 1024 * 1024
#: What one entry costs besides the token and its decoded JSON: its slots in the
#: cache (cachetools keeps an entry in three dicts, with a (value, size) pair)
#: and the record above with its step-6 numbers (~450 bytes measured;
#: tests/test_verify_cache.py checks the total with tracemalloc).
_ENTRY_OVERHEAD = 544


def cost_of(token: str, parsed: ParsedToken, private: Any) -> int:
    """Estimated bytes a remembered token holds, a little above what it really holds.

    A header is charged to the token that decoded it; the tokens that share
    it from ``jws``'s header cache hold only a reference. The claims are
    charged a bound worked out from their text and the objects the parser
    recorded while decoding them, when the text allows one
    (:func:`claims_bound`), else measured value by value (:func:`json_bytes`).
    """
    size = sys.getsizeof(token) + _ENTRY_OVERHEAD
    if parsed.header_decoded:
        size += json_bytes(parsed.header)
    size += claims_bound(parsed.payload, parsed.objects) or json_bytes(parsed.claims)
    return size if private is None else size + json_bytes(private)


# -- what decoded JSON holds in memory ----------------------------------------------

#: The container types of decoded JSON (everything else in it is an immutable scalar).
CONTAINERS = (dict, list)


def _containers(value: Any) -> Iterator[Any]:
    """Every dict and list in decoded JSON, each once (``value`` first, if it is one)."""
    stack = [value] if type(value) in CONTAINERS else []
    while stack:
        item = stack.pop()
        yield item
        children = item.values() if type(item) is dict else item
        kinds = set(map(type, children))  # in C: most containers hold no containers
        if dict in kinds or list in kinds:
            stack.extend([c for c in children if type(c) in CONTAINERS])


def json_bytes(value: Any) -> int:
    """What decoded JSON holds, in bytes: ``sys.getsizeof`` of every object in it.

    Objects the interpreter shares (small ints, ``None``, one-letter strings)
    are counted at each use, so the figure errs high; and a token of a
    million empty lists costs what those lists really take, not its length.
    """
    total = sys.getsizeof(value)
    for item in _containers(value):
        if type(item) is dict:
            # Keys are strings: str.__sizeof__ is getsizeof without the lookup.
            total += sum(map(str.__sizeof__, item))
            item = item.values()
        # A container child is counted here (its own object), its contents in its turn.
        total += sum(map(sys.getsizeof, item))
    return total


#: The most an ASCII string, int, float, bool or None costs beyond its JSON text's
#: length: ``sys.getsizeof("")`` is 49; an int of d digits costs at most 32 + d/2.
SCALAR_OVERHEAD = 49
#: A list of n items built by appending holds at most ``_LIST_BASE + _LIST_SLOT * n``
#: bytes (CPython over-allocates by an eighth; checked for every n up to 200,000).
_LIST_BASE = 104
_LIST_SLOT = 10


def claims_bound(text: bytes, objects: list[dict[str, Any]]) -> int:
    """An upper bound of what the JSON ``text`` holds once decoded, without visiting it;
    0 when the text allows none (not ASCII, or ``\\u`` escapes).

    ``objects`` are every object the decoder built from ``text``. For ASCII
    text without escapes every string is one byte per character, and each
    scalar (key, value or item) costs at most ``SCALAR_OVERHEAD`` plus its own
    text. The objects are counted as they are: their ``sys.getsizeof`` plus
    their keys' and values' overhead. The lists are bounded from the text:
    they hold at most the commas that do not separate object members, and each
    list one item more than its commas. Brackets and commas inside strings
    only raise the bound.
    """
    if not text.isascii() or b"\\u" in text:
        return 0
    members = sum(map(len, objects))
    total = len(text) + sum(map(sys.getsizeof, objects)) + 2 * SCALAR_OVERHEAD * members
    lists = text.count(b"[")
    if lists:
        object_commas = members - len(objects) + objects.count({})  # n - 1 per non-empty
        items = text.count(b",") - object_commas + lists
        total += _LIST_BASE * lists + (_LIST_SLOT + SCALAR_OVERHEAD) * items
    return total


#: token -> Remembered for tokens that verified. The chat widget sends the
#: same token with every message; a hit skips parsing, the signature and JWE
#: decryption (their outcome cannot change while the snapshot's key set is
#: the same object) but re-runs every check that depends on the time or on
#: the current snapshot: times, user revocations, the session's subject, and
#: whether the signing key and the service key that decrypted user_payload
#: are still usable. Per process, successes only, bounded in bytes
#: (``VERIFIED_MEMORY_BYTES``), least recently used out first: a token
#: re-sent every few seconds stays while any number of tokens seen once pass
#: through. Results get copies of what is kept here (``_fresh``), never the
#: objects themselves.
MEMORY: ByteBoundedLRU[str, Remembered] = ByteBoundedLRU(
    VERIFIED_MEMORY_BYTES, lambda _token, value: value.cost
)


def remember(token: str, value: Remembered) -> None:
    MEMORY.budget = VERIFIED_MEMORY_BYTES  # read at use, like a setting
    MEMORY.put(token, value, value.cost)


def _fresh(value: Any) -> Any:
    """A deep copy of decoded JSON: new dicts and lists, the immutable scalars shared.

    Several times cheaper than ``copy.deepcopy`` (no memo, no dispatch), and a
    flat object costs little more than ``dict()``. Read-only views would cost
    nothing per hit, but ``json.dumps`` refuses them and the identity rules
    expect dicts and lists, so callers would have to know about them.
    """
    if type(value) is dict:
        return {k: _fresh(v) if type(v) in CONTAINERS else v for k, v in value.items()}
    if type(value) is list:
        return [_fresh(v) if type(v) in CONTAINERS else v for v in value]
    return value


def forget_verified() -> None:
    """Drop remembered verifications.

    Never needed for correctness (a hit requires the key set it was verified
    against), but a change of settings frees the memory at once, and tests
    start empty.
    """
    MEMORY.clear()


register_cache(forget_verified)
