"""The engine remembers tokens that verified; every time-dependent rule still runs."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from chat_security import tokens, verified
from chat_security.exceptions import TokenError
from chat_security.models import Key, RevokedUser

pytestmark = pytest.mark.django_db


def code_of(token: str, **kwargs) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token, **kwargs)
    return info.value.code


@pytest.fixture
def token(clock):
    Key.objects.generate_secret()
    token = tokens.issue("cache-user", ttl=600)
    assert tokens.verify(token).user_id == "cache-user"
    assert token in verified.MEMORY
    return token


def test_hit_returns_copies_of_claims(token):
    first = tokens.verify(token)
    first.claims["sub"] = "someone-else"
    assert tokens.verify(token).claims["sub"] == "cache-user"


def test_remembered_token_still_expires(token, clock):
    clock.advance(600 + 31)
    assert code_of(token) == "expired"


def test_remembered_token_checks_the_session_subject(token):
    assert code_of(token, session_subject="another-user") == "subject_changed"


def test_revoking_the_key_refuses_a_remembered_token(token):
    kid = tokens.verify(token).kid
    Key.objects.revoke(kid)
    assert code_of(token) == "key_retired"


def test_grace_ending_refuses_a_remembered_token(token, clock):
    Key.objects.rotate_secret(grace=60)
    assert tokens.verify(token).key_state == "grace"
    clock.advance(61)
    assert code_of(token) == "key_retired"


def test_revoking_the_user_refuses_a_remembered_token(token, clock):
    clock.advance(5)
    RevokedUser.objects.revoke("cache-user")
    assert code_of(token) == "token_revoked"


def test_a_changed_byte_is_not_a_hit(token):
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert code_of(tampered) in {"invalid_signature", "malformed"}


def test_the_memory_is_bounded_in_bytes(clock, monkeypatch):
    Key.objects.generate_secret()
    issued = [tokens.issue(f"user-{i}") for i in range(6)]
    tokens.verify(issued[0])
    entry = verified.MEMORY.bytes
    budget = 3 * entry + entry // 2
    monkeypatch.setattr(verified, "VERIFIED_MEMORY_BYTES", budget)
    for t in issued:
        tokens.verify(t)
        assert verified.MEMORY.bytes <= budget
    assert len(verified.MEMORY) == 3
    assert list(verified.MEMORY) == issued[-3:]


def test_the_memory_evicts_least_recently_used(clock, monkeypatch):
    """A token its widget keeps sending stays while many tokens seen once pass through.

    First-in-first-out dropped it every ``capacity`` new tokens, however hot it was.
    """
    Key.objects.generate_secret()
    hot = tokens.issue("hot-user")
    tokens.verify(hot)
    monkeypatch.setattr(verified, "VERIFIED_MEMORY_BYTES", 20 * verified.MEMORY.bytes)
    for i in range(300):
        tokens.verify(tokens.issue(f"cold-{i}"))
        assert hot in verified.MEMORY
        assert tokens.verify(hot).user_id == "hot-user"
    assert len(verified.MEMORY) <= 20


def test_the_estimate_errs_high_for_typical_tokens(clock):
    """What the memory counts is at least what it holds (tracemalloc), and not far above."""
    Key.objects.generate_secret()
    claims = {"email": "someone@example.com", "name": "Some One", "userData": {"plan": "pro"}}
    tokens.verify(tokens.issue("warm-up", claims))
    tokens.forget_verified()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(400):
            tokens.verify(tokens.issue(f"user-{i}", claims), count_use=False)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(verified.MEMORY) == 400
    assert held <= verified.MEMORY.bytes <= 1.3 * held


@pytest.fixture
def megabyte_tokens(settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "MAX_TOKEN_BYTES": 1024 * 1024}


def test_the_byte_budget_holds_with_megabyte_tokens(clock, monkeypatch, megabyte_tokens):
    Key.objects.generate_secret()
    tokens.verify(tokens.issue("warm-up"))
    budget = 8 * 1024 * 1024
    monkeypatch.setattr(verified, "VERIFIED_MEMORY_BYTES", budget)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(16):
            # ~1 MiB each: MAX_TOKEN_BYTES at the ceiling E002 allows.
            token = tokens.issue(f"big-{i}", {"blob": f"{i}-" + "x" * 760_000})
            assert 1_000_000 < len(token) <= 1024 * 1024
            assert tokens.verify(token, count_use=False).user_id == f"big-{i}"
            assert token in verified.MEMORY  # big tokens are remembered too
            assert verified.MEMORY.bytes <= budget
        del token
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 2 <= len(verified.MEMORY) < 16
    assert held <= budget


def test_a_token_larger_than_the_budget_verifies_and_is_not_kept(
    clock, monkeypatch, megabyte_tokens
):
    Key.objects.generate_secret()
    small = tokens.issue("small")
    tokens.verify(small)
    monkeypatch.setattr(verified, "VERIFIED_MEMORY_BYTES", 512 * 1024)
    big = tokens.issue("big", {"blob": "x" * 700_000})
    assert tokens.verify(big).user_id == "big"
    assert big not in verified.MEMORY
    assert small in verified.MEMORY  # the big one pushed nothing out


def test_a_pathological_token_is_charged_what_it_holds(clock, monkeypatch, megabyte_tokens):
    # 200,000 empty objects: 0.8 MB of token, ~15 MB of Python objects.
    Key.objects.generate_secret()
    token = tokens.issue("lists", {"l": [{}] * 200_000})
    tokens.verify(token)
    assert verified.MEMORY.bytes > 15 * len(token)


def _cold(token: str, **kwargs):
    """The outcome with nothing remembered; the memory is put back as it was, in order."""
    remembered = dict(verified.MEMORY)
    verified.MEMORY.clear()
    try:
        return outcome(token, **kwargs)
    finally:
        verified.MEMORY.clear()
        verified.MEMORY.update(remembered)


def outcome(token: str, **kwargs):
    try:
        result = tokens.verify(token, **kwargs)
    except TokenError as exc:
        return exc.code
    return ("ok", result.user_id, result.kid, str(result.key_state), result.claims)


@pytest.mark.parametrize("seed", range(6))
def test_eviction_never_changes_a_verdict(clock, monkeypatch, seed):
    """A memory of ~3 entries under a random mix of tokens, clock, revocations and rotations."""
    rng = random.Random(seed)
    Key.objects.generate_secret()
    users = [f"user-{i}" for i in range(5)]
    tokens.verify(tokens.issue("size-probe"))
    monkeypatch.setattr(verified, "VERIFIED_MEMORY_BYTES", int(3.5 * verified.MEMORY.bytes))
    evicted = hits = 0
    put = verified.MEMORY.put

    def counting_put(key, value, size):
        nonlocal evicted
        before = len(verified.MEMORY) + (key not in verified.MEMORY)
        kept = put(key, value, size)
        evicted += before - len(verified.MEMORY)
        return kept

    monkeypatch.setattr(verified.MEMORY, "put", counting_put)
    ttls = [120, 3600]
    pool = [(u, tokens.issue(u, ttl=rng.choice(ttls))) for u in users for _ in range(2)]
    for _ in range(300):
        roll = rng.random()
        if roll < 0.08:
            clock.advance(rng.choice([1, 20, 90]))
        elif roll < 0.09:
            RevokedUser.objects.revoke(rng.choice(users))
        elif roll < 0.10:
            Key.objects.rotate_secret(grace=rng.choice([0, 30]))
        elif roll < 0.2:
            user = rng.choice(users)
            pool.append((user, tokens.issue(user, ttl=rng.choice(ttls))))
        user, token = rng.choice(pool)
        subject = rng.choice([None, None, user, "someone-else"])
        hits += token in verified.MEMORY
        assert outcome(token, session_subject=subject) == _cold(token, session_subject=subject)
        assert verified.MEMORY.bytes <= verified.VERIFIED_MEMORY_BYTES
    assert evicted >= 20 and hits >= 20  # both paths really ran


# -- the hit path (issue 12): what a repeated token skips, and what it still checks ------


def test_a_repeated_token_skips_parsing_and_the_signature(token, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a remembered token was parsed or its signature checked again")

    monkeypatch.setattr(tokens, "parse", never)
    monkeypatch.setattr(tokens, "match_signature", never)
    monkeypatch.setattr(tokens, "_verify_full", never)
    for _ in range(3):
        assert tokens.verify(token).user_id == "cache-user"


@pytest.mark.parametrize("leeway", [0, 30])
def test_a_hit_expires_at_exactly_the_same_moment_as_a_full_check(clock, settings, leeway):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "LEEWAY": leeway}
    Key.objects.generate_secret()
    token = tokens.issue("edge", ttl=600)
    exp = clock.t // 1 + 600
    tokens.verify(token)
    clock.t = exp + leeway  # the last moment it is valid
    assert tokens.verify(token).user_id == "edge"
    clock.t = exp + leeway + 1e-6
    assert code_of(token) == "expired"
    tokens.forget_verified()
    assert code_of(token) == "expired"  # the full check agrees


def test_a_hit_honours_nbf_and_the_lifetime_cap_as_the_full_check_does(clock, settings):
    import jwt

    secret = Key.objects.generate_secret()[1]
    now = int(clock())
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "LEEWAY": 0, "MAX_TOKEN_LIFETIME": 3600}
    token = jwt.encode({"sub": "n", "nbf": now, "exp": now + 3600}, secret, algorithm="HS256")
    assert tokens.verify(token).user_id == "n"
    clock.t = now - 0.5  # before nbf (and exp - now now exceeds the cap)
    assert code_of(token) in {"not_yet_valid", "lifetime_too_long"}
    tokens.forget_verified()
    assert code_of(token) in {"not_yet_valid", "lifetime_too_long"}


def test_results_copy_only_what_is_read(token):
    first = tokens.verify(token)
    assert first._copies is None  # nothing copied yet
    claims = first.claims
    assert claims is first.claims  # one copy per result, made once
    claims["sub"] = "changed"
    assert tokens.verify(token).claims["sub"] == "cache-user"
    with pytest.raises(AttributeError):
        first.claims = {}  # read-only, as the frozen dataclass was


def test_results_pickle_and_copy_as_plain_values(token):
    import copy
    import pickle

    result = tokens.verify(token)
    for other in (pickle.loads(pickle.dumps(result)), copy.deepcopy(result), copy.copy(result)):
        assert other == result and other is not result
        other.claims["sub"] = "changed"
        assert result.claims["sub"] == "cache-user"
