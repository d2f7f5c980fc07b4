"""Chart geometry for the panel (SPEC §15): numbers in, shapes for a template out.

Plain Python, no markup: ``templates/admin/chat_security/panel/chart.html``
draws a :class:`Chart` as inline SVG, so every label goes through the
template's escaping, and the page needs no JavaScript. Colours are CSS classes
(``chat_security/charts.css``): they follow the admin's light and dark themes,
and a strict Content-Security-Policy needs no ``style`` attribute.

Each chart carries its numbers as a table too (shown under it), the text
alternative for those who do not see the picture. Coordinates are in the SVG's
own units (``viewBox``), rounded to 0.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: Classes for a chart's series after the first six come round again (``charts.css``).
PALETTE = 6
#: Beyond this many lines, the smallest ones are added up into one.
MOST_LINES = 8
LABEL_CHARS = 28  # a longer row label is cut (its full text is in the tooltip)


@dataclass(frozen=True)
class Frame:
    """The SVG's size and the plot area inside it (margins for the axes' labels)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.height - self.bottom


@dataclass(frozen=True)
class Box:
    """A bar or a stacked segment; ``title`` is its tooltip."""

    x: float
    y: float
    width: float
    height: float
    css: str
    title: str
    value: int


@dataclass(frozen=True)
class Line:
    """A polyline of one series, and a dot (with its tooltip) per point."""

    points: str
    css: str
    dots: list[tuple[float, float, str]]


@dataclass(frozen=True)
class Rule:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "middle"
    css: str = ""
    rotate: bool = False  # the y axis' caption, read bottom to top


@dataclass(frozen=True)
class Series:
    css: str
    label: str
    line: bool = False  # shown as a line sample in the legend, else a swatch


@dataclass
class Table:
    """The chart's numbers: one row per bar or point, as the text alternative."""

    head: list[str]
    rows: list[tuple[str, list[int]]]


@dataclass
class Chart:
    id: str
    title: str
    desc: str
    frame: Frame
    boxes: list[Box] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    legend: list[Series] = field(default_factory=list)
    table: Table | None = None
    empty: bool = False


def _r(value: float) -> float:
    return round(value, 1)


def nice_step(largest: int, steps: int = 4) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ that reaches ``largest`` in at most ``steps`` steps."""
    unit = 1
    while True:
        for m in (1, 2, 5):
            if m * unit * steps >= largest:
                return m * unit
        unit *= 10


def short_number(n: int) -> str:
    """An axis label: '950', '9,500', '12k', '1.5M'."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.0f}k" if n % 1000 == 0 or n >= 100_000 else f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def _scale(largest: int) -> tuple[int, list[int]]:
    """The axis' top value and its ticks (0 alone for an empty chart)."""
    if largest <= 0:
        return 1, [0]
    step = nice_step(largest)
    top = step * -(-largest // step)
    return top, list(range(0, top + 1, step))


def _empty_text(frame: Frame, text: str) -> Text:
    return Text(
        frame.left + frame.plot_width / 2, frame.top + frame.plot_height / 2, text, css="chat-empty"
    )


def _y_axis(chart: Chart, largest: int, caption: str) -> float:
    """Grid lines, tick labels and the caption of a vertical axis; the scale's top."""
    f = chart.frame
    top, ticks = _scale(largest)
    for tick in ticks:
        y = _r(f.baseline - tick / top * f.plot_height)
        chart.rules.append(Rule(f.left, y, f.width - f.right, y, "chat-grid"))
        chart.texts.append(Text(f.left - 6, _r(y + 4), short_number(tick), "end", "chat-tick"))
    middle = f.top + f.plot_height / 2
    chart.texts.append(Text(12, _r(middle), caption, css="chat-caption", rotate=True))
    return top


def _x_labels(chart: Chart, centres: Sequence[float], labels: Sequence[str], caption: str) -> None:
    """Tick labels under the plot (a label may have a second line after "\\n"), the caption."""
    f = chart.frame
    chart.rules.append(Rule(f.left, f.baseline, f.width - f.right, f.baseline, "chat-axis"))
    for x, label in zip(centres, labels, strict=True):
        for n, part in enumerate(label.split("\n") if label else ()):
            chart.texts.append(Text(_r(x), f.baseline + 14 + 12 * n, part, css="chat-tick"))
    chart.texts.append(Text(f.left + f.plot_width / 2, f.height - 4, caption, css="chat-caption"))


def stacked_bars(
    chart_id: str,
    title: str,
    desc: str,
    series: Sequence[Series],
    values: Sequence[Sequence[int]],
    columns: Sequence[str],
    labels: Sequence[str],
    captions: tuple[str, str],
    empty_text: str,
) -> Chart:
    """One bar per column, its series stacked bottom up in the order given.

    ``values[s][c]``: series ``s`` in column ``c``; ``columns``: each column's full
    name (tooltips, the table); ``labels``: its tick label, or "" for none;
    ``captions``: the x and the y axis'.
    """
    frame = Frame(640, 230, 56, 8, 10, 46)
    chart = Chart(chart_id, title, desc, frame, legend=list(series))
    totals = [sum(column) for column in zip(*values, strict=True)]
    top = _y_axis(chart, max(totals, default=0), captions[1])
    slot = frame.plot_width / len(columns)
    width = _r(slot * 0.72)
    centres = [frame.left + slot * (c + 0.5) for c in range(len(columns))]
    for c, name in enumerate(columns):
        y = frame.baseline
        for s, one in enumerate(series):
            value = values[s][c]
            if value <= 0:
                continue
            height = value / top * frame.plot_height
            y -= height
            chart.boxes.append(
                Box(
                    _r(centres[c] - width / 2), _r(y), width, _r(height),
                    one.css, f"{name}: {value:,} {one.label}", value,
                )
            )  # fmt: skip
    _x_labels(chart, centres, labels, captions[0])
    chart.table = Table(
        [captions[0], *(one.label for one in series), "total"],
        [(name, [*(v[c] for v in values), totals[c]]) for c, name in enumerate(columns)],
    )
    if not any(totals):
        chart.empty = True
        chart.texts.append(_empty_text(frame, empty_text))
    return chart


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def horizontal_bars(
    chart_id: str,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, int]],
    series: Series,
    head: tuple[str, str],
    empty_text: str,
) -> Chart:
    """One bar per row (largest first as given), its label left of it, its count after it."""
    row_height = 22
    frame = Frame(420, 30 + row_height * max(len(rows), 2), 176, 44, 8, 22)
    chart = Chart(chart_id, title, desc, frame)
    largest = max((n for _label, n in rows), default=0)
    top, ticks = _scale(largest)
    for tick in ticks:
        x = _r(frame.left + tick / top * frame.plot_width)
        chart.rules.append(Rule(x, frame.top, x, frame.baseline, "chat-grid"))
        chart.texts.append(Text(x, frame.baseline + 14, short_number(tick), css="chat-tick"))
    chart.rules.append(Rule(frame.left, frame.top, frame.left, frame.baseline, "chat-axis"))
    for n, (label, value) in enumerate(rows):
        y = frame.top + 4 + n * row_height
        width = value / top * frame.plot_width
        chart.boxes.append(
            Box(frame.left, y, _r(width), 14, series.css, f"{label}: {value:,}", value)
        )
        chart.texts.append(Text(frame.left - 6, y + 11, _cut(label), "end", "chat-label"))
        end = _r(frame.left + width + 4)
        chart.texts.append(Text(end, y + 11, short_number(value), "start"))
    chart.table = Table(list(head), [(label, [value]) for label, value in rows])
    if not rows:
        chart.empty = True
        chart.texts.append(_empty_text(frame, empty_text))
    return chart


