"""User revocation (SPEC §3 step 8) as decided in issue 16, item 1.

A revocation at T refuses every token of that user whose ``iat`` is before T,
and every token without ``iat`` whose ``exp`` is after T or that has no
``exp``, for as long as such a token could be accepted: that is, always. The
first two tests are the review's reproductions; each failed on the code that
pruned revocations older than ``MAX_TOKEN_LIFETIME`` + ``LEEWAY``.
"""

from __future__ import annotations

import pytest

from chat_security import keyring, tokens
from chat_security.exceptions import TokenError
from chat_security.models import RevokedUser
from tests import chat_helpers
from tests.chat_helpers import sign

pytestmark = pytest.mark.django_db
secret = chat_helpers.secret

DAY = 86400.0


def code_of(token: str) -> str | None:
    try:
        tokens.verify(token)
    except TokenError as exc:
        return exc.code
    return None


def fresh() -> None:
    """What any worker does at its next check after a day: read the store again."""
    keyring.reset()


def test_a_token_without_iat_stays_refused_when_its_exp_comes_within_a_day(secret, clock):
    key, value = secret
    token = sign(value, {"sub": "alice", "exp": clock() + 7 * DAY})
    assert code_of(token) == "lifetime_too_long"
    RevokedUser.objects.revoke("alice")
    clock.advance(6.5 * DAY)  # exp is now 12 h away: the lifetime no longer refuses it
    fresh()
    assert code_of(token) == "token_revoked"


def test_without_require_exp_a_token_without_exp_stays_refused(secret, clock, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "REQUIRE_EXP": False}
    key, value = secret
    older = sign(value, {"sub": "alice", "iat": clock() - 60})
    bare = sign(value, {"sub": "alice"})
    RevokedUser.objects.revoke("alice")
    for days in (0, 2, 400):
        clock.advance(days * DAY)
        fresh()
        assert code_of(older) == "token_revoked", days
        assert code_of(bare) == "token_revoked", days


def test_tokens_issued_after_the_revocation_are_accepted(secret, clock, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "REQUIRE_EXP": False}
    key, value = secret
    RevokedUser.objects.revoke("alice")
    clock.advance(1)
    assert code_of(sign(value, {"sub": "alice", "iat": clock(), "exp": clock() + 60})) is None
    assert code_of(sign(value, {"sub": "alice", "iat": clock()})) is None


def test_a_token_without_iat_that_expired_before_the_revocation_is_not_its_business(secret, clock):
    """Only tokens without iat whose exp is after T are refused (refused later as expired)."""
    key, value = secret
    token = sign(value, {"sub": "alice", "exp": clock() - 5})  # within LEEWAY: still valid
    RevokedUser.objects.revoke("alice")
    assert code_of(token) is None
    later = sign(value, {"sub": "alice", "exp": clock() + 5})
    assert code_of(later) == "token_revoked"


def test_a_second_revocation_keeps_refusing_what_the_first_refused(secret, clock):
    """Revoking again must not let back a token without iat the first revocation refused."""
    key, value = secret
    RevokedUser.objects.revoke("alice")
    first = clock()
    token = sign(value, {"sub": "alice", "exp": first + 20})
    clock.advance(40)  # token expired 20 s ago: within LEEWAY (30 s), otherwise valid
    RevokedUser.objects.revoke("alice")
    assert RevokedUser.objects.get(user_id="alice").first_revoked_at.timestamp() == first
    fresh()
    assert code_of(token) == "token_revoked"
    # and the latest revocation governs tokens with iat
    iat_between = sign(value, {"sub": "alice", "iat": first + 10, "exp": clock() + 60})
    assert code_of(iat_between) == "token_revoked"


def test_other_users_are_not_touched(secret, clock):
    key, value = secret
    RevokedUser.objects.revoke("alice")
    clock.advance(3 * DAY)
    fresh()
    assert code_of(sign(value, {"sub": "bob", "exp": clock() + 60})) is None
