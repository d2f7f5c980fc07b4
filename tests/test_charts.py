"""The panel's traffic charts (SPEC §15): geometry (admin/charts.py), the SVG template,
and reading the hourly rows (admin/traffic.py) into UTC hours and days.

The controlled clock (``clock``) starts at 2027-01-15 08:00:00 UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest
from django.template.loader import render_to_string
from django.utils import translation

from chat_security import usage
from chat_security.admin import charts, traffic
from chat_security.admin.charts import Series
from chat_security.models import TrafficStat

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2027, 1, 15, 8, tzinfo=UTC)
SERIES = [Series("chat-verified", "verified"), Series("chat-rejected", "rejected")]


def bars(values, columns=("a", "b", "c"), labels=("a", "", "c")):
    return charts.stacked_bars(
        "t",
        "Title",
        "Desc",
        SERIES,
        values,
        list(columns),
        list(labels),
        ("x", "y"),
        "No requests yet",
    )


def at(hour: int, day: int = 15, month: int = 1) -> datetime:
    """An hour of January 2027, or of December 2026."""
    return datetime(2027 if month == 1 else 2026, month, day, hour, tzinfo=UTC)


def row(when: datetime, outcome: str, n: int, integration="default", kid="") -> TrafficStat:
    return TrafficStat.objects.create(
        hour=when, integration=integration, outcome=outcome, kid=kid, count=n
    )


# -- geometry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "step", "ticks"),
    [
        (1, 1, [0, 1]),
        (4, 1, [0, 1, 2, 3, 4]),
        (9, 5, [0, 5, 10]),
        (10, 5, [0, 5, 10]),
        (1234, 500, [0, 500, 1000, 1500]),
    ],
)
def test_the_scale_has_round_ticks_and_reaches_the_largest_value(largest, step, ticks):
    assert charts.nice_step(largest) == step
    assert charts._scale(largest) == (ticks[-1], ticks)


@pytest.mark.parametrize(
    ("n", "text"),
    [(950, "950"), (9500, "9,500"), (12000, "12k"), (12500, "12.5k"), (150_400, "150k"),
     (1_500_000, "1.5M"), (2_000_000, "2M")],
)  # fmt: skip
def test_axis_numbers_are_short(n, text):
    assert charts.short_number(n) == text


def test_bars_are_proportional_to_their_values():
    chart = bars([[10, 0, 40], [10, 20, 0]])
    per_request = {b.height / b.value for b in chart.boxes}
    assert max(per_request) - min(per_request) < 0.01  # one scale for every segment
    assert len(chart.boxes) == 4  # a zero draws nothing
    # The tallest bar (40) reaches the top of a 0..40 axis: the whole plot height.
    tallest = max(chart.boxes, key=lambda b: b.value)
    assert tallest.height == pytest.approx(chart.frame.plot_height, abs=0.1)
    assert tallest.y == pytest.approx(chart.frame.top, abs=0.1)


def test_stacked_segments_sum_to_the_tables_total():
    values = [[3, 7, 0, 5], [1, 2, 6, 0]]
    chart = bars(values, columns="abcd", labels="abcd")
    unit = chart.frame.plot_height / charts._scale(9)[0]
    for (name, cells), x in zip(chart.table.rows, "abcd", strict=True):
        column = sorted(
            (b for b in chart.boxes if b.title.startswith(f"{name}:")), key=lambda b: -b.y
        )
        assert sum(b.value for b in column) == cells[-1] == sum(cells[:-1])
        assert sum(b.height for b in column) == pytest.approx(cells[-1] * unit, abs=0.2)
        # Stacked: each segment starts where the one below ends, from the baseline up.
        bottom = chart.frame.baseline
        for box in column:
            assert box.y + box.height == pytest.approx(bottom, abs=0.15)
            bottom = box.y
    assert chart.table.head == ["x", "verified", "rejected", "total"]
    assert [cells for _name, cells in chart.table.rows][2] == [0, 6, 6]


def test_no_data_draws_an_empty_chart_that_says_so():
    chart = bars([[0, 0, 0], [0, 0, 0]])
    assert chart.empty and chart.boxes == []
    assert [t.text for t in chart.texts if t.css == "chat-empty"] == ["No requests yet"]
    assert [t.text for t in chart.texts if t.css == "chat-tick" and t.anchor == "end"] == ["0"]
    html = render_to_string("admin/chat_security/panel/chart.html", {"chart": chart})
    assert "No requests yet" in html and "<table" not in html  # no table of zeros


def test_horizontal_bars_largest_first_labels_cut_and_tooltipped():
    long = "a_code_that_is_much_longer_than_the_margin"
    chart = charts.horizontal_bars(
        "c", "T", "D", [("expired", 30), ("invalid_signature", 15), (long, 3)],
        SERIES[1], ("code", "n"), "No rejections",
    )  # fmt: skip
    widths = [b.width for b in chart.boxes]
    assert widths[0] == pytest.approx(2 * widths[1], abs=0.2) and widths[0] > widths[2]
    labels = [t.text for t in chart.texts if t.css == "chat-label"]
    assert labels[:2] == ["expired", "invalid_signature"]
    assert labels[2].endswith("…") and len(labels[2]) == charts.LABEL_CHARS
    assert chart.boxes[2].title == f"{long}: 3"


def test_lines_one_per_series_and_the_smallest_are_added_up():
    series = [(f"k{n}", [n, 0, n]) for n in range(1, 11)]  # ten keys
    chart = charts.lines(
        "k", "T", "D", series, ["d1", "d2", "d3"], ["d1", "", "d3"], ("x", "y"), "-"
    )
    assert len(chart.lines) == charts.MOST_LINES
    names = [s.label for s in chart.legend]
    assert names[-1] == "other keys" and "k10" in names and "k1" not in names
    assert chart.table.rows[0][1][-1] == 1 + 2 + 3  # k1..k3 added up
    assert {s.css for s in chart.legend[:6]} == {f"chat-series-{n}" for n in range(6)}
    # A point's height is proportional: k10's first point (10) twice k5's (5).
    baseline = chart.frame.baseline

    def first_y(name):
        line = chart.lines[names.index(name)]
        return float(line.points.split()[0].split(",")[1])

    assert baseline - first_y("k10") == pytest.approx(2 * (baseline - first_y("k5")), abs=0.2)


# -- the SVG template ------------------------------------------------------------------


def render(chart) -> str:
    return render_to_string("admin/chat_security/panel/chart.html", {"chart": chart})


def test_every_label_is_escaped():
    evil = "<script>alert(1)</script>"
    chart = charts.lines(
        f"x-{evil}", evil, evil, [(evil, [1, 2])], [evil, "b"], [evil, ""], (evil, evil), evil
    )
    codes = charts.horizontal_bars("c", evil, evil, [(evil, 2)], SERIES[1], (evil, evil), "")
    for html in (render(chart), render(codes)):
        assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_svg_is_well_formed_accessible_and_unlocalised():
    chart = bars([[1, 2, 3], [3, 2, 1]])
    with translation.override("de"):  # a decimal comma must not reach the coordinates
        html = render(chart)
    svg_text = re.search(r"<svg class=\"chat-chart-svg\".*?</svg>", html, re.S).group(0)
    svg = ElementTree.fromstring(svg_text)
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "t-title t-desc"
    assert svg.find(f"{SVG}title").text == "Title" and svg.find(f"{SVG}desc").text == "Desc"
    rects = svg.findall(f"{SVG}rect")
    assert len(rects) == 6
    assert all(float(r.get("height")) > 0 for r in rects)
    assert all(r.find(f"{SVG}title").text for r in rects)  # a tooltip on every bar
    assert "chat-chart-table" in html and '<th scope="row">b</th>' in html


# -- reading the rows: UTC hours and days, zeros, two queries --------------------------


@pytest.mark.django_db
def test_24_hours_end_with_the_current_one_and_empty_hours_are_zero(clock):
    clock.advance(25 * 60)  # 08:25
    row(at(8), "signed", 5)  # the current hour: last
    row(at(9, 14), "unsigned", 2)  # 23 hours before it: first
    row(at(8, 14), "unsigned", 100)  # 24 hours before: out of the 24 h window
    row(at(9), "signed", 7)  # a later hour (a worker's clock ahead): not shown
    found = traffic.read(clock())["default"]
    assert found.hourly["signed"] == [0] * 23 + [5]
    assert found.hourly["unsigned"] == [2] + [0] * 23
    assert found.hourly["rejected"] == [0] * 24
    assert found.first_hour * 3600 == at(9, 14).timestamp()


@pytest.mark.django_db
def test_30_days_are_utc_days_whatever_the_sites_time_zone(clock, settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: its days are not UTC's
    row(at(23, 14), "signed", 1)  # yesterday (UTC), late
    row(at(0), "signed", 2)  # today, 00:00 UTC
    row(at(7), "expired", 4)
    row(at(0, 17, 12), "signed", 8)  # 29 days before today: the first day
    row(at(23, 16, 12), "signed", 100)  # 30 days before: out
    found = traffic.read(clock())["default"]
    assert found.daily["signed"] == [8] + [0] * 27 + [1, 2]
    assert found.daily["rejected"] == [0] * 29 + [4]
    assert found.codes_30d == {"expired": 4}
    names, labels = traffic._day_labels(found.first_day)
    assert names[0] == "2026-12-17" and names[-1] == "2027-01-15"
    assert labels[-1] == "Jan 15" and labels[-6] == "Jan 10" and labels[-2] == ""


@pytest.mark.django_db
def test_counted_by_the_usage_flush_across_an_hour_and_a_day_boundary(clock):
    """The real path: counted in memory at the clock's time, written by the flush."""
    clock.t = at(23, 14).timestamp() + 3599  # 23:59:59 UTC, the 14th
    usage.count_request("signed", "k1")
    usage.count_request("unsigned")
    clock.advance(1)  # 00:00:00 the 15th: another hour and another day
    usage.count_request("signed", "k1")
    usage.count_request("expired", integration="ios")
    assert usage.flush_usage()
    found = traffic.read(clock())
    assert found["default"].hourly["signed"][-2:] == [1, 1]
    assert found["default"].hourly["unsigned"][-2:] == [1, 0]
    assert found["default"].daily["signed"][-2:] == [1, 1]
    assert found["default"].keys_daily == {"k1": [0] * 28 + [1, 1]}
    assert found["default"].keys_24h == {"k1": 2}
    assert found["ios"].codes_24h == {"expired": 1}
    assert found["ios"].hourly["rejected"][-1] == 1


@pytest.mark.django_db
def test_reading_takes_two_queries_whatever_the_integrations_keys_and_hours(
    clock, django_assert_num_queries
):
    row(at(7), "signed", 1)
    with django_assert_num_queries(2):
        traffic.read(clock())
    for n in range(12):
        for hour in range(0, 8):
            row(at(hour), "signed", 1, f"i{n}", f"key-{n}-{hour}")
            row(at(hour, 1 + n), "unknown_key", 3, f"i{n}")
    with django_assert_num_queries(2):
        found = traffic.read(clock())
    assert len(found) == 13
    assert sum(found["i3"].keys_24h.values()) == 8 and found["i3"].codes_30d == {"unknown_key": 24}


@pytest.mark.django_db
def test_the_site_summary_adds_every_integration_up(clock):
    row(at(7), "signed", 6)
    row(at(7), "signed", 2, "ios", "ios-key")
    row(at(6), "unsigned", 1, "ios")
    row(at(6), "expired", 1, "gone")  # an integration removed since: still counted
    summary = traffic.site_summary(traffic.read(clock()).values())
    assert (summary["total"], summary["signed"], summary["signed_pct"]) == (10, 8, "80 %")
    assert summary["rejected"][0]["code"] == "expired"
