"""The base64url alphabet (RFC 4648 §5), in the forms the package needs: one home.

``jws`` reads tokens strictly with it, ``payload`` the JWE's header, ``log``
finds token-shaped text with it, and ``values`` the anonymous ids that
``secrets.token_urlsafe`` makes.
"""

from __future__ import annotations

import base64
import string

#: The 64 characters, in value order (``A`` is 0, ``_`` is 63).
ALPHABET = (string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_").encode()
#: One character of it, as a regular-expression class.
CHARACTER = "[A-Za-z0-9_-]"


def decode_unpadded(segment: str | bytes) -> bytes:
    """Unpadded base64url, leniently (``binascii.Error`` or ``ValueError`` if it is not).

    For what only needs a look (a JWE header, whether text starts like JSON);
    a token's own parts go through ``jws``'s strict, canonical decoder.
    """
    if isinstance(segment, str):
        segment = segment.encode("ascii")
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
