"""Spend charts as inline SVG, drawn on the server: no script, no CDN, readable by screen
readers (each chart has a title and its figures are also in a table next to it)."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from aig_common.money import NANO_PER_USD

BAR = "#2563eb"
GRID = "#d4d4d8"
TEXT = "#3f3f46"


def dollars(nano_usd: int) -> str:
    """Money as a person reads it on a chart: cents, or two significant digits below a cent
    ($0.000035), never a misleading $0.00 for a small but real spend."""
    if 0 < nano_usd < NANO_PER_USD // 100:
        places = 2
        while places < 9 and nano_usd * 10**places < NANO_PER_USD * 10:
            places += 1
        unit = NANO_PER_USD // 10**places
        rounded = (nano_usd + unit // 2) // unit
        return f"$0.{rounded:0{places}d}"
    cents = (nano_usd + 5_000_000) // 10_000_000
    return f"${cents // 100:,}.{cents % 100:02d}"


def daily_bars(title: str, days: list[tuple[str, int]]) -> Markup:
    """One bar per day (oldest first); labels on the first, middle and last day."""
    width, height, left, bottom, top = 640, 200, 84, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    spent = max((amount for _, amount in days), default=0)
    peak = spent or 1
    slot = plot_w / max(len(days), 1)
    parts = [_frame(title, width, height)]
    # Without spend only the zero line: gridlines at fractions of nothing would mislead.
    for fraction in (0.0, 0.5, 1.0) if spent else (0.0,):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(dollars(int(peak * fraction)))}</text>"
        )
    labelled = {0, len(days) // 2, len(days) - 1}
    for index, (day, amount) in enumerate(days):
        bar_h = plot_h * amount / peak
        x = left + index * slot
        parts.append(
            f'<rect x="{x + slot * 0.15:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{max(slot * 0.7, 1):.1f}" height="{bar_h:.1f}" fill="{BAR}">'
            f"<title>{escape(day)}: {escape(dollars(amount))}</title></rect>"
        )
        if index in labelled:
            anchor = "start" if index == 0 else "end" if index == len(days) - 1 else "middle"
            label_x = x if anchor == "start" else x + slot if anchor == "end" else x + slot / 2
            parts.append(
                f'<text x="{label_x:.1f}" y="{height - 8}" text-anchor="{anchor}">'
                f"{escape(day[5:])}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def ranked_bars(title: str, items: list[tuple[str, int]], limit: int = 8) -> Markup:
    """Horizontal bars, largest first: spend by model or by key."""
    shown = sorted(items, key=lambda item: -item[1])[:limit]
    row, width, label_w, value_w = 30, 440, 150, 86
    height = max(row * len(shown), row) + 8
    peak = max((amount for _, amount in shown), default=0) or 1
    parts = [_frame(title, width, height)]
    if not shown:
        parts.append('<text x="0" y="20">No spend in this period.</text>')
    for index, (label, amount) in enumerate(shown):
        y = index * row + 4
        bar_w = (width - label_w - value_w) * amount / peak
        short = label if len(label) <= 20 else label[:19] + "…"
        parts.append(
            f'<text x="0" y="{y + 17}">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{max(bar_w, 1):.1f}" height="{row - 10}" '
            f'fill="{BAR}" rx="2"><title>{escape(label)}: {escape(dollars(amount))}</title></rect>'
            f'<text x="{width - 4}" y="{y + 17}" text-anchor="end">{escape(dollars(amount))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _frame(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif" font-size="13" fill="{TEXT}">'
        f"<title>{escape(title)}</title>"
    )
