"""End to end, several browser sessions on one server: a run started in one browser context never shows up in
another's model list (but stays in its own across reloads and browser restarts), and a file name holding HTML
or an address holding Markdown is shown as text (no element, no script, no request). Uses the server fixture of test_browser.py (its own server for this module).
"""
from __future__ import annotations

import io
import re
import time
from urllib.parse import quote

import numpy as np

from test_browser import browser, choose, server, settled, shot, start_training  # noqa: F401
from vae_core.ui.text import WORD_JOINER

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover — test_browser's fixtures skip (or fail, in CI) without it
    expect = None

XSS = "<img src=x onerror=alert(1)>"
DIALOGS: list[str] = []  # alert()/confirm() messages seen by any page of this module


def open_session(browser, server, path: str = "train", storage_state=None):
    """A new browser context (its own cookies and websocket: its own Streamlit session) on `path`; given a
    `storage_state`, with those cookies."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, storage_state=storage_state)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("dialog", lambda d: (DIALOGS.append(d.message), d.dismiss()))
    page.goto(f"{server}/{path}")
    expect(page.locator("h1", has_text="Train a VAE").first).to_be_visible(timeout=120_000)
    settled(page)
    assert page.get_by_text("Page not found").count() == 0  # a deep link opens its page
    return context, page


def sidebar_models(page) -> list[str]:
    """The options of the sidebar's model selector, as listed when it is opened."""
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    options = page.locator('[role="option"]')
    expect(options.first).to_be_visible()
    texts = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return texts


def train_quick(page) -> None:
    """Train 2 epochs and wait until the new model is the sidebar's active one (the page activates it in a rerun
    after "Training finished" first shows, so that text alone can be read from the run before)."""
    start_training(page, 2)
    expect(page.get_by_text("Training finished: 2 epochs").first).to_be_visible(timeout=180_000)
    settled(page)
    deadline = time.monotonic() + 60
    while not any(m.startswith("run") for m in sidebar_models(page)) and time.monotonic() < deadline:
        settled(page)  # polls the app's state: the list is read again once the activating rerun has drawn


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_model_trained_in_one_browser_session_is_not_in_another(browser, server):
    ctx_a, a = open_session(browser, server)
    ctx_b, b = open_session(browser, server)
    try:
        assert not [m for m in sidebar_models(b) if m.startswith("run")]
        train_quick(a)
        no_exception(a)
        mine = [m for m in sidebar_models(a) if m.startswith("run")]
        assert len(mine) == 1
        # the other session, rerun and reloaded, still lists no run
        for _ in range(2):
            theirs = sidebar_models(b)
            assert theirs and not [m for m in theirs if m.startswith("run")], theirs
            b.reload()
            expect(b.locator("h1", has_text="Train a VAE").first).to_be_visible(timeout=120_000)
            settled(b)
        no_exception(b)
        # a third session opened after the training does not see it either
        ctx_c, c = open_session(browser, server)
        assert not [m for m in sidebar_models(c) if m.startswith("run")]
        ctx_c.close()
        # while the browser that trained it still lists its run after a reload (the same browser: its cookie)
        a.reload()
        expect(a.locator("h1", has_text="Train a VAE").first).to_be_visible(timeout=120_000)
        settled(a)
        assert [m for m in sidebar_models(a) if m.startswith("run")] == mine
    finally:
        ctx_a.close()
        ctx_b.close()


def test_an_uploaded_file_name_with_html_is_shown_as_text(browser, server):
    ctx, page = open_session(browser, server)
    try:
        choose(page, "Dataset", "upload a file")
        settled(page)
        buf = io.BytesIO()
        rng = np.random.default_rng(0)
        np.savez_compressed(buf, x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8))
        page.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').set_input_files(
            {"name": f"{XSS}.npz", "mimeType": "application/octet-stream", "buffer": buf.getvalue()})
        expect(page.get_by_text(f"{XSS}.npz").first).to_be_visible(timeout=60_000)
        settled(page)
        no_exception(page)
        assert page.locator('img[src="x"]').count() == 0  # no element was made from the name
        assert DIALOGS == []  # and no script ran
    finally:
        ctx.close()


