"""The HTML report page (``core.report_html``): the four charts the issue names, each with a
text alternative, every figure also as a table, withheld cells never drawn, and nothing that
loads from anywhere (no script, style sheet, font, image or URL in CSS)."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.test_monitoring_figures import NOW, trajectory
from wor_bridge.core.monitoring import compute
from wor_bridge.core.monitoring_settings import MonitoringSettings, Target
from wor_bridge.core.report_html import to_html


class _Page(HTMLParser):
    """Tags with their attributes, and the text of every ``<title>``/``<desc>`` in an SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record the tag; remember an SVG title/desc by its id."""
        self.tags.append((tag, dict(attrs)))
        if tag in ("title", "desc") and dict(attrs).get("id"):
            self._open = dict(attrs)["id"]

    def handle_data(self, data: str) -> None:
        """Text of the open title/desc."""
        if self._open is not None:
            self.texts[self._open] = self.texts.get(self._open, "") + data

    def handle_endtag(self, tag: str) -> None:
        """Close a title/desc."""
        if tag in ("title", "desc"):
            self._open = None


def _page() -> tuple[str, _Page, int]:
    target = Target(unit="municipality", value="Tiel", year=2026, referrals=40,
                    coach_hours_per_week=8)  # fmt: skip
    items = [trajectory(i, first_contact_days=i % 20 + 1,
                        reasons=("eenzaamheid", "vastlopen") if i % 2 else ("eenzaamheid",))
             for i in range(30)] + [trajectory(99, municipality="Culemborg")]  # fmt: skip
    report = compute(items, period="year", breakdown="municipality",
                     settings=MonitoringSettings(targets=(target,)), now=NOW)  # fmt: skip
    html = to_html(report)
    page = _Page()
    page.feed(html)
    return html, page, sum(1 for f in report.figures if f.cells)


def test_the_four_charts_have_text_alternatives() -> None:
    """Funnel, days to first contact, reasons (with n) and target/capacity are SVG charts, each
    ``role=img`` and labelled by a title and a description that give the values in words."""
    _html, page, _tables = _page()
    charts = [a for tag, a in page.tags if tag == "svg"]
    ids = [str(a["aria-labelledby"]) for a in charts]
    assert [i.split()[0] for i in ids] == [
        "c-funnel-t", "c-first_contact_days-t", "c-reasons-t", "c-target-t",
    ]  # fmt: skip
    for chart, labels in zip(charts, ids, strict=True):
        assert chart["role"] == "img"
        title, desc = labels.split()
        assert page.texts[title].strip()
        assert page.texts[desc].strip()
    assert "n = 31" in page.texts["c-reasons-d"]
    assert "eenzaamheid: 100% (31); vastlopen: 48.4% (15)" in page.texts["c-reasons-d"]
    assert "streefaantal 40" in page.texts["c-target-d"]
    assert "8 coachuren per week" in page.texts["c-target-d"]


def test_every_figure_is_also_a_table_and_withheld_cells_are_not_drawn() -> None:
    """One table per figure with cells; the single Culemborg referral shows only as withheld."""
    html, page, tables = _page()
    assert sum(1 for tag, _a in page.tags if tag == "table") == tables >= 12
    assert "Culemborg" in html
    assert "&lt;5*" in html
    assert "Culemborg: 1" not in html


def test_the_page_loads_nothing_from_anywhere() -> None:
    """No script, link, image, object, iframe or font; no URL in CSS; only the SVG namespace."""
    html, page, _tables = _page()
    banned = {"script", "link", "img", "object", "iframe", "embed", "audio", "video", "source"}
    assert not [tag for tag, _a in page.tags if tag in banned]
    assert not [a for _t, a in page.tags if any(k in a for k in ("src", "href", "srcset"))]
    lowered = html.lower()
    assert "url(" not in lowered
    assert "@import" not in lowered
    assert "@font-face" not in lowered
    assert lowered.count("http") == lowered.count("http://www.w3.org/2000/svg")
