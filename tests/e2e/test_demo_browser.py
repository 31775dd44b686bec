"""End to end, the lecture demo of posterior collapse in Chromium: `?demo=collapse` on the app's root opens it, the
arrow keys step both runs' replays through the epochs (first and last epoch screenshotted), leaving it for another
page is not bounced back, and presentation mode hides the sidebar and shows one panel per screen, stepped by the
keyboard. Screenshots: tests/e2e/screenshots/demo-*.png. Uses the server fixture of test_browser.py (its own
server for this module)."""
from __future__ import annotations

import time

from test_browser import browser, no_exception, server, settled, shot  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover — test_browser's fixtures skip (or fail, in CI) without it
    expect = None

TITLE = "Posterior collapse: a lecture demo"


def open_demo(browser, server, path: str):
    """A new browser context at `path`; (page, seconds from the request to the app's idle state with the title)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    t0 = time.monotonic()
    pg.goto(f"{server}/{path}")
    expect(pg.locator("h1", has_text=TITLE).first).to_be_visible(timeout=120_000)
    expect(pg.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=120_000)
    settled(pg)
    return pg, time.monotonic() - t0


def heading(pg, text: str) -> None:
    expect(pg.locator("h3", has_text=text).first).to_be_visible(timeout=60_000)
    settled(pg)


def press(pg, key: str) -> None:
    """A key pressed on the page itself (nothing focused), as a presenter does."""
    pg.evaluate("() => document.activeElement && document.activeElement.blur()")
    pg.keyboard.press(key)


def test_demo_link_opens_the_demo_and_the_arrow_keys_step_its_epochs(browser, server):
    first, cold = open_demo(browser, server, "?demo=collapse")  # a fresh server: loads torch and the runs
    first.context.close()
    pg, warm = open_demo(browser, server, "?demo=collapse")
    print(f"demo open to idle: {cold:.1f} s on a fresh server, {warm:.1f} s on a warm one")
    no_exception(pg)
    assert "/demo" in pg.url and "demo=collapse" in pg.url
    heading(pg, "Training replay — epoch 1 of 20")
    expect(pg.get_by_text("epoch 1: 16 of 16 units active").first).to_be_visible()
    assert pg.locator('[data-testid="stImage"]').count() == 4
    shot(pg, "demo-first-epoch")
    press(pg, "ArrowRight")
    heading(pg, "Training replay — epoch 2 of 20")
    press(pg, "ArrowLeft")
    heading(pg, "Training replay — epoch 1 of 20")
    for epoch in range(2, 21):
        press(pg, "ArrowRight")
        heading(pg, f"Training replay — epoch {epoch} of 20")
    expect(pg.get_by_text("epoch 20: 13 of 16 units active").first).to_be_visible()
    expect(pg.get_by_text("epoch 20: 16 of 16 units active").first).to_be_visible()
    no_exception(pg)
    shot(pg, "demo-last-epoch")
    pg.locator('[data-testid="stSidebarNav"] a', has_text="Overview").first.click()  # leaving is not bounced back
    expect(pg.locator("h1", has_text="VAE latent-space explorer").first).to_be_visible(timeout=60_000)
    settled(pg)
    assert pg.locator("h1", has_text=TITLE).count() == 0
    pg.context.close()


def test_presentation_mode_hides_the_chrome_and_steps_panels_by_keyboard(browser, server):
    pg, _ = open_demo(browser, server, "demo?demo=collapse&present=1")
    no_exception(pg)
    expect(pg.locator('[data-testid="stSidebar"]')).to_be_hidden()
    expect(pg.locator('[data-testid="stHeader"]')).to_be_hidden()
    heading(pg, "Training replay — epoch 1 of 20")
    assert pg.locator("h3", has_text="Rate–distortion plane").count() == 0  # one panel per screen
    size = pg.evaluate("() => parseFloat(getComputedStyle(document.querySelector("
                       "'[data-testid=\"stMain\"] [data-testid=\"stCaptionContainer\"]')).fontSize)")
    assert size >= 17  # large fonts
    for epoch in range(2, 7):  # one key at a time: a press while the page reruns is folded into that rerun
        press(pg, "ArrowRight")
        heading(pg, f"Training replay — epoch {epoch} of 20")
    shot(pg, "demo-presentation")
    press(pg, "PageDown")
    heading(pg, "Reconstructions and samples")
    shot(pg, "demo-presentation-pictures")
    press(pg, "ArrowDown")
    heading(pg, "Rate–distortion plane")
    expect(pg.locator('[data-testid="stVegaLiteChart"] .role-legend-label text', has_text="cured").first).to_be_attached()
    shot(pg, "demo-presentation-rd")
    press(pg, "ArrowUp")
    heading(pg, "Reconstructions and samples")
    pg.locator(".st-key-demo_exit button").first.click()
    expect(pg.locator('[data-testid="stSidebar"]')).to_be_visible()
    heading(pg, "Rate–distortion plane")  # every panel again
    no_exception(pg)
    pg.context.close()
