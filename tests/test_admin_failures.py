"""The panel's "Recent failures" (SPEC §15): who sees it, what it shows, what it costs.

Rows are stored directly (what the flush writes; tests/test_refusals.py covers
how they get there), so these tests run in the usual test transaction.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat_security.exceptions import ERROR_CODES, HINTS
from chat_security.models import FailureSample, Integration, SecurityConfig
from tests.chat_helpers import chat_settings
from tests.test_admin_permissions import BASE, client_for

pytestmark = pytest.mark.django_db

SECTION = re.compile(r'<section class="module chat-section chat-failures".*?</section>', re.S)


def sample(at: float, integration: str = "default", **fields: str) -> FailureSample:
    values = {
        "code": "expired", "kid": "hs-0123456789ab", "iss": "https://shop.example",
        "channel": "http", "path": "/chat/api/messages", "user_agent": "Firefox",
        "network": "203.0.113.0/24", **fields,
    }  # fmt: skip
    return FailureSample.objects.create(
        integration=integration, at=datetime.fromtimestamp(at, tz=UTC), **values
    )


def sections(html: str) -> dict[str, str]:
    """Each "Recent failures" section of the page by its integration."""
    found = {}
    for part in SECTION.findall(html):
        name = re.search(r'data-integration="([^"]+)"', part)
        assert name is not None
        found[name.group(1)] = part
    return found


def rows(section: str) -> list[str]:
    return re.findall(r'<tr class="chat-failure">.*?</tr>', section, re.S)


@pytest.fixture
def failures(clock):
    SecurityConfig.load()
    sample(clock.t - 3 * 3600, code="invalid_signature")
    sample(clock.t - 180, code="expired", path="/chat/api/newest")
    sample(clock.t - 600, code="expired")


@pytest.mark.parametrize(
    ("role", "status", "shown"),
    [
        ("anonymous", 302, False),  # to the admin's login page
        ("staff", 403, False),
        ("support", 200, True),
        ("admin", 200, True),
        ("superuser", 200, True),
    ],
)
def test_who_sees_recent_failures(failures, role, status, shown):
    response = client_for(role).get(BASE)
    assert response.status_code == status
    html = response.content.decode()
    if status == 302:
        assert "/admin/login/" in response["Location"]
    assert ("invalid_signature" in html) is shown
    assert (set(sections(html)) == {"default"}) is shown


def test_newest_first_with_utc_and_relative_times(failures, clock):
    section = sections(client_for("support").get(BASE).content.decode())["default"]
    shown = rows(section)
    assert len(shown) == 3
    assert "/chat/api/newest" in shown[0] and "3 min ago" in shown[0]
    assert "10 min ago" in shown[1]
    assert "invalid_signature" in shown[2] and "3 h ago" in shown[2]
    at = datetime.fromtimestamp(clock.t - 180, tz=UTC)
    assert f'<time datetime="{at.isoformat()}" title="{at:%Y-%m-%d %H:%M:%S} UTC">' in shown[0]
    assert f"{at:%Y-%m-%d}<br>{at:%H:%M:%S} UTC</time>" in shown[0]
    for cell in ("hs-0123456789ab", "https://shop.example", "HTTP", "Firefox", "203.0.113.0/24"):
        assert cell in shown[0]


def test_each_code_is_explained_once_with_the_testers_hint(failures):
    section = sections(client_for("support").get(BASE).content.decode())["default"]
    legend = section.split("What the codes mean", 1)[1]
    for code in ("expired", "invalid_signature"):
        assert legend.count(f"<code>{code}</code>") == 1
        explanation = ERROR_CODES[code].replace("'", "&#x27;")
        assert explanation in legend and HINTS[code].replace("'", "&#x27;") in legend
    assert legend.index("expired") < legend.index("invalid_signature")  # the commoner first
    assert 'href="#test-token"' in section


def test_what_a_token_named_is_escaped(clock):
    SecurityConfig.load()
    sample(
        clock.t,
        kid="<script>alert(1)</script>",
        iss='"><img src=x onerror=alert(2)>',
        path="/chat/api/<b>x</b>",
    )
    html = client_for("support").get(BASE).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


def test_one_section_per_integration_each_its_own(clock):
    SecurityConfig.load()
    Integration.objects.add("ios", issuer="https://ios.example", actor="t")
    Integration.objects.add("web", actor="t")
    sample(clock.t - 60, "ios", code="unknown_issuer", channel="websocket")
    sample(clock.t - 60, "gone", code="malformed")  # of an integration removed since
    for role in ("support", "admin"):
        found = sections(client_for(role).get(BASE).content.decode())
        assert list(found) == ["default", "ios", "web"]
        assert 'id="integration-ios-failures"' in found["ios"] and "· ios" in found["ios"]
        assert len(rows(found["ios"])) == 1 and "WebSocket" in found["ios"]
        assert rows(found["default"]) == rows(found["web"]) == []
        assert "No refused chat request recorded." in found["web"]
        assert "malformed" not in "".join(found.values())


def test_at_most_failure_samples_are_shown(clock):
    SecurityConfig.load()
    for n in range(8):  # more than the setting: written before it was lowered
        sample(clock.t - n)
    client = client_for("support")
    with chat_settings(FAILURE_SAMPLES=5):
        section = sections(client.get(BASE).content.decode())["default"]
        assert len(rows(section)) == 5 and "The newest 5 refused" in section
    with chat_settings(FAILURE_SAMPLES=0):
        section = sections(client.get(BASE).content.decode())["default"]
        assert rows(section) == [] and "FAILURE_SAMPLES is 0" in section


@pytest.mark.parametrize("role", ["support", "admin"])
def test_panel_queries_do_not_grow_with_integrations_or_failures(
    role, clock, django_assert_num_queries, snapshot_not_rechecked
):
    SecurityConfig.load()
    client = client_for(role)
    sample(clock.t)
    client.get(BASE)  # warms the session and the key snapshot
    with CaptureQueriesContext(connection) as one:
        html = client.get(BASE).content.decode()
    queries = len(one)  # now: the next request resets the connection's query log
    assert len(rows(sections(html)["default"])) == 1
    for i in range(6):
        Integration.objects.add(f"app-{i}", actor="t")
        for n in range(10):
            sample(clock.t - n, f"app-{i}")
    client.get(BASE)
    with django_assert_num_queries(queries):
        html = client.get(BASE).content.decode()
    found = sections(html)
    assert len(found) == 7 and all(len(rows(found[f"app-{i}"])) == 10 for i in range(6))
