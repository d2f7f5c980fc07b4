"""A stateful model test of fetched key sets (SPEC §14): random sequences of what an
identity provider and time do, against the promises, not against the sequences we
thought of.

The provider (a real local JWKS server) publishes and drops kids, goes down and
comes back; time moves on one controlled clock from a second to more than a day;
tokens naming any kid arrive; an admin runs ``refresh-keys``. After every step:

* **never accepted wrongly** — an accepted kid is in the stored last good set, and
  that set is younger than ``JWKS_MAX_STALE``;
* **503 only when stale** — ``unavailable`` only when the stored set is older than
  ``JWKS_MAX_STALE`` (or nothing could be fetched since);
* **a dropped key is refused** once the provider has been up for a cooldown and a
  refresh interval plus a cooldown has passed since it dropped the key;
* **a new key is accepted from its first token** when the provider has been up for
  a cooldown and no fetch was begun within it;
* **one fetch per cooldown** — fetches the engine begins are at least
  ``JWKS_COOLDOWN_SECONDS`` apart (``refresh-keys`` is the admin's, and exempt).

One process here; several processes sharing one fetch are in
tests/test_remote_workers.py.
"""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from joserfc.jwk import RSAKey

from chat_security import keyring, tokens
from chat_security.exceptions import KeySetStale, TokenError
from chat_security.models import Integration, KeySource
from chat_security.remote import sources
from tests.jwks_server import jwks_server

__all__ = ["jwks_server"]

COOLDOWN, REFRESH, STALE = 30.0, 600.0, 86400.0
KIDS = ("k0", "k1", "k2", "k3")
PRIVATE = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in KIDS}
JWK = {
    kid: {**RSAKey.import_key(k.public_key()).as_dict(), "kid": kid} for kid, k in PRIVATE.items()
}
#: Steps of time: within a cooldown, around the refresh interval, past the stale limit.
STEPS = st.sampled_from([1.0, 10.0, 29.0, 31.0, 200.0, 601.0, 3600.0, 40000.0, 86401.0])


class World:
    """What the machine needs from the test: the server and the clock."""

    server = None
    clock = None


