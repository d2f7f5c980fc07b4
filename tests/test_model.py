"""A stateful model test of the promise "a revoked user or key is refused everywhere".

The suite's other tests follow sequences their authors thought of; this one
lets hypothesis choose them (issue 16). A plain reference model of SPEC §2,
§3, §12 and §13 (:class:`Model`: keys with their lifecycle and integration,
user revocations per user space, the order of the verification steps) runs
beside the real engine, and random sequences of operations are applied to both:

* three integrations (SPEC §13): ``default``; ``ios``, in default's user
  space (web and the app are the same people); ``brand-b``, with users of
  its own and an issuer its tokens carry;
* key changes (generate, rotate with a grace of 0 s, 1 min or 1 h, add a
  client public key, revoke a key), each for one of the integrations, and
  user revocations (``revoke-user --integration``), each made in one of two
  processes;
* tokens minted as a real client of one integration mints them (PyJWT), of
  every shape the revocation rules tell apart: HS256 or RS256, with or
  without ``kid``, ``iat`` and ``exp``, an ``exp`` beyond the lifetime cap;
* time passing, from a quarter of a second to a day and a half;
* the database going down and coming back; the shared cache going down (its
  data kept, as a Redis restarted with persistence or a network partition)
  and losing its data;
* verification in either process, where the token's integration serves and
  where another one does; open WebSocket connections (each of its
  integration's middleware) re-checked by the watcher of their process;
* each integration's switch turned off and on, scheduled to turn on in half
  a second, 2 s or 40 s (``security on --at``, SPEC §15) and that schedule
  cancelled, with visitors without a token arriving in either process.

**Two processes** are simulated in one: each has its own key snapshot and
back-off (``keyring._State``), cache-failure memory (``propagation._State``),
verified-token memory (``verified.MEMORY``) and, in the per-server topology,
its own cache; an operation swaps the acting process's state in. The real
two-process tests are in tests/test_workers.py and tests/test_faults.py;
this one explores sequences. **Time** is one controlled clock for the wall
(``clock.now``) and monotonic (``keyring.time``, ``propagation.time``) time.

**What must hold** after every step, in the model's words:

* a verification in process P at time t gives the model's verdict (the
  exact §4 code, or acceptance) for *some* state of the key store current
  within ``KEY_CACHE_SECONDS`` before t: never a verdict no recent state gives
  — in particular, a token the model has refused for longer than that is
  refused, whatever happened to the shared cache meanwhile; a token of one
  integration is never accepted where another one judges it; and a user
  revoked in one user space is refused there and only there (alice of
  brand-b is not alice of default, whom ios shares);
* a visitor without a token is let in, refused with ``missing_token``, or
  told ``security_not_configured`` as some state current within
  ``KEY_CACHE_SECONDS`` says at t: a scheduled switch-on counts from its time
  in every process, with no write at that time;
* it may say ``unavailable`` only while the database is down or within the
  retry back-off after it came back;
* after a watcher tick in P, every open socket whose token a recent state
  refuses as revoked (user or key) is closed, with ``token_revoked`` or
  ``key_retired`` (SPEC §10), and no socket is closed that every recent
  state accepts.

Topologies (one test each): ``poll`` (no shared cache: every process asks the
database), ``shared`` (one cache every server shares, ``KEY_CACHE_ALIAS``) and
``per-server`` (a file cache of each process's own at the alias: never to be
trusted, SPEC §12).

Profiles: ``ci`` (the default: bounded and derandomized, so a CI failure
reproduces) and ``long`` (``HYPOTHESIS_PROFILE=long``, or
``bash scripts/model_long.sh``: thousands of fresh sequences per topology).
"""

from __future__ import annotations

import os
import tempfile
import time as real_time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.db import OperationalError
from django.db.backends import utils
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chat_security import clock, keyring, propagation, tokens, verified
from chat_security.exceptions import ERROR_CODES, KeyStateError, KeyStoreUnavailable, TokenError
from chat_security.lru import ByteBoundedLRU
from chat_security.models import AuditEntry, Integration, Key, RevokedUser, SecurityConfig
from chat_security.websocket import watcher as watcher_module

from .shared_cache import SharedInTests
from .tokencraft import chat_settings, public_pem, rsa_key

pytestmark = pytest.mark.django_db(transaction=True)

