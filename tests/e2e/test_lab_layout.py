"""End to end: the collapse lab's layout on a wide and on a narrow screen. Each part of the lab (its segmented
control) is opened in turn; no button's label is cut off, nothing is wider than the screen, no two texts on the
rate–distortion plane overlap, and the runs table shows every column on a wide screen. Screenshots of each part
go to tests/e2e/screenshots/lab_<width>_<part>.png. Uses the server fixture of test_browser.py (its own server for this module)."""
from __future__ import annotations

import pytest

from test_browser import SHOTS, browser, lab_section, no_exception, server, settled, visit  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover — test_browser's fixtures skip (or fail, in CI) without it
    expect = None

SECTIONS = {"overview": ("Overview", "Rate–distortion plane"), "kl": ("KL per dimension & replay", "Watch it happen"),
            "pictures": ("Side by side", "Side by side"), "surgery": ("ELBO surgery", "Where the rate goes"),
            "ppca": ("pPCA", "Collapse without any optimisation problem")}  # key: (its button, its last heading)

# Buttons and links (and their labels) in the page whose text is wider than their box: cut off, with an ellipsis
CUT_OFF = """() => [...document.querySelectorAll(
    '[data-testid="stMain"] button, [data-testid="stMain"] [data-testid="stPageLink"] a')]
  .filter(b => b.offsetParent !== null)
  .filter(b => [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0))
  .map(b => b.innerText.trim() || b.getAttribute('aria-label'))"""
# The R–D plane's texts (points' names and notes, not its axes or legend) as drawn: pairs whose boxes overlap
TEXTS_OVERLAP = """() => {
  const boxes = [...document.querySelectorAll('[data-testid="stVegaLiteChart"] .mark-text.role-mark text')]
    .filter(t => t.textContent).map(t => [t.textContent, t.getBoundingClientRect()]);
  const hit = [];
  boxes.forEach(([a, p], i) => boxes.slice(i + 1).forEach(([b, q]) => {
    if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) hit.push([a, b]); }));
  return [boxes.length, hit]; }"""
TABLE_SCROLLS = """() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stDataFrame"] .dvn-scroller')]
  .map(s => s.scrollWidth > s.clientWidth + 1)"""


def shot_at(pg, name: str, width: int, height: int) -> None:
    """A full-page screenshot at this width (Streamlit scrolls inside its main container: grow the viewport), once
    every picture has loaded (they set the page's height)."""
    pg.wait_for_function("() => [...document.images].every(i => i.complete)")
    full = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                       " return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0); }")
    pg.set_viewport_size({"width": width, "height": min(int(full) + 40, 8000)})
    settled(pg)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    pg.set_viewport_size({"width": width, "height": height})


@pytest.mark.parametrize("width, height", [(1400, 1000), (420, 900)])
def test_every_part_of_the_lab_fits_the_screen_with_whole_labels(browser, server, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = visit(browser, server, "collapse", "Posterior-collapse lab", context=context)
    for key, (name, heading) in SECTIONS.items():
        lab_section(pg, name)
        expect(pg.locator("h3", has_text=heading).first).to_be_attached()
        pg.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
        settled(pg)
        no_exception(pg)
        assert pg.evaluate(CUT_OFF) == [], (width, name)
        assert pg.evaluate("() => document.documentElement.scrollWidth") <= width, (width, name)
        if key == "overview":
            texts, overlapping = pg.evaluate(TEXTS_OVERLAP)
            assert texts >= 10 and overlapping == [], (width, overlapping)  # as drawn, not as estimated
            scrolls = pg.evaluate(TABLE_SCROLLS)
            assert scrolls == [width < 1000], (width, scrolls)  # every column in view on a wide screen
        shot_at(pg, f"lab_{width}_{key}", width, height)
    context.close()