def test_markdown_in_the_address_is_shown_as_text_and_fetches_nothing(browser, server):
    payloads = ["[Log in again](http://127.0.0.1:9/login)", "![x](http://127.0.0.1:9/x.png)",
                "<img src=http://127.0.0.1:9/h.png>", r"$\frac{1}{2}$ :red[big] :material/home:"]
    ctx, page = open_session(browser, server)
    requested = []
    ctx.on("request", lambda r: requested.append(r.url))
    try:
        for payload in payloads:
            page.goto(f"{server}/train?model={quote(payload, safe='')}")
            warning = page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]').first
            expect(warning).to_contain_text("There is no model called", timeout=120_000)
            settled(page)
            no_exception(page)
            assert f"no model called “{payload}”" in warning.inner_text().replace(WORD_JOINER, "")  # as typed
            assert warning.locator("a, img, .katex, span[role=img], [class*=Colored]").count() == 0, warning.inner_html()
            assert page.locator('a[href*="127.0.0.1:9"], img[src*="127.0.0.1:9"]').count() == 0
        assert not [u for u in requested if "127.0.0.1:9" in u], requested  # the browser fetched nothing
        assert DIALOGS == []
    finally:
        ctx.close()


def test_a_browsers_runs_stay_listed_after_it_restarts(browser, server):
    ctx, page = open_session(browser, server)
    try:
        train_quick(page)
        mine = [m for m in sidebar_models(page) if m.startswith("run")]
        assert len(mine) == 1
        saved = ctx.storage_state()
    finally:
        ctx.close()
    (cookie,) = [c for c in saved["cookies"] if c["name"] == "vae_browser"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and re.fullmatch(r"[0-9a-f]{32}", cookie["value"])
    assert 364 * 86400 < cookie["expires"] - time.time() <= 365 * 86400
    # a browser restart keeps persistent cookies and drops session cookies (Streamlit's own XSRF cookie)
    restarted = {**saved, "cookies": [c for c in saved["cookies"] if c["expires"] > 0]}
    assert {c["name"] for c in saved["cookies"]} - {c["name"] for c in restarted["cookies"]} == {"_streamlit_xsrf"}
    for state, expected in ((restarted, mine), (None, [])):  # the same browser, then another one
        ctx, page = open_session(browser, server, storage_state=state)
        try:
            assert [m for m in sidebar_models(page) if m.startswith("run")] == expected
            no_exception(page)
        finally:
            ctx.close()


def test_a_second_user_waits_in_line_and_is_told_when_their_run_should_start(browser, server):
    ctx_a, a = open_session(browser, server, "train?model=digits-2d")
    ctx_b, b = open_session(browser, server, "train?model=digits-2d")
    try:
        start_training(a, 1000)  # the server trains one model at a time: this one takes the worker
        expect(a.locator('[data-testid="stProgress"]').filter(has_text="left").first).to_be_visible()
        start_training(b, 2)
        queued = b.locator('[data-testid="stProgress"]').filter(has_text="next in line")
        expect(queued.first).to_be_visible()
        expect(queued.filter(has_text=re.compile(r"starts in about \d")).first).to_be_visible()
        expect(b.locator('[data-testid="stSidebar"]').get_by_text("Server: 1 training, 1 waiting").first).to_be_visible()
        # one training at a time per user: the second Train is refused with the reason
        expect(b.get_by_role("button", name="Train", exact=True)).to_be_disabled()
        expect(b.get_by_text("trains 1 model(s) at a time per user").first).to_be_visible()
        shot(b, "train_queued")
        a.get_by_role("button", name="Stop").click()  # the first user stops: the queue moves
        expect(b.get_by_text("Training finished: 2 epochs").first).to_be_visible(timeout=120_000)
        no_exception(a)
        no_exception(b)
    finally:
        ctx_a.close()
        ctx_b.close()