# -- profiles -----------------------------------------------------------------------------

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "model-ci",
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_HEALTH,
    print_blob=True,
)
settings.register_profile(
    "model-long",
    max_examples=2_000,
    stateful_step_count=80,
    deadline=None,
    database=DirectoryBasedExampleDatabase(Path(tempfile.gettempdir()) / "chat-security-model"),
    suppress_health_check=_HEALTH,
    print_blob=True,
)
PROFILE = settings.get_profile(
    "model-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "model-ci"
)

# -- the reference model ------------------------------------------------------------------

KEY_CACHE_SECONDS = 1.0
LEEWAY = 30
LIFETIME = 24 * 3600
MAX_RETRY_SECONDS = 2.0  # keyring.MAX_RETRY_SECONDS: "unavailable" may outlast an outage by this
START = 1_900_000_000.125  # never a whole second: iat (whole seconds) never ties a revocation
#: Every step of time is a multiple of 1/4 s, so no instant is a whole second either.
STEPS = (0.25, 0.75, 1.25, 4.75, 40.25, 3600.25, 129_600.25)
USERS = ("alice", "bob")
#: The integrations and their user spaces (SPEC §13); the issuer each one's tokens carry.
INTEGRATIONS = ("default", "ios", "brand-b")
SPACE = {"default": "default", "ios": "default", "brand-b": "brand-b"}
ISSUER = {"ios": "https://ios.example", "brand-b": "https://b.example"}
#: Where a change is made: brand-b as often as the two of default's space together.
WHERE = ("default", "ios", "brand-b", "brand-b")
#: The other integration of one's user space, and an integration of another space.
PARTNER = {"default": "ios", "ios": "default", "brand-b": "brand-b"}
STRANGER = {"default": "brand-b", "ios": "brand-b", "brand-b": "default"}
#: Weighted by repetition: most changes are the everyday ones.
CHANGES = (
    "generate-secret", "rotate-secret 0", "rotate-secret 60", "rotate-secret 3600",
    "add-public-key", "add-public-key", "revoke", "revoke-user", "revoke-user",
)  # fmt: skip
#: The switch (SPEC §5, §15): on, off, on at a time to come (seconds from now), cancel that.
SWITCHING = ("off", "off", "on", "on-at 0.5", "on-at 2", "on-at 40", "cancel")
OUTAGES = ("database 0.5", "database 3", "database 40", "cache-down", "cache-up", "cache-flush")
SECRET, PUBLIC_KEY = "secret", "public_key"
ALG = {SECRET: "HS256", PUBLIC_KEY: "RS256"}
TIME_CODES = {"expired", "lifetime_too_long"}
HELD = 8  # tokens judged at each check: the last ones minted


@dataclass(frozen=True)
class ModelKey:
    kid: str
    kind: str
    integration: str = "default"  # the integration that owns it (SPEC §13)
    grace_until: float | None = None  # set by a rotation
    retired_at: float | None = None  # rotation with no grace
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        if self.revoked_at is not None:
            return False
        if self.retired_at is not None and self.retired_at <= now:
            return False
        return self.grace_until is None or now < self.grace_until


@dataclass(frozen=True)
class State:
    """The key store as SPEC §2 and §3 describe it; immutable, so history is a list."""

    keys: tuple[ModelKey, ...] = ()
    latest: tuple[tuple[tuple[str, str], float], ...] = ()  # (space, user) -> latest revocation
    first: tuple[tuple[tuple[str, str], float], ...] = ()  # (space, user) -> first revocation
    #: integration -> (switch set on, scheduled switch-on time or None); absent: on (§5, §15)
    switches: tuple[tuple[str, tuple[bool, float | None]], ...] = ()

    def key(self, kid: str) -> ModelKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def switch(self, integration: str) -> tuple[bool, float | None]:
        return dict(self.switches).get(integration, (True, None))

    def with_switch(self, integration: str, on: bool, at: float | None) -> State:
        return replace(self, switches=tuple({**dict(self.switches), integration: (on, at)}.items()))

    def with_key(self, new: ModelKey) -> State:
        rest = tuple(k for k in self.keys if k.kid != new.kid)
        return replace(self, keys=(*rest, new))

    def revoke_user(self, space: str, user: str, at: float) -> State:
        latest = {**dict(self.latest), (space, user): at}
        first = {(space, user): at, **dict(self.first)}
        return replace(self, latest=tuple(latest.items()), first=tuple(first.items()))


@dataclass(frozen=True)
class Minted:
    """A token and what the model needs to judge it (what a client put in it)."""

    token: str
    kid: str  # the key that signed it
    kind: str
    with_kid: bool
    sub: str
    iat: int | None
    exp: int | None
    integration: str = "default"  # whose key signed it (and whose iss it carries)


