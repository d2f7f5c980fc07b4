"""The panel's traffic charts (SPEC §15): one Traffic section per integration, for
admins (like Usage), escaped, and a number of queries that does not grow."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat_security import usage
from chat_security.models import Integration, Key, KeyKind, SecurityConfig, TrafficStat
from tests.test_admin_permissions import BASE, client_for

pytestmark = pytest.mark.django_db

HOUR = 3600
#: Rejections of a site rolling tokens out: mostly expired ones, and a few others.
CODES = ("expired", "expired", "expired", "invalid_signature", "unknown_key", "malformed")


def traffic_history(now: float, integration: str = "default", scale: int = 1) -> tuple[Key, Key]:
    """30 days of a rollout, counted the way the middleware counts and written by the flush.

    The signed share grows from 60 % to about 95 %; the old secret (rotated, in
    grace) verified requests until 3 days ago, the new one since. Returns (old, new).
    """
    old, _secret = Key.objects.generate_secret("t", integration=integration)
    new, _secret = Key.objects.rotate_secret(7 * 86400, "t", integration=integration)
    rng = random.Random(f"{integration}-{scale}")
    for hours_ago in range(30 * 24 - 1, -1, -1):
        at = now - hours_ago * HOUR
        hour_of_day = int(at // HOUR) % 24
        busy = 0.5 - 0.5 * math.cos(2 * math.pi * (hour_of_day - 4) / 24)  # peak at 16:00
        signed_share = 0.95 - 0.35 * hours_ago / (30 * 24)
        for _ in range(scale * (6 + int(30 * busy) + rng.randint(0, 4))):
            draw = rng.random()
            if draw < signed_share:
                kid = old.kid if hours_ago >= 72 else new.kid
                usage.count_request("signed", kid, at, integration)
            elif draw < 0.97:
                usage.count_request("unsigned", None, at, integration)
            else:
                usage.count_request(rng.choice(CODES), None, at, integration)
    assert usage.flush_usage()
    return old, new


@pytest.fixture
def admin(clock) -> Client:
    SecurityConfig.load()
    return client_for("admin")


def section(content: str, section_id: str) -> str:
    start = content.index(f'id="{section_id}"')
    return content[start : content.index("</section>", start)]


def test_each_integration_has_its_charts_and_the_sentences_to_decide_by(admin, clock):
    SecurityConfig.set_enabled(False, "t")
    Integration.objects.add("ios", issuer="https://ios.example")
    old, new = traffic_history(clock())
    traffic_history(clock(), "ios")
    content = admin.get(BASE).content.decode()
    for part in ("traffic", "integration-ios-traffic"):
        charts = section(content, part)
        for chart in ("hours", "days", "codes-24h", "codes-30d", "keys"):
            assert f'<figure class="chat-chart" id="{part}-{chart}">' in charts
        assert charts.count('role="img"') == 5
    default = section(content, "traffic")
    summary = re.search(r'<p class="chat-traffic-summary">(.*?)</p>', default).group(1)
    assert re.fullmatch(
        r"Last 24 h: [\d,]+ requests: 9\d % verified, \d % unsigned, \d % rejected"
        r"( \(most often \w+\))?\. Switched on now, security would also refuse the \d+ unsigned\.",
        summary,
    )
    # Before revoking the old secret: when it was last used, and how much.
    assert f"Key {new.kid} (active): last used just now" in default
    assert re.search(
        rf"Key {old.kid} \(in grace\): last used 3 days ago; 0 uses in 24 h, [\d,]+ in 30 days",
        default,
    )
    # The numbers under the charts are the rows' numbers.
    today = datetime.fromtimestamp(clock() // 86400 * 86400, tz=UTC)
    rows = TrafficStat.objects.filter(integration="default", hour__gte=today)
    cell = r'<td class="chat-num">(\d+)</td>'
    found = re.search(rf'<th scope="row">2027-01-15</th>{cell * 4}', default)
    assert int(found.group(4)) == sum(rows.values_list("count", flat=True))
    assert sum(int(n) for n in found.groups()[:3]) == int(found.group(4))
    assert "ios" not in default and old.kid not in section(content, "integration-ios-traffic")


def test_no_traffic_yet(admin):
    content = section(admin.get(BASE).content.decode(), "traffic")
    assert "No chat requests in the last 24 h." in content
    assert content.count("No requests yet") == 4  # the two stacked, the two by code
    assert "No stored key verified a request yet" in content


def test_the_security_switch_says_what_share_already_carries_a_token(admin, clock):
    SecurityConfig.set_enabled(False, "t")
    for outcome, n in (("signed", 3), ("unsigned", 1), ("expired", 1)):
        for _ in range(n):
            usage.count_request(outcome, "switch-test-key" if outcome == "signed" else None)
    content = admin.get(BASE).content.decode()
    assert (
        "60 % of its chat requests in the last 24 h already carry a valid token "
        '(see <a href="#traffic">Traffic</a>).'
    ) in section(content, "security")


def test_a_kid_or_code_with_markup_is_escaped(admin, clock):
    evil = "<script>alert(1)</script>"
    usage.count_request("signed", evil)
    usage.count_request(evil)
    content = admin.get(BASE).content.decode()
    assert "<script>alert(1)" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(content, "traffic")


def test_support_staff_see_no_charts_and_read_no_traffic(clock):
    """Like the Usage section: key and traffic figures are for those who manage keys."""
    usage.count_request("signed", "support-test-key")
    usage.flush_usage()
    support = client_for("support")
    with CaptureQueriesContext(connection) as queries:
        content = support.get(BASE).content.decode()
    assert "chat-chart" not in content and 'id="traffic"' not in content
    assert not [q for q in queries.captured_queries if "chat_security_trafficstat" in q["sql"]]


def test_the_panels_queries_do_not_grow_with_integrations_keys_or_hours(
    admin, clock, django_assert_num_queries, snapshot_not_rechecked
):
    admin.get(BASE)  # warms the session and this process's key snapshot
    with CaptureQueriesContext(connection) as alone:
        admin.get(BASE)
    most = len(alone)  # now: the next request resets the connection's query log
    names = ("default", "web", "ios", "brand-b")
    for name in names[1:]:
        Integration.objects.add(name, issuer=f"https://{name}.example")
    for name in names:
        old = Key.objects.generate_secret("t", name)[0]
        new = Key.objects.rotate_secret(86400, "t", integration=name)[0]
        TrafficStat.objects.bulk_create(
            TrafficStat(hour=datetime.fromtimestamp(hour * HOUR, tz=UTC), integration=name,
                        outcome=outcome, kid=kid, count=3)
            for hour in range(int(clock() // HOUR) - 30 * 24, int(clock() // HOUR) + 1)
            for outcome, kid in (("signed", old.kid), ("signed", new.kid), ("signed", ""),
                                 ("unsigned", ""), ("expired", ""), ("unknown_key", ""))
        )  # fmt: skip
    assert TrafficStat.objects.count() == 4 * 6 * (30 * 24 + 1)
    assert Key.objects.filter(kind=KeyKind.SECRET).count() == 8
    admin.get(BASE)
    with django_assert_num_queries(most):
        content = admin.get(BASE).content.decode()
    assert content.count('<section class="module chat-section chat-traffic"') == 4