class RemoteSets(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        KeySource.objects.all().delete()
        Integration.objects.filter(name="idp").delete()
        keyring.reset()
        sources.reset()
        self.server, self.clock = World.server, World.clock
        self.published: set[str] = {"k0"}
        self.up = True
        self.up_since = self.clock.t
        self.dropped_at: dict[str, float] = {}
        self.auto_fetches: list[float] = []
        self.publish()
        Integration.objects.add("idp", actor="model")
        sources.add_jwks_url(self.server.url(), "idp", actor="model")
        self.tally = {"accepted": 0, "refused": 0, "unavailable": 0, "fetched": 0}

    # -- the provider and time ---------------------------------------------------------

    def publish(self) -> None:
        if self.up:
            self.server.set_jwks({"keys": [JWK[k] for k in sorted(self.published)]})
        else:
            self.server.set_route("/jwks", status=503, body="down")

    @rule(kid=st.sampled_from(KIDS))
    def provider_adds(self, kid: str) -> None:
        self.published.add(kid)
        self.dropped_at.pop(kid, None)
        self.publish()

    @rule(kid=st.sampled_from(KIDS))
    def provider_drops(self, kid: str) -> None:
        if kid in self.published and len(self.published) > 1:
            self.published.discard(kid)
            self.dropped_at[kid] = self.clock.t
            self.publish()

    @rule(up=st.booleans())
    def provider_up_or_down(self, up: bool) -> None:
        if up and not self.up:
            self.up_since = self.clock.t
        self.up = up
        self.publish()

    @rule(seconds=STEPS)
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(kid=st.sampled_from(KIDS))
    def provider_down_for_a_day(self, kid: str) -> None:
        """The outage the stale limit is for, as one step (random steps reach it rarely):
        the provider goes down, a day and a second pass, a token comes."""
        self.provider_up_or_down(False)
        self.time_passes(STALE + 1)
        self.token_arrives(kid)

    @rule()
    def admin_refreshes(self) -> None:
        sources.refresh("idp")

    # -- tokens ------------------------------------------------------------------------

    def stored(self) -> tuple[set[str], float | None, float | None]:
        row = KeySource.objects.get(integration__name="idp")
        return (
            {k["kid"] for k in row.keys},
            row.fetched_at.timestamp() if row.fetched_at else None,
            row.attempted_at.timestamp() if row.attempted_at else None,
        )

    @rule(kid=st.sampled_from(KIDS))
    def token_arrives(self, kid: str) -> None:
        now = self.clock.t
        _, _, attempted_before = self.stored()
        before = self.server.count()
        token = jwt.encode(
            {"sub": "u", "iat": int(now), "exp": int(now) + 300},
            PRIVATE[kid],
            algorithm="RS256",
            headers={"kid": kid},
        )
        verdict = "accepted"
        try:
            tokens.verify(token, integration="idp", count_use=False)
        except KeySetStale:
            verdict = "unavailable"
        except TokenError as exc:
            verdict = exc.code
        fetched = self.server.count() - before
        assert fetched <= 1, "one verification began more than one fetch"
        if fetched:
            self.auto_fetches.append(now)
            self.tally["fetched"] += 1
        stored, fetched_at, _ = self.stored()
        up_for_a_cooldown = self.up and now - self.up_since >= COOLDOWN
        quiet = attempted_before is None or now - attempted_before >= COOLDOWN

        if verdict == "accepted":
            self.tally["accepted"] += 1
            assert kid in stored, (kid, stored)
            assert fetched_at is not None and now < fetched_at + STALE
        elif verdict == "unavailable":
            self.tally["unavailable"] += 1
            assert fetched_at is None or now >= fetched_at + STALE, "503 with a fresh set"
        else:
            self.tally["refused"] += 1
            assert verdict == "unknown_key", verdict
        if up_for_a_cooldown and kid in self.published and quiet:
            assert verdict == "accepted", ("a published kid refused", verdict)
        dropped = self.dropped_at.get(kid)
        if (
            dropped is not None
            and kid not in self.published
            and up_for_a_cooldown
            and now - dropped >= REFRESH + COOLDOWN
        ):
            assert verdict != "accepted", "a key the provider dropped is still accepted"

    def teardown(self) -> None:
        for earlier, later in zip(self.auto_fetches, self.auto_fetches[1:], strict=False):
            assert later - earlier >= COOLDOWN, "two fetches within one cooldown"


@pytest.mark.django_db
def test_fetched_key_sets_keep_their_promises(jwks_server, clock, settings):
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY,
        "JWKS_PRIVATE_HOSTS": ["127.0.0.1"],
        "JWKS_COOLDOWN_SECONDS": COOLDOWN,
        "JWKS_REFRESH_SECONDS": REFRESH,
        "JWKS_MAX_STALE": STALE,
    }
    World.server, World.clock = jwks_server, clock
    tallies: list[dict[str, int]] = []
    original = RemoteSets.teardown

    def keep_tally(self: RemoteSets) -> None:
        tallies.append(self.tally)
        original(self)

    RemoteSets.teardown = keep_tally  # type: ignore[method-assign]
    try:
        run_state_machine_as_test(
            RemoteSets,
            settings=settings_for_ci(),
        )
    finally:
        RemoteSets.teardown = original  # type: ignore[method-assign]
    total = {k: sum(t[k] for t in tallies) for k in ("accepted", "refused", "unavailable")}
    # The run saw every verdict, so it cannot pass by never reaching one.
    print("fetched key sets, verdicts over the run:", total, "examples:", len(tallies))
    assert all(total.values()), total
    assert sum(t["fetched"] for t in tallies) > 0


def settings_for_ci() -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=100,
        stateful_step_count=50,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
