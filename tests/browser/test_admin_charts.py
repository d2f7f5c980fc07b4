"""A real headless Chromium shows the panel's traffic charts in the admin's light and
dark themes (SPEC §15), from 30 days of counted traffic.

Each chart is saved as ``<chart>-<theme>.png``: in ``docs/images/charts/`` when
``CHAT_SECURITY_SCREENSHOTS=docs`` (the documentation's pictures), else in the
test's temporary directory; the whole section (``section-<theme>.png``) always there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chat_security.models import SecurityConfig
from tests.browser.test_admin_panel import login, make_user
from tests.test_admin_charts import traffic_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images" / "charts"
CHARTS = ("hours", "days", "codes-24h", "codes-30d", "keys")


@pytest.fixture
def shots(tmp_path) -> Path:
    if os.environ.get("CHAT_SECURITY_SCREENSHOTS") == "docs":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return DOCS_IMAGES
    return tmp_path


def _luminance(rgb: str) -> float:
    """WCAG relative luminance of a computed colour, ``rgb(r, g, b)``."""
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def colours(page: Page) -> dict[str, str]:
    """Computed colours of the page, a chart's label, its grid and its first bar of each series."""
    return page.evaluate(
        """() => {
          const chart = document.getElementById('traffic-hours');
          const fill = (sel) => getComputedStyle(chart.querySelector(sel)).fill;
          return {
            page: getComputedStyle(document.body).backgroundColor,
            text: fill('text.chat-tick'),
            caption: fill('text.chat-caption'),
            grid: getComputedStyle(chart.querySelector('line.chat-grid')).stroke,
            verified: fill('rect.chat-verified'),
            unsigned: fill('rect.chat-unsigned'),
            rejected: fill('rect.chat-rejected'),
          };
        }"""
    )


def check_charts(page: Page, theme: str, shots: Path) -> dict[str, str]:
    for name in CHARTS:
        figure = page.locator(f"#traffic-{name}")
        figure.scroll_into_view_if_needed()
        svg = figure.locator("svg.chat-chart-svg")
        expect(svg).to_be_visible()
        box = svg.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        if name == "keys":
            expect(figure.locator("polyline")).to_have_count(2)
            assert figure.locator("circle").first.bounding_box()["width"] > 0
        else:
            bars = figure.locator("rect.chat-bar")
            assert bars.count() > 0
            heights = [bars.nth(n).bounding_box()["height"] for n in range(bars.count())]
            assert min(heights) > 0
        figure.screenshot(path=str(shots / f"{name}-{theme}.png"))
    page.locator("#traffic .chat-body > p.chat-traffic-summary").scroll_into_view_if_needed()
    found = colours(page)
    # Readable in this theme: labels against the page at least 4.5:1 (WCAG AA).
    assert contrast(found["text"], found["page"]) >= 4.5, found
    assert len({found["verified"], found["unsigned"], found["rejected"]}) == 3
    return found


def test_the_charts_in_light_and_dark(live_server, new_page, clock, shots, tmp_path):
    clock.t = 1_800_000_000.0 + 16 * 3600 + 20 * 60  # 2027-01-16 00:20 UTC
    SecurityConfig.set_enabled(False, "t")
    traffic_history(clock(), scale=3)
    make_user("ada", "manage_keys")
    themes = {}
    for theme in ("light", "dark"):
        page = new_page(color_scheme=theme, viewport={"width": 1100, "height": 900})
        page.context.add_init_script(
            "window.localStorage.setItem('django.admin.navSidebarIsOpen', 'false')"
        )
        login(page, live_server.url, "ada")
        expect(page.locator("#traffic .chat-traffic-summary")).to_contain_text("Last 24 h:")
        themes[theme] = check_charts(page, theme, shots)
        page.locator("#traffic").screenshot(path=str(tmp_path / f"section-{theme}.png"))
    light, dark = themes["light"], themes["dark"]
    assert light["text"] != dark["text"] and light["grid"] != dark["grid"]
    assert _luminance(light["text"]) < _luminance(light["page"])  # dark text on light
    assert _luminance(dark["text"]) > _luminance(dark["page"])  # light text on dark
    assert light["verified"] != dark["verified"]

    # The admin's own theme toggle (auto → dark on a light system) switches the charts too.
    page = new_page(color_scheme="light", viewport={"width": 1100, "height": 900})
    login(page, live_server.url, "ada")
    page.locator("button.theme-toggle").first.click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert colours(page) == dark
