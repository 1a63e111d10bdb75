"""Drawings for the quality pages, as inline SVG (no external assets): the coverage map and the
trend of snapshots.

The coverage map is a symbol x day grid; pure: takes what quality.services.coverage_grid returns.
Runs of neighbouring days in the same state are one rectangle, so a mostly complete year of 100
symbols is a few thousand elements instead of 33,000; a click is turned into (symbol, day) by
static/quality/coverage.js.
"""

import json
from datetime import date
from html import escape
from urllib.parse import quote

LABEL_W, HEAD_H, ROW_H = 110, 18, 14
COLOURS = {  # state: (fill, legend text)
    "complete": ("#2e7d32", "complete"),
    "most": ("#9ccc65", "≥ 90 % stored"),
    "half": ("#fbc02d", "50–90 % stored"),
    "little": ("#fb8c00", "< 50 % stored"),
    "missing": ("#c62828", "nothing stored"),
    "no_data": ("url(#no-data)", "the exchange had no data"),
    "none": ("#f3f3f3", "not expected (before the beginning date or not closed yet)"),
}
QUARANTINE = "#7b1fa2"


def cell_state(stored: int, expected: int, no_data: int) -> str:
    if expected == 0:
        return "no_data" if no_data else "none"
    if stored >= expected:
        return "complete"
    if stored == 0:
        return "missing"
    ratio = stored / expected
    return "most" if ratio >= 0.9 else "half" if ratio >= 0.5 else "little"


def _describe(symbol: str, first: date, last: date, state: str, stored: int, expected: int,
              no_data: int, quarantined: int) -> str:
    days = f"{first}" if first == last else f"{first} – {last}"
    text = f"{symbol} {days}: {COLOURS[state][1]}"
    if first == last and state not in ("none",):
        text += f" ({stored}/{expected} stored"
        text += f", {no_data} with no data" if no_data else ""
        text += f", {quarantined} quarantined)" if quarantined else ")"
    elif quarantined:
        text += f"; {quarantined} quarantined"
    return text