def _fold(series: Sequence[tuple[str, list[int]]], other: str) -> list[tuple[str, list[int]]]:
    """At most MOST_LINES series: the rest (the fewest uses) added up as ``other``."""
    if len(series) <= MOST_LINES:
        return list(series)
    ranked = sorted(series, key=lambda item: -sum(item[1]))
    kept, rest = ranked[: MOST_LINES - 1], ranked[MOST_LINES - 1 :]
    summed = [sum(day) for day in zip(*(values for _name, values in rest), strict=True)]
    order = [name for name, _values in series]
    return [*sorted(kept, key=lambda item: order.index(item[0])), (other, summed)]


def lines(
    chart_id: str,
    title: str,
    desc: str,
    series: Sequence[tuple[str, list[int]]],
    columns: Sequence[str],
    labels: Sequence[str],
    captions: tuple[str, str],
    empty_text: str,
    other: str = "other keys",
) -> Chart:
    """One line per series over the columns (each series' css: ``chat-series-<n>``)."""
    frame = Frame(640, 230, 56, 8, 10, 46)
    folded = _fold(series, other)
    legend = [
        Series(f"chat-series-{n % PALETTE}", name, True) for n, (name, _v) in enumerate(folded)
    ]
    chart = Chart(chart_id, title, desc, frame, legend=legend)
    top = _y_axis(chart, max((max(v) for _name, v in folded), default=0), captions[1])
    slot = frame.plot_width / len(columns)
    centres = [frame.left + slot * (c + 0.5) for c in range(len(columns))]
    for one, (name, values) in zip(legend, folded, strict=True):
        points = [
            (_r(x), _r(frame.baseline - v / top * frame.plot_height))
            for x, v in zip(centres, values, strict=True)
        ]
        dots = [
            (x, y, f"{name}, {column}: {v:,}")
            for (x, y), v, column in zip(points, values, columns, strict=True)
        ]
        chart.lines.append(Line(" ".join(f"{x},{y}" for x, y in points), one.css, dots))
    _x_labels(chart, centres, labels, captions[0])
    chart.table = Table(
        [captions[0], *(name for name, _v in folded)],
        [(column, [v[c] for _name, v in folded]) for c, column in enumerate(columns)],
    )
    if not any(any(v) for _name, v in folded):
        chart.empty = True
        chart.texts.append(_empty_text(frame, empty_text))
    return chart
