"""A key entry or a snapshot in a repr (an assertion, a debugger, a log) shows no key material."""

from __future__ import annotations

import pytest

from chat_security import keyring
from chat_security.models import Key

pytestmark = pytest.mark.django_db


def test_no_secret_or_private_key_in_the_reprs_of_the_snapshot():
    _key, secret = Key.objects.generate_secret("t")
    Key.objects.generate_service_keypair("t")
    snap = keyring.get_snapshot()
    for entry in snap.by_kid.values():
        if entry.kind == "service_key":
            entry.private_key()  # loaded, as after a first decryption
    text = repr(snap) + "".join(repr(e) for e in snap.by_kid.values())
    assert secret not in text
    assert secret.encode() not in text.encode()
    for material in Key.objects.values_list("encrypted_material", flat=True):
        assert material[:40] not in text  # nor what the database holds
    assert "PRIVATE" not in text and "RSAKey" not in text
    assert "kid=" in text  # the repr still says which keys there are
