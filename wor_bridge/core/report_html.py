"""A monitoring ``Report`` as one self-contained HTML page with server-side SVG charts. Pure.

No script, no font, no image or style sheet from anywhere: the CSS is inline, the charts are SVG
written here, text uses the reader's own sans-serif font. Every chart has a ``<title>`` and a
``<desc>`` that say in words what it shows (``role="img"``), and every figure is also a table, so
nothing depends on seeing the chart. Withheld cells show as "<n" and are never drawn. Prints
readably (black on white, no background colours needed, charts kept on one page).
"""

from __future__ import annotations

from html import escape
from typing import Final

from wor_bridge.core.monitoring import Cell, Figure, Report
from wor_bridge.core.monitoring_grid import TOTAL

STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#111;background:#fff}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #888;padding:.2rem .4rem;text-align:right}th{background:#eee}
td.l,th.l{text-align:left}.meta{color:#333;font-size:.9rem}
svg{max-width:100%;height:auto}svg text{font-family:system-ui,sans-serif;font-size:12px}
figure{margin:1rem 0;break-inside:avoid}figcaption{font-size:.9rem}
@media print{body{margin:0}h2{break-after:avoid}th{background:none}}
"""
BAR: Final = "#2b5f8a"
TARGET: Final = "#c47a00"


def _fmt(cell: Cell, threshold: int) -> str:
    if cell.suppressed:
        return f"&lt;{threshold}*" if cell.count is None and cell.value is None else "*"
    if cell.value is not None:
        text = f"{cell.value:g}"
    elif cell.count is not None:
        text = str(cell.count)
    else:
        return ""
    if cell.percent is not None:
        text += f" ({cell.percent:g}%)"
    return text


def _by_period_and_group(figure: Figure) -> dict[str, dict[str, dict[str, Cell]]]:
    """The cells of each period and group by category (periods and groups in the order they
    come first; the last cell of a category wins)."""
    out: dict[str, dict[str, dict[str, Cell]]] = {}
    for c in figure.cells:
        out.setdefault(c.period, {}).setdefault(c.group, {})[c.category] = c
    return out


def _table(figure: Figure, report: Report) -> str:
    cats = list(dict.fromkeys(row[2] for row in figure.cells.rows))
    head = "".join(f"<th scope='col'>{escape(c)}</th>" for c in cats)
    rows = []
    for period, groups in _by_period_and_group(figure).items():
        for group, mine in groups.items():
            tds = "".join(
                f"<td>{_fmt(mine[c], report.threshold) if c in mine else ''}</td>" for c in cats
            )
            rows.append(
                f"<tr><th scope='row' class='l'>{escape(period)}</th>"
                f"<td class='l'>{escape(group)}</td>{tds}</tr>"
            )
    return (
        f"<table><caption class='l'>{escape(figure.title)}</caption><thead><tr>"
        f"<th scope='col' class='l'>periode</th><th scope='col' class='l'>groep</th>{head}</tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _bars(
    chart_id: str, title: str, desc: str, bars: list[tuple[str, float, str]], scale: float
) -> str:
    """A horizontal bar chart: (label, value, text next to the bar)."""
    height = 28 * len(bars) + 20
    parts = [
        f"<svg role='img' aria-labelledby='{chart_id}-t {chart_id}-d' width='640' "
        f"height='{height}' viewBox='0 0 640 {height}' xmlns='http://www.w3.org/2000/svg'>",
        f"<title id='{chart_id}-t'>{escape(title)}</title>",
        f"<desc id='{chart_id}-d'>{escape(desc)}</desc>",
    ]
    for i, (label, value, text) in enumerate(bars):
        y = 10 + 28 * i
        width = 0 if scale <= 0 else max(0.0, 360 * value / scale)
        parts.append(
            f"<text x='0' y='{y + 15}'>{escape(label)}</text>"
            f"<rect x='190' y='{y}' width='{width:.1f}' height='20' fill='{BAR}'/>"
            f"<text x='{196 + width:.1f}' y='{y + 15}'>{escape(text)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _total(figure: Figure, period: str) -> list[Cell]:
    return [c for c in figure.cells if c.period == period and c.group == TOTAL]


def _chart(figure: Figure, period: str, threshold: int) -> str:
    cells = _total(figure, period)
    if not cells:
        return ""
    shown = [c for c in cells if c.count is not None]
    hidden = [c.category for c in cells if c.count is None]
    denom = next((c.denominator for c in cells if c.denominator is not None), None)
    if figure.id == "reasons":
        cells = sorted(cells, key=lambda c: -(c.count or 0))
        shown = [c for c in cells if c.count is not None]
        bars = [(c.category, c.percent or 0.0, f"{c.percent:g}% ({c.count})" if c.percent
                 is not None else str(c.count)) for c in shown]  # fmt: skip
        scale = 100.0
    else:
        bars = [(c.category, float(c.count or 0), str(c.count)) for c in shown]
        scale = float(max((c.count or 0) for c in shown)) if shown else 0.0
    words = "; ".join(text_of(label, text) for label, _v, text in bars)
    if hidden:
        words += f"; niet getoond (kleiner dan {threshold} of herleidbaar): {', '.join(hidden)}"
    base = f" van n = {denom}" if denom is not None else ""
    desc = f"{figure.title}, {period}, alle verwijzingen{base}: {words}."
    caption = f"{figure.title} ({period}{base}). Eenheid: {figure.unit}."
    if figure.note:
        caption += f" {figure.note}."
    svg = _bars(f"c-{figure.id}", f"{figure.title}, {period}", desc, bars, scale)
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def text_of(label: str, text: str) -> str:
    """``label: text`` for a chart's text alternative."""
    return f"{label}: {text}"


def _target_chart(figure: Figure, period: str) -> str:
    groups = _by_period_and_group(figure).get(period, {})
    if not groups:
        return ""
    rows: list[tuple[str, int | None, float, float]] = []
    for group, mine in groups.items():
        rows.append(
            (group, mine["referrals"].count, mine["target"].value or 0.0,
             mine["coach_hours_per_week"].value or 0.0)
        )  # fmt: skip
    scale = max(*(r[2] for r in rows), *(r[1] or 0 for r in rows), 1.0)
    height = 44 * len(rows) + 20
    words = "; ".join(
        f"{g}: {'niet getoond' if n is None else n} verwijzingen, streefaantal {t:g}, "
        f"{h:g} coachuren per week"
        for g, n, t, h in rows
    )
    parts = [
        f"<svg role='img' aria-labelledby='c-target-t c-target-d' width='640' height='{height}' "
        f"viewBox='0 0 640 {height}' xmlns='http://www.w3.org/2000/svg'>",
        f"<title id='c-target-t'>Verwijzingen naast streefaantal en capaciteit, {period}</title>",
        f"<desc id='c-target-d'>{escape(words)}.</desc>",
    ]
    for i, (group, count, target, hours) in enumerate(rows):
        y = 10 + 44 * i
        w_n = 0.0 if count is None else 300 * count / scale
        w_t = 300 * target / scale
        parts.append(
            f"<text x='0' y='{y + 14}'>{escape(group)}</text>"
            f"<rect x='190' y='{y}' width='{w_n:.1f}' height='16' fill='{BAR}'/>"
            f"<text x='{196 + w_n:.1f}' y='{y + 13}'>"
            f"{'niet getoond' if count is None else count} verwezen</text>"
            f"<rect x='190' y='{y + 18}' width='{w_t:.1f}' height='16' fill='none' "
            f"stroke='{TARGET}' stroke-width='2' stroke-dasharray='4 2'/>"
            f"<text x='{196 + w_t:.1f}' y='{y + 31}'>streef {target:g}; {hours:g} coachuur/week"
            "</text>"
        )
    parts.append("</svg>")
    return (
        f"<figure>{''.join(parts)}<figcaption>Verwijzingen (blauw) naast het streefaantal voor "
        f"de periode (gestreept) en de coachuren per week, {escape(period)}. Meer verwijzingen is "
        "geen doel op zich.</figcaption></figure>"
    )


CHARTS: Final = ("funnel", "first_contact_days", "reasons")


def to_html(report: Report) -> str:
    """The whole page."""
    latest = report.periods[-1] if report.periods else ""
    by_id = {f.id: f for f in report.figures}
    charts = "".join(_chart(by_id[i], latest, report.threshold) for i in CHARTS)
    charts += _target_chart(by_id["target"], latest)
    sections = "".join(
        f"<section><h2 id='f-{f.id}'>{escape(f.title)}</h2><p class='meta'>Eenheid: "
        f"{escape(f.unit)}. Noemer: {escape(f.denominator)}."
        f"{(' ' + escape(f.note) + '.') if f.note else ''}</p>{_table(f, report)}</section>"
        for f in report.figures
        if f.cells
    )
    periods = ", ".join(report.periods) or "geen verwijzingen"
    return (
        "<!DOCTYPE html><html lang='nl'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Welzijn op Recept: monitoring</title><style>{STYLE}</style></head><body>"
        "<main><h1>Welzijn op Recept: monitoring</h1>"
        f"<p class='meta'>Periode: per {escape(report.period)} ({escape(periods)}). "
        f"Uitsplitsing: {escape(report.breakdown)}. Bereik: {escape(report.scope)}. "
        f"Gemaakt: {report.generated_at.isoformat(timespec='minutes')}. Aantallen van 1 tot "
        f"{report.threshold} worden niet getoond (&lt;{report.threshold}*), en andere "
        "waaruit ze te herleiden zouden zijn (*); een percentage alleen bij een noemer van ten "
        f"minste {report.threshold}.</p>"
        f"<h2>Grafieken: {escape(latest)}, alle verwijzingen</h2>{charts}{sections}"
        "</main></body></html>"
    )
