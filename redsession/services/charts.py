"""Charts as SVG text, drawn on the server: the dashboard needs no script and no other host."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 180
_PAD_LEFT, _PAD_BOTTOM, _PAD_TOP = 48, 28, 10


def _frame(title: str, body: list[str], width: int, height: int) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width * 1.5:g}px" class="chart">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def _axis(top: float, width: int, height: int) -> list[str]:
    base = height - _PAD_BOTTOM
    return [
        f'<line x1="{_PAD_LEFT}" y1="{base}" x2="{width}" y2="{base}" class="axis"/>',
        f'<text x="{_PAD_LEFT - 4}" y="{_PAD_TOP + 8}" text-anchor="end" class="tick">'
        f"{_short(top)}</text>",
        f'<text x="{_PAD_LEFT - 4}" y="{base}" text-anchor="end" class="tick">0</text>',
    ]


def bars(
    title: str,
    series: Sequence[tuple[str, Sequence[float]]],
    labels: Sequence[str],
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
    every: int = 1,
) -> Markup:
    """Grouped bars: one group per label, one bar per series (named by a CSS class).

    Each bar carries its value in a <title> (hover) and a data-value attribute.
    """
    top = max([v for _, values in series for v in values] + [1])
    inner_w, inner_h = width - _PAD_LEFT, height - _PAD_BOTTOM - _PAD_TOP
    group = inner_w / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    body = _axis(top, width, height)
    for i, label in enumerate(labels):
        x0 = _PAD_LEFT + i * group + group * 0.1
        for j, (name, values) in enumerate(series):
            v = values[i]
            h = inner_h * v / top
            y = _PAD_TOP + inner_h - h
            body.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{h:.1f}" class="bar {escape(name)}" data-label="{escape(label)}" '
                f'data-value="{v:g}"><title>{escape(label)}: {v:g} {escape(name)}</title></rect>'
            )
        if i % every == 0:
            body.append(
                f'<text x="{x0 + group * 0.4:.1f}" y="{height - 10}" text-anchor="middle" '
                f'class="tick">{escape(label)}</text>'
            )
    return _frame(title, body, width, height)


def line(
    title: str,
    points: Sequence[tuple[str, float]],
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """A line over evenly spaced points (label, value); first and last labels shown."""
    if not points:
        body = [f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no samples yet'
                "</text>"]  # fmt: skip
        return _frame(title, body, width, height)
    top = max(v for _, v in points) or 1
    inner_w, inner_h = width - _PAD_LEFT, height - _PAD_BOTTOM - _PAD_TOP
    step = inner_w / max(len(points) - 1, 1)
    xy = [
        (_PAD_LEFT + i * step, _PAD_TOP + inner_h - inner_h * v / top)
        for i, (_, v) in enumerate(points)
    ]
    body = _axis(top, width, height)
    body.append(
        '<polyline fill="none" class="line" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        + '"/>'
    )
    for (x, y), (label, v) in zip(xy, points):
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" class="dot" data-value="{v:g}">'
            f"<title>{escape(label)}: {_short(v)}</title></circle>"
        )
    for (x, _), (label, _) in ((xy[0], points[0]), (xy[-1], points[-1])):
        body.append(
            f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
    return _frame(title, body, width, height)


def _short(v: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:g}"
