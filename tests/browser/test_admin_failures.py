"""Support staff read why a customer's chat was refused, in a real headless Chromium.

A real HTTP request to the live server is refused; the panel, opened by a
support user right after, shows it under "Recent failures" (rendering the
panel writes this process's samples first). Saved as
artifacts/screenshots/admin-failures-<theme>.png.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from playwright.sync_api import expect

from chat_security.models import FailureSample, Key
from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_admin_panel import PANEL, login, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)


def refused_request(base: str, token: str) -> int:
    request = urllib.request.Request(
        f"{base}/chat/api/messages",
        headers={"Authorization": f"Bearer {token}", "User-Agent": SAFARI},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our server)
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_support_staff_read_recent_failures(live_server, new_page, theme):
    key, _secret = Key.objects.generate_secret("setup")
    forged = jwt.encode(
        {"sub": "customer-42", "iss": "https://shop.example", "exp": 4_000_000_000},
        "not-the-secret-" + "x" * 32,
        headers={"kid": key.kid},
    )
    assert refused_request(live_server.url, forged) == 401
    # An older one with the longest code, kid, iss and path: the table still fits the page
    # (the admin's navigation sidebar open beside it).
    FailureSample.objects.create(
        integration="default", at=datetime.now(tz=UTC) - timedelta(minutes=5),
        code="payload_decryption_failed",
        kid="k" * 63 + "…", iss="https://" + "i" * 91 + "…", channel="websocket",
        path="/ws/" + "p" * 195 + "…", user_agent="Samsung Internet", network="2001:db8:abcd::/48",
    )  # fmt: skip
    make_user("sam", "test_tokens")
    page = new_page(color_scheme=theme, viewport={"width": 1280, "height": 900})
    login(page, live_server.url, "sam")
    section = page.locator("#failures")
    rows = section.locator("tr.chat-failure")
    expect(rows).to_have_count(2)
    cells = [cell.strip() for cell in rows.first.locator("td").all_inner_texts()]
    assert cells[1:] == [
        "invalid_signature", key.kid, "https://shop.example", "HTTP\n/chat/api/messages",
        "Safari\n127.0.0.0/24",
    ]  # fmt: skip
    assert "just now" in cells[0] or "s ago" in cells[0]
    expect(section.locator(".chat-failure-codes")).to_contain_text("current secret")
    expect(rows.nth(1)).to_contain_text("5 min ago")
    assert forged.split(".")[2] not in page.content()
    # The table fits the page: nothing is pushed out to the right.
    box = section.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.url.endswith(PANEL)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    section.screenshot(path=str(SCREENSHOTS / f"admin-failures-{theme}.png"))