def coverage_svg(grid: dict, *, day_url: str) -> str:
    """The map as an <svg> element; `day_url` holds SYMBOL and 0000-00-00 placeholders.

    data-symbols lists each row's symbol already URL-encoded as a path segment (a feed name may
    hold '/', '?', '#', '%' or spaces), so the click script only substitutes it."""
    days, rows = grid["days"], grid["rows"]
    cell_w = max(2, min(16, 1000 // max(len(days), 1)))  # fits beside the admin's sidebar
    width, height = LABEL_W + cell_w * len(days) + 4, HEAD_H + ROW_H * len(rows) + 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="coverage-map" width="{width}" height="{height}" '
        f'role="img" aria-label="coverage map" data-first-day="{days[0] if days else ""}" '
        f'data-days="{len(days)}" data-cell-w="{cell_w}" data-left="{LABEL_W}" data-top="{HEAD_H}" '
        f'data-row-h="{ROW_H}" '
        f'data-day-url="{escape(day_url)}" '
        f'data-symbols="{escape(json.dumps([quote(s, safe="") for s, _ in rows]))}" '
        f'font-family="sans-serif" font-size="10" shape-rendering="crispEdges">',
        '<defs><pattern id="no-data" width="4" height="4" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="4" height="4" fill="#d6d6d6"/>'
        '<line x1="0" y1="0" x2="0" y2="4" stroke="#9e9e9e" stroke-width="2"/></pattern></defs>',
    ]
    label_end = 0
    for i, day in enumerate(days):  # month ticks, labelled where there is room
        if day.day == 1 or i == 0:
            x = LABEL_W + i * cell_w
            out.append(f'<line x1="{x}" y1="13" x2="{x}" y2="{height}" stroke="#ddd"/>')
            if x >= label_end:
                out.append(f'<text x="{x}" y="11">{day:%Y-%m}</text>')
                label_end = x + 46
    for r, (symbol, cells) in enumerate(rows):
        y = HEAD_H + r * ROW_H
        name = escape(symbol)
        out.append(f'<text x="2" y="{y + ROW_H - 3}">{name}</text>')
        i = 0
        while i < len(cells):
            stored, expected, no_data, quarantined = cells[i]
            state = cell_state(stored, expected, no_data)
            j = i
            # Runs of whole days alike; a day with quarantined rows or partly without data stands alone.
            alone = quarantined or (no_data and state != "no_data")
            if state in ("complete", "none", "no_data", "missing") and not alone:
                while j + 1 < len(cells) and not cells[j + 1][3] and cell_state(*cells[j + 1][:3]) == state \
                        and (state == "no_data" or not cells[j + 1][2]):
                    j += 1
            x = LABEL_W + i * cell_w
            title = _describe(name, days[i], days[j], state, stored, expected, no_data, quarantined)
            out.append(f'<rect x="{x}" y="{y + 1}" width="{(j - i + 1) * cell_w - (cell_w > 4)}" '
                       f'height="{ROW_H - 2}" fill="{COLOURS[state][0]}"><title>{title}</title></rect>')
            if quarantined:
                out.append(f'<rect x="{x}" y="{y + 1}" width="{max(cell_w - 1, 2)}" height="3" '
                           f'fill="{QUARANTINE}"/>')
            i = j + 1
    out.append("</svg>")
    return "".join(out)


def legend_html() -> str:
    """Swatches as small SVGs (the Content-Security-Policy blocks style attributes)."""
    hatch = ('<defs><pattern id="legend-no-data" width="4" height="4" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="4" height="4" fill="#d6d6d6"/>'
             '<line x1="0" y1="0" x2="0" y2="4" stroke="#9e9e9e" stroke-width="2"/></pattern></defs>')
    items = [(fill, text) for fill, text in COLOURS.values()]
    items.append((QUARANTINE, "has quarantined rows (top bar)"))
    out = []
    for fill, text in items:
        defs = hatch if fill.startswith("url") else ""
        fill = "url(#legend-no-data)" if defs else fill
        out.append(f'<span class="legend-item"><svg width="12" height="12" aria-hidden="true">{defs}'
                   f'<rect width="12" height="12" fill="{fill}"/></svg>{escape(text)}</span>')
    return "".join(out)


def trend_svg(points: list[tuple], *, width: int = 640, height: int = 120) -> str:
    """Score (0-100, green) and completeness (0-1, blue) of snapshots [(taken_at, score,
    completeness), ...] oldest first, on one 0-100 % axis."""
    if len(points) < 2:
        return '<p class="help">The trend appears after two snapshots.</p>'
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0).total_seconds() or 1

    def line(values, colour):
        coords = " ".join(f"{(t - t0).total_seconds() / span * (width - 40) + 36:.1f},"
                          f"{height - 14 - v / 100 * (height - 24):.1f}" for t, v in values)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'

    axis = "".join(f'<text x="0" y="{height - 11 - v / 100 * (height - 24):.0f}">{v}%</text>'
                   f'<line x1="34" x2="{width}" y1="{height - 14 - v / 100 * (height - 24):.0f}" '
                   f'y2="{height - 14 - v / 100 * (height - 24):.0f}" stroke="#eee"/>' for v in (0, 50, 100))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="9" '
            f'font-family="sans-serif" role="img" aria-label="quality trend">{axis}'
            f'{line([(t, s) for t, s, _ in points], "#2e7d32")}'
            f'{line([(t, c * 100) for t, _, c in points if c is not None], "#1565c0")}'
            f'<text x="36" y="{height - 2}">{t0:%Y-%m-%d %H:%M}</text>'
            f'<text x="{width - 90}" y="{height - 2}">{t1:%Y-%m-%d %H:%M} UTC</text></svg>')
