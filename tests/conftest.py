from __future__ import annotations

import pytest

from chat_security import conf


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with no cached settings, keys, key snapshot, counters or
    remembered verifications: as after a settings change."""
    conf.reset_caches()
    yield
    conf.reset_caches()


class Clock:
    """A controllable replacement for chat_security.clock.now."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch):
    from chat_security import clock as clock_module

    c = Clock()
    monkeypatch.setattr(clock_module, "now", c)
    return c
