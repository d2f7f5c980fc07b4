"""The base64url alphabet's one home (``chat_security.base64url``)."""

from __future__ import annotations

import base64
import re

import pytest

from chat_security import base64url


def test_the_alphabet_in_value_order_and_its_character_class_agree():
    every = "".join(map(chr, range(128)))
    assert len(set(base64url.ALPHABET)) == 64
    assert set(re.findall(base64url.CHARACTER, every)) == set(base64url.ALPHABET.decode())
    for value, char in enumerate(base64url.ALPHABET.decode()):
        assert base64.urlsafe_b64encode(bytes([value << 2]))[:1].decode() == char


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b'{"alg":"RSA-OAEP-256"}'])
def test_decode_unpadded(data):
    encoded = base64.urlsafe_b64encode(data).rstrip(b"=")
    assert base64url.decode_unpadded(encoded) == data
    assert base64url.decode_unpadded(encoded.decode()) == data
