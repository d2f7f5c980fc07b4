"""A real headless Chromium: an admin takes default's keys from an identity provider.

The provider is tests/jwks_server.py on 127.0.0.1 (listed in JWKS_PRIVATE_HOSTS,
so plain http is allowed). Screenshots: artifacts/screenshots/admin-key-source-*.png.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from chat_security.models import AuditEntry, KeySource
from tests.browser.test_admin_panel import login, make_user, panel_page, shot
from tests.jwks_server import jwks_server
from tests.test_remote_keys import Provider, private_hosts

__all__ = ["jwks_server", "panel_page", "private_hosts"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_adds_a_jwks_url_and_refreshes_it(
    live_server, panel_page: Page, jwks_server, private_hosts
):
    page = panel_page
    provider = Provider(jwks_server)
    provider.new_key("idp-2027")
    make_user("ada", "manage_keys")
    login(page, live_server.url, "ada")

    section = page.locator("#key-source")
    expect(section.locator("h2")).to_have_text("Keys from an identity provider")
    expect(page.locator("#id_source_kind")).to_have_value("jwks_url")
    page.fill("#id_source_url", jwks_server.url())
    shot(page, "key-source-00-form", "#key-source")
    page.click("input[value='Take keys from this provider']")
    expect(page.locator("ul.messagelist")).to_contain_text("1 fetched (idp-2027)")
    table = section.locator("table.chat-fetched-keys")
    expect(table.locator("tbody tr")).to_have_count(1)
    row = table.locator("tbody tr").first
    expect(row).to_contain_text("idp-2027")
    expect(row).to_contain_text("RS256")
    expect(row.locator(".chat-badge")).to_have_text("active")
    expect(section.locator(".chat-fetch-outcome")).to_have_text("ok")
    assert KeySource.objects.get().created_by == "ada"
    shot(page, "key-source-01-added", "#key-source")

    # The provider adds a key: Refresh now fetches it at once and says which.
    provider.new_key("idp-2028", "EC")
    section.locator("input[value='Refresh now']").click()
    expect(page.locator("ul.messagelist")).to_contain_text("added idp-2028; removed none")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tr:has-text('idp-2028')")).to_contain_text("ES256")
    shot(page, "key-source-02-refreshed", "#key-source")

    # The provider fails: the error is shown, the keys stay listed and in use.
    jwks_server.set_route("/jwks", status=503, body="maintenance")
    section.locator("input[value='Refresh now']").click()
    expect(page.locator("ul.messagelist .error")).to_contain_text("answered 503, not 200")
    expect(section.locator(".chat-fetch-error")).to_contain_text("answered 503, not 200")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(section).to_contain_text("The last good set stays in use until")
    assert AuditEntry.objects.filter(action="refresh_keys", actor="ada").count() == 2
    shot(page, "key-source-03-refresh-failed", "#key-source")

    # The section follows the admin's dark theme (its colours are the admin's variables).
    def colours() -> list[str]:
        return [
            page.locator(selector).first.evaluate("e => getComputedStyle(e).backgroundColor")
            for selector in ("#key-source", "#key-source .chat-badge-active")
        ]

    light = colours()
    page.emulate_media(color_scheme="dark")
    page.reload()
    dark = colours()
    assert all(a != b for a, b in zip(light, dark, strict=True)), (light, dark)
    shot(page, "key-source-04-dark", "#key-source")