def verdict(
    state: State, token: Minted, now: float, *, at: str | None = None, times: bool = True
) -> str:
    """SPEC §3 steps 4–8 for a well-formed token judged by integration ``at`` (default:
    its own): a §4 code, or "ok".

    ``times=False`` leaves out step 6 (an open socket's deadlines are its own
    timers', not the watcher's re-check). Only ``at``'s keys are candidates, a
    kid of another integration's key is ``unknown_key`` (§13), and step 8 asks
    the revocations of ``at``'s user space. Step 7's ``iss`` is never what
    refuses: a token carries its own integration's, and another one's keys
    refuse it first.
    """
    at = token.integration if at is None else at
    signer = state.key(token.kid)  # None: a state from before the key was added
    usable = [
        k for k in state.keys if k.integration == at and k.kind == token.kind and k.usable(now)
    ]
    if token.with_kid:  # step 4
        if signer is None:
            return "unknown_key" if usable else "security_not_configured"
        if signer.integration != at:
            return "unknown_key"
        if not signer.usable(now):
            return "key_retired"
    elif not usable:
        return "security_not_configured"
    elif signer not in usable:  # step 5: no candidate verifies the signature
        return "invalid_signature"
    if times:  # step 6 (REQUIRE_EXP is off here, so tokens without exp are judged too)
        if token.exp is not None and now > token.exp + LEEWAY:
            return "expired"
        if token.exp is not None and (
            (token.iat is not None and token.exp - token.iat > LIFETIME)
            or token.exp - now > LIFETIME + LEEWAY
        ):
            return "lifetime_too_long"
    user = (SPACE[at], token.sub)  # step 8, in the judge's user space
    latest = dict(state.latest).get(user)
    if latest is not None:
        if token.iat is not None:
            if token.iat < latest:
                return "token_revoked"
        elif token.exp is None or token.exp > dict(state.first)[user]:
            return "token_revoked"
    return "ok"


def visitor_verdict(state: State, integration: str, now: float) -> str:
    """SPEC §5 and §15 for a request without a token where ``integration`` serves: let in
    ("anonymous") while its switch is off and no scheduled switch-on has come, else
    refused ("missing_token"), or ``security_not_configured`` when it has no usable key."""
    on, at = state.switch(integration)
    if not on and (at is None or now < at):
        return "anonymous"
    usable = [k for k in state.keys if k.integration == integration and k.usable(now)]
    return "missing_token" if usable else "security_not_configured"


def socket_verdict(state: State, token: Minted, now: float) -> str:
    """What the watcher's re-check must conclude (SPEC §10): revoked key or user, or ok.

    The socket is one of its token's integration's middleware: judged there.
    """
    signer = state.key(token.kid)
    if signer is None:
        return verdict(state, token, now, times=False)
    if not signer.usable(now):
        return "key_retired"  # also for a token without kid: its key is what went
    code = verdict(state, token, now, times=False)
    return code if code == "token_revoked" else "ok"


@dataclass
class Model:
    """The store's history (time, state), the outages, and what may be said when."""

    now: float = START
    history: list[tuple[float, State]] = field(default_factory=lambda: [(START, State())])
    database_down: bool = False
    database_back_at: float = -1e18

    @property
    def state(self) -> State:
        return self.history[-1][1]

    def change(self, state: State) -> None:
        self.history.append((self.now, state))

    def recent(self) -> list[State]:
        """Every state current at some instant of the last KEY_CACHE_SECONDS."""
        since = self.now - KEY_CACHE_SECONDS
        first = max([0] + [i for i, (at, _s) in enumerate(self.history) if at <= since])
        return [s for _at, s in self.history[first:]]

    def may_be_unavailable(self) -> bool:
        return self.database_down or self.now - self.database_back_at <= MAX_RETRY_SECONDS


# -- the simulated processes --------------------------------------------------------------


class FakeTime:
    """Stands for the ``time`` module in keyring and propagation: monotonic is the wall."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def monotonic(self) -> float:
        return self.model.now

    def time(self) -> float:
        return self.model.now

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


KEYRING_STATE = ("snapshot", "checked_at", "failures", "retry_at", "generation")


class Process:
    """One worker's process-local state, kept while another process acts."""

    def __init__(self, name: str, cache: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name, self.monkeypatch = name, monkeypatch
        self.cache = cache
        self.keyring = {a: getattr(keyring._State, a) for a in KEYRING_STATE}
        self.keyring.update(snapshot=None, checked_at=-1e18, failures=0, retry_at=0.0)
        self.cache_down_until = 0.0
        self.memory: ByteBoundedLRU = ByteBoundedLRU(
            verified.VERIFIED_MEMORY_BYTES, lambda _token, value: value.cost
        )
        self.sockets: list[FakeSocket] = []
        self.watcher = watcher_module.Watcher(None)  # type: ignore[arg-type]  # its loop: unused

    def enter(self) -> None:
        for name, value in self.keyring.items():
            setattr(keyring._State, name, value)
        propagation._State.cache_down_until = self.cache_down_until
        self.monkeypatch.setattr(verified, "MEMORY", self.memory)
        self.monkeypatch.setattr(tokens, "MEMORY", self.memory)
        if self.cache is not None:
            caches["default"] = self.cache

    def leave(self) -> None:
        self.keyring = {a: getattr(keyring._State, a) for a in KEYRING_STATE}
        self.cache_down_until = propagation._State.cache_down_until


class FakeSocket:
    """What the watcher reads and calls on a connection (as tests/test_websocket.py's)."""

    def __init__(self, minted: Minted, kid: str, snapshot: Any) -> None:
        self.minted, self.token, self.subject, self.closed = minted, minted.token, None, False
        self.identity = type("Identity", (), {"kid": kid})()
        self.checked_against = snapshot
        self.closed_with: str | None = None
        self.integrations = (minted.integration,)

    async def cut(self, error: TokenError) -> None:  # what the watcher calls
        await self.refuse(error)

    async def refuse(self, error: TokenError) -> None:
        self.closed, self.closed_with = True, error.code

    async def unavailable(self, log: bool = True) -> None:
        self.closed, self.closed_with = True, "unavailable"

    async def on_tick(self, now: float) -> None:
        pass


class Outage(SharedInTests):
    """The shared cache; ``Outage.down`` makes every call fail, its data kept."""

    down = False

    def _check(self) -> None:
        if Outage.down:
            raise ConnectionError("the shared cache is down")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().get(*args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> bool:
        self._check()
        return super().add(*args, **kwargs)

    def incr(self, *args: Any, **kwargs: Any) -> int:
        self._check()
        return super().incr(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().set(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        self._check()
        return super().delete(*args, **kwargs)


RSA_POOL = [rsa_key(slot) for slot in range(3)]


def database_is_down(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("the database is down")


# -- the machine ----------------------------------------------------------------------------


class RevocationMachine(RuleBasedStateMachine):
    topology = "poll"
    monkeypatch: pytest.MonkeyPatch
    cache_dir: Path
    tally: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.count("examples")
        for model in (AuditEntry, Key, RevokedUser, SecurityConfig):
            model.objects.all().delete()
        Integration.objects.exclude(name="default").delete()
        SecurityConfig.set_enabled(True, "model")
        Integration.objects.add("ios", issuer=ISSUER["ios"], actor="model")
        Integration.objects.add("brand-b", issuer=ISSUER["brand-b"], own_users=True, actor="model")
        self.model = Model()
        self.monkeypatch.setattr(clock, "now", lambda: self.model.now)
        fake = FakeTime(self.model)
        self.monkeypatch.setattr(keyring, "time", fake)
        self.monkeypatch.setattr(propagation, "time", fake)
        Outage.down = False
        shared = Outage("model", {}) if self.topology == "shared" else None
        self.processes = []
        for name in ("p1", "p2"):
            if self.topology == "per-server":
                cache: Any = FileBasedCache(str(self.cache_dir / name), {})
                cache.clear()
            else:
                cache = shared
            self.processes.append(Process(name, cache, self.monkeypatch))
        self.current = self.processes[0]
        self.current.enter()
        self.database_until = 0.0
        self.kid_of_pool: dict[int, str] = {}
        self.held: list[Minted] = []
        self.secrets: dict[str, str] = {}  # kid -> the secret, as the site backend keeps it
        self.revoked_through: dict[tuple[str, str], str] = {}  # (space, user) -> integration

    def teardown(self) -> None:
        self.current.leave()
        self.monkeypatch.undo()
        if self.topology != "poll":
            del caches["default"]  # the next use builds the settings' cache again
        Outage.down = False
        keyring.reset()

    # -- helpers --------------------------------------------------------------------------

    def act_in(self, index: int) -> Process:
        process = self.processes[index]
        if process is not self.current:
            self.current.leave()
            process.enter()
            self.current = process
        return process

    def change(self, state: State) -> None:
        self.model.change(state)

    def count(self, what: str) -> None:
        self.tally[what] = self.tally.get(what, 0) + 1

    # -- key-store changes (the database must be up: a write while it is down fails) ------

    @precondition(lambda self: not self.model.database_down)
    @rule(
        proc=st.integers(0, 1),
        change=st.sampled_from(CHANGES),
        pick=st.integers(0, 20),
        where=st.sampled_from(WHERE),
    )
    def key_store_changes(self, proc: int, change: str, pick: int, where: str = "default") -> None:
        """An admin (panel or CLI) changes the key store of integration ``where`` (a key's
        revocation: whichever it names) from process ``proc``."""
        self.act_in(proc)
        if change == "generate-secret":
            self._rotate(None, where)
        elif change.startswith("rotate-secret"):
            self._rotate(float(change.split()[1]), where)
        elif change == "add-public-key":
            self._add_public_key(pick % len(RSA_POOL), where)
        elif change == "revoke":
            self._revoke_key(pick)
        else:
            self._revoke_user(USERS[pick % len(USERS)], where)
        self.count(change.split()[0])

    @precondition(
        lambda self: not self.model.database_down and any(p.sockets for p in self.processes)
    )
    @rule(
        proc=st.integers(0, 1),
        pick=st.integers(0, 20),
        through=st.sampled_from(("its own", "its space", "another space")),
    )
    def revoke_a_chatting_user(self, proc: int, pick: int, through: str) -> None:
        """From process ``proc``, an admin revokes the user of an open socket: through
        the socket's integration, the other one of its user space (ios for default's and
        the reverse; brand-b has none), or an integration of another space (which must
        leave the socket open). Once the interval has passed, every watcher ticks: SPEC
        §10's bound, checked on the sockets the revocation is about."""
        sockets = [s for p in self.processes for s in p.sockets if not s.closed]
        if not sockets:
            return
        minted = sockets[pick % len(sockets)].minted
        own = minted.integration
        where = {"its own": own, "its space": PARTNER[own], "another space": STRANGER[own]}
        self.act_in(proc)
        self._revoke_user(minted.sub, where[through])
        self.count("revoke-user")
        self.time_passes(1.25, None)
        self.watchers_tick(proc)

    def _revoke_user(self, user: str, where: str) -> None:
        RevokedUser.objects.revoke(user, "model", integration=where)
        self.change(self.model.state.revoke_user(SPACE[where], user, self.model.now))
        self.revoked_through[SPACE[where], user] = where

    def _rotate(self, grace: float | None, where: str) -> None:
        now, state = self.model.now, self.model.state
        active = [
            k
            for k in state.keys
            if k.integration == where
            and k.kind == SECRET
            and k.usable(now)
            and k.grace_until is None
        ]
        if grace is None and active:
            return  # generate-secret refuses while a secret is active (tested elsewhere)
        if grace is None:
            key, secret = Key.objects.generate_secret("model", integration=where)
        else:
            key, secret = Key.objects.rotate_secret(grace, "model", integration=where)
        for old in active:
            if grace == 0:
                state = state.with_key(replace(old, retired_at=now, grace_until=now))
            else:
                state = state.with_key(replace(old, grace_until=now + (grace or 0)))
        self.secrets[key.kid] = secret
        self.change(state.with_key(ModelKey(key.kid, SECRET, where)))

    def _add_public_key(self, slot: int, where: str) -> None:
        if slot in self.kid_of_pool:
            return  # a public key belongs to one integration (refused elsewhere: tested there)
        key = Key.objects.add_public_key(public_pem(RSA_POOL[slot]), "model", integration=where)
        self.kid_of_pool[slot] = key.kid
        self.change(self.model.state.with_key(ModelKey(key.kid, PUBLIC_KEY, where)))

    def _revoke_key(self, pick: int) -> None:
        keys = [k for k in self.model.state.keys if k.revoked_at is None]
        if not keys:
            return
        target = keys[pick % len(keys)]
        Key.objects.revoke(target.kid, "model")
        self.change(self.model.state.with_key(replace(target, revoked_at=self.model.now)))

    # -- the switch and visitors without a token (SPEC §5, §13, §15) ---------------------

    @precondition(lambda self: not self.model.database_down)
    @rule(proc=st.integers(0, 1), action=st.sampled_from(SWITCHING), where=st.sampled_from(WHERE))
    def switch_changes(self, proc: int, action: str, where: str) -> None:
        """An admin turns ``where``'s security off or on, schedules it on in a while
        (``security on --at``), or cancels that schedule, from process ``proc``."""
        self.act_in(proc)
        now, state = self.model.now, self.model.state
        on, at = state.switch(where)
        due = on or (at is not None and now >= at)
        if action in ("on", "off"):
            SecurityConfig.set_enabled(action == "on", "model", integration=where)
            self.change(state.with_switch(where, action == "on", None))
        elif action.startswith("on-at"):
            when = now + float(action.split()[1])
            try:
                SecurityConfig.schedule_on(datetime.fromtimestamp(when, tz=UTC), "model", where)
            except KeyStateError:
                assert due, f"schedule refused while {where}'s switch is off and not due"
                self.count("schedule refused: already on")
                return
            assert not due, f"a schedule was taken while {where}'s switch is on"
            self.change(state.with_switch(where, False, when))
        else:
            try:
                SecurityConfig.cancel_schedule("model", where)
            except KeyStateError:
                assert at is None or due, "cancel refused while a schedule is to come"
                return
            assert at is not None and not due, "cancel taken with no schedule to come"
            self.change(state.with_switch(where, False, None))
        self.count(f"switch {action.split()[0]}")

    @rule(proc=st.integers(0, 1))
    def visitors_arrive(self, proc: int) -> None:
        """Process ``proc`` asks, for a request without a token on each integration's
        path, whether it is let in; a scheduled switch-on counts from its time in
        every process, with no write at that time (SPEC §15)."""
        self.act_in(proc)
        now = self.model.now
        for name in INTEGRATIONS:
            try:
                said = (
                    "missing_token"
                    if tokens.token_required(keyring.get_snapshot(), (name,), now)
                    else "anonymous"
                )
            except TokenError as exc:
                said = exc.code
            except KeyStoreUnavailable:
                said = "unavailable"
            allowed = {visitor_verdict(s, name, now) for s in self.model.recent()}
            if self.model.may_be_unavailable():
                allowed.add("unavailable")
            assert said in allowed, (
                f"{self.current.name} said {said!r} to a visitor of {name} at "
                f"+{now - START:g} s; the model allows {sorted(allowed)}"
            )
            self.count(f"visitor:{said}")
            on, at = self.model.state.switch(name)
            if not on and at is not None:
                self.count(f"visitor:{said} {'after' if now >= at else 'before'} the schedule")

    # -- time and outages ---------------------------------------------------------------

    @rule(seconds=st.sampled_from(STEPS), then=st.sampled_from([None, 0, 1]))
    def time_passes(self, seconds: float, then: int | None) -> None:
        """Time passes; then requests may arrive at one process, whose watcher ticks
        too (or none: it stays idle)."""
        self.model.now += seconds
        if self.model.database_down and self.model.now >= self.database_until:
            self.monkeypatch.setattr(utils.CursorWrapper, "execute", REAL_EXECUTE)
            self.model.database_down = False
            self.model.database_back_at = self.database_until
        if then is not None and self.held:
            self.requests_arrive(then)
        if then is not None and self.processes[then].sockets:
            self.watcher_ticks(then)
        if then is not None:
            self.visitors_arrive(then)

    @rule(outage=st.sampled_from(OUTAGES))
    def something_fails(self, outage: str) -> None:
        """The database is unreachable for a while (it comes back as time passes), or
        the shared cache goes down (its data kept, as a Redis restarted with
        persistence or a partition), comes back, or loses its data."""
        what, _, seconds = outage.partition(" ")
        if what == "database" and not self.model.database_down:
            self.monkeypatch.setattr(utils.CursorWrapper, "execute", database_is_down)
            self.model.database_down = True
            self.database_until = self.model.now + float(seconds)
        elif what.startswith("cache") and self.topology == "shared":
            if what == "cache-flush":
                self.processes[0].cache._data.clear()
            else:
                Outage.down = what == "cache-down"
        else:
            return
        self.count(what)

    # -- tokens -------------------------------------------------------------------------

    @precondition(lambda self: self.model.state.keys)
    @rule(
        pick=st.integers(0, 20),
        with_kid=st.booleans(),
        sub=st.sampled_from(USERS),
        iat=st.sampled_from([None, 0, -100]),
        exp=st.sampled_from([None, 600, 2 * 24 * 3600]),
    )
    def mint(self, pick: int, with_kid: bool, sub: str, iat: int | None, exp: int | None) -> None:
        """A client signs a token now (PyJWT); the last HELD tokens are judged at every check."""
        keys = list(self.model.state.keys)
        key = keys[pick % len(keys)]
        whole = int(self.model.now)
        claims: dict[str, Any] = {"sub": sub}
        if key.integration in ISSUER:
            claims["iss"] = ISSUER[key.integration]
        if iat is not None:
            claims["iat"] = whole + iat
        if exp is not None:
            claims["exp"] = whole + exp
        headers = {"kid": key.kid} if with_kid else None
        if key.kind == SECRET:
            signing_key: Any = self.secrets[key.kid]
        else:
            slot = next(s for s, kid in self.kid_of_pool.items() if kid == key.kid)
            signing_key = RSA_POOL[slot]
        token = jwt.encode(claims, signing_key, algorithm=ALG[key.kind], headers=headers)
        minted = Minted(
            token, key.kid, key.kind, with_kid, sub, claims.get("iat"), claims.get("exp"),
            key.integration,
        )  # fmt: skip
        self.held = [*self.held[-(HELD - 1) :], minted]

    @precondition(lambda self: self.held)
    @rule(proc=st.integers(0, 1), elsewhere=st.integers(1, len(INTEGRATIONS) - 1))
    def requests_arrive(self, proc: int, elsewhere: int = 1) -> None:
        """Process ``proc`` verifies every held token, as requests carrying them would:
        on a path of its own integration, and on one of the integration ``elsewhere``
        places further on (a token taken to another tenant's chat)."""
        self.act_in(proc)
        recent = self.model.recent()
        for token in self.held:
            own = INTEGRATIONS.index(token.integration)
            other = INTEGRATIONS[(own + elsewhere) % len(INTEGRATIONS)]
            said = self._judged(token, recent, token.integration)
            self.count(f"verify:{said}")
            self._count_spaces(token, said)
            self.count(f"verify elsewhere:{self._judged(token, recent, other)}")

    def _judged(self, token: Minted, recent: list[State], at: str) -> str:
        """What the engine says of ``token`` where ``at`` judges it, checked against the model."""
        said = self._verify(token, at)
        allowed = {verdict(s, token, self.model.now, at=at) for s in recent}
        if self.model.may_be_unavailable():
            allowed.add("unavailable")
        assert said in allowed, (
            f"{self.current.name} said {said!r} at +{self.model.now - START:g} s where "
            f"{at} judges; the model allows {sorted(allowed)} (token {token})"
        )
        return said

    def _count_spaces(self, token: Minted, said: str) -> None:
        """Tally what shows the user spaces at work (the test asserts each was reached)."""
        space = SPACE[token.integration]
        revoked = {s for s, user in dict(self.model.state.latest) if user == token.sub}
        if said == "ok" and revoked - {space}:
            self.count("verify:ok, the user revoked in another space")
        if said == "token_revoked":
            self.count(f"verify:token_revoked in {space}")
            if self.revoked_through.get((space, token.sub), token.integration) != token.integration:
                self.count("verify:token_revoked through the other integration of its space")

    def _verify(self, token: Minted, at: str) -> str:
        try:
            tokens.verify(token.token, count_use=False, integration=at)
        except TokenError as exc:
            assert exc.code in ERROR_CODES
            return exc.code
        except KeyStoreUnavailable:
            return "unavailable"
        return "ok"

    # -- sockets ------------------------------------------------------------------------

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 20), proc=st.integers(0, 1))
    def open_sockets(self, pick: int, proc: int) -> None:
        """Chat widgets in process ``proc`` open sockets with the held token ``pick``
        names and those minted after it, each where its own integration serves."""
        process = self.act_in(proc)
        for token in self.held[pick % len(self.held) :]:
            try:
                snapshot = keyring.get_snapshot()  # as Connection.check_sync records it
                result = tokens.verify(token.token, count_use=False, integration=token.integration)
            except (TokenError, KeyStoreUnavailable):
                continue
            process.sockets.append(FakeSocket(token, result.kid, snapshot))
            self.count("socket opened")

    @precondition(lambda self: any(p.sockets for p in self.processes))
    @rule(first=st.integers(0, 1))
    def watchers_tick(self, first: int) -> None:
        """The watcher of every process with sockets ticks, process ``first`` first."""
        for proc in (first, 1 - first):
            if self.processes[proc].sockets:
                self.watcher_ticks(proc)

    def watcher_ticks(self, proc: int) -> None:
        process = self.act_in(proc)
        live = [s for s in process.sockets if not s.closed]

        process.watcher.connections = set(live)
        async_to_sync(process.watcher.tick)()
        recent, now = self.model.recent(), self.model.now
        for socket in live:
            verdicts = {socket_verdict(s, socket.minted, now) for s in recent}
            # A re-check runs the whole engine: an expired token may be what closes it.
            # A key that went is key_retired, also for a token without kid (SPEC §10).
            timed = {verdict(s, socket.minted, now) for s in recent} & TIME_CODES
            closing = (verdicts | timed) - {"ok"}
            space = SPACE[socket.minted.integration]
            if socket.closed:
                self.count(f"socket closed:{socket.closed_with}")
                if socket.closed_with == "token_revoked":
                    self.count(f"socket closed:token_revoked in {space}")
                if socket.closed_with == "unavailable":
                    assert self.model.may_be_unavailable(), "closed 4503 with the database up"
                else:
                    assert socket.closed_with in closing, (
                        f"closed with {socket.closed_with}; the model allows {sorted(closing)}"
                    )
            else:
                latest = dict(self.model.state.latest)
                if any(u == socket.minted.sub and s != space for s, u in latest):
                    self.count("socket open, the user revoked in another space")
                assert "ok" in verdicts, (
                    f"a socket stayed open in {process.name}, though every state of the "
                    f"last {KEY_CACHE_SECONDS} s refuses it: {sorted(verdicts)} ({socket.minted})"
                )
        process.sockets = [s for s in process.sockets if not s.closed]


REAL_EXECUTE = utils.CursorWrapper.execute


def machine_for(topology, monkeypatch, tmp_path, tally):
    return type(
        f"RevocationMachine_{topology.replace('-', '_')}",
        (RevocationMachine,),
        {"topology": topology, "monkeypatch": monkeypatch, "cache_dir": tmp_path, "tally": tally},
    )


@pytest.mark.parametrize("topology", ["poll", "shared", "per-server"])
def test_revocation_holds_everywhere_against_the_model(topology, monkeypatch, tmp_path):
    tally: dict[str, int] = {}
    machine = machine_for(topology, monkeypatch, tmp_path, tally)
    alias = None if topology == "poll" else "default"
    overrides = {"KEY_CACHE_SECONDS": KEY_CACHE_SECONDS, "REQUIRE_EXP": False}
    try:
        with chat_settings({**overrides, "KEY_CACHE_ALIAS": alias}):
            run_state_machine_as_test(machine, settings=PROFILE)
    finally:  # how far it got: the examples tried, what the sequences did
        print(topology, dict(sorted(tally.items())))
    # The sequences reached what the promise is about, not only refusals of nothing.
    for what in ("revoke", "revoke-user", "verify:ok", "verify:token_revoked",
                 "verify:key_retired", "socket closed:token_revoked",
                 "verify:token_revoked in default", "verify:token_revoked in brand-b",
                 "verify:ok, the user revoked in another space",
                 "verify:token_revoked through the other integration of its space",
                 "verify elsewhere:unknown_key", "verify elsewhere:invalid_signature",
                 "socket closed:token_revoked in brand-b",
                 "socket open, the user revoked in another space",
                 "visitor:anonymous before the schedule",
                 "visitor:missing_token after the schedule", "switch cancel"):  # fmt: skip
        assert tally.get(what, 0) > 0, f"no {what!r} in {tally}"
    assert "verify elsewhere:ok" not in tally


def test_a_change_made_while_the_shared_cache_is_down_reaches_an_idle_process(
    monkeypatch, tmp_path
):
    """Found by the model: a change the writer could not announce (the shared cache
    unreachable, its data kept) reached a process that missed the outage only through
    a 30 s database backstop; with vouchers that expire, within KEY_CACHE_SECONDS."""
    overrides = {"KEY_CACHE_SECONDS": KEY_CACHE_SECONDS, "REQUIRE_EXP": False}
    with chat_settings({**overrides, "KEY_CACHE_ALIAS": "default"}):
        m = machine_for("shared", monkeypatch, tmp_path, {})()
        try:
            m.key_store_changes(proc=0, change="generate-secret", pick=0)
            m.mint(pick=0, with_kid=True, sub="alice", iat=0, exp=600)
            m.requests_arrive(1)  # p2 reads the store (and the cache)
            m.something_fails("cache-down")
            m.time_passes(0.25, None)
            m.key_store_changes(proc=0, change="revoke-user", pick=0)  # cannot be announced
            m.something_fails("cache-up")
            m.time_passes(1.25, None)
            m.requests_arrive(1)  # p2 was idle through the outage: refused all the same
            assert m.tally["verify:token_revoked"] == 1
        finally:
            m.teardown()
