"""End to end in a real browser: `streamlit run` in a subprocess, Chromium driven by Playwright.

Skips (with the reason) when Playwright or Chromium is missing, unless VAE_REQUIRE_BROWSER=1, which turns a
missing browser into a failure. Screenshots go to tests/e2e/screenshots/NAME.png (git-ignored).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("VAE_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("VAE_REQUIRE_BROWSER") == "1"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
STARTUP_TIMEOUT_S = 60


def _missing(reason: str):
    if REQUIRE:
        pytest.fail(f"VAE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if sync_playwright is None:
        _missing("the playwright package is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"Chromium was not found at {CHROMIUM} (apt install chromium, or set VAE_CHROMIUM)")
    port = _free_port()
    SHOTS.mkdir(exist_ok=True)
    log = open(SHOTS / "streamlit-server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.fileWatcherType", "none", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}; see tests/e2e/screenshots/streamlit-server.log")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer /_stcore/health within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        except Exception as err:  # noqa: BLE001
            _missing(f"Chromium could not be started ({err})")
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        expect.set_options(timeout=30_000)  # a cold start loads Fashion-MNIST and encodes 10,000 images
        pg.goto(server)
        wait_idle(pg)
        yield pg
        browser.close()


def wait_idle(pg, timeout_s: float = 180) -> None:
    """Wait until the script has finished running (Streamlit's 'running' status widget is gone)."""
    deadline = time.monotonic() + timeout_s
    pg.wait_for_selector('[data-testid="stApp"]')
    pg.wait_for_timeout(400)
    quiet = 0
    while time.monotonic() < deadline:
        running = pg.locator('[data-testid="stStatusWidget"]').count()
        quiet = 0 if running else quiet + 1
        if quiet >= 3:
            return
        pg.wait_for_timeout(300)
    raise AssertionError("the app was still running after %.0f s" % timeout_s)


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator(
        '[data-testid="stException"]').first.inner_text()


def shot(pg, name: str) -> None:
    """A full-page screenshot: Streamlit scrolls inside its main container, so grow the viewport to fit it."""
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0); }")
    pg.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 6000)})
    pg.wait_for_timeout(600)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 1000})


def goto(pg, title: str) -> None:
    pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    expect(pg.locator("h1", has_text=title).first).to_be_visible(timeout=60_000)
    wait_idle(pg)


def choose(pg, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    box = pg.locator('[data-testid="stSelectbox"]', has_text=label).first
    box.click()
    pg.locator('[role="option"]', has_text=option).first.click()
    wait_idle(pg)


def test_overview_opens_with_its_picture_and_links_to_the_pages(page):
    pg = page
    expect(pg.locator("h1", has_text="VAE latent-space explorer").first).to_be_visible(timeout=90_000)
    no_exception(pg)
    picture = pg.locator('[data-testid="stImage"] img').first
    expect(picture).to_be_visible()
    size = picture.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size[0] and size[1] > 800 and size[2] > 400, size
    shot(pg, "overview")
    pg.locator('[data-testid="stMain"] [data-testid="stPageLink"] a', has_text="Latent space").first.click()
    expect(pg.locator("h1", has_text="Latent space").first).to_be_visible(timeout=60_000)
    wait_idle(pg)


def test_latent_space_opens_with_a_scatter_and_box_selection(page):
    pg = page
    if not pg.locator("h1", has_text="Latent space").count():
        goto(pg, "Latent space")
    no_exception(pg)
    plot = pg.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    expect(plot).to_be_visible(timeout=60_000)
    heading = pg.locator("h3", has_text="Selection:").first
    for attempt in range(3):  # Plotly may still be attaching its handlers right after the first paint
        pg.wait_for_timeout(1000)
        box = plot.locator(".nsewdrag").first.bounding_box()
        pg.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.40)
        pg.mouse.down()
        pg.mouse.move(box["x"] + box["width"] * 0.50, box["y"] + box["height"] * 0.50, steps=10)
        pg.mouse.move(box["x"] + box["width"] * 0.60, box["y"] + box["height"] * 0.60, steps=10)
        pg.mouse.up()
        try:
            expect(heading).not_to_have_text("Selection: 0 images", timeout=15_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    wait_idle(pg)
    expect(pg.get_by_text("Inputs (upper rows)").first).to_be_visible()
    no_exception(pg)
    shot(pg, "latent_space")


def test_decoder_grid_slider(page):
    pg = page
    goto(pg, "Decoder grid")
    no_exception(pg)
    expect(pg.get_by_text("PNG (15×15)").first).to_be_visible()
    thumb = pg.locator('[data-testid="stSlider"]', has_text="Grid size").locator('input[type="range"]').first
    thumb.focus()
    for _ in range(3):
        thumb.press("ArrowRight")
    wait_idle(pg)
    expect(pg.get_by_text("PNG (18×18)").first).to_be_visible(timeout=30_000)
    no_exception(pg)
    shot(pg, "decoder_grid")
    for tab, name in (("Interpolation", "decoder_interpolation"), ("Prior samples", "decoder_samples")):
        pg.get_by_role("tab", name=tab).click()
        wait_idle(pg)
        no_exception(pg)
        shot(pg, name)
    expect(pg.get_by_text("top: linear, bottom: spherical").first).to_be_attached()


def test_anomalies_page(page):
    pg = page
    goto(pg, "Anomalies")
    no_exception(pg)
    expect(pg.get_by_text("Flagged").first).to_be_visible()
    shot(pg, "anomalies")


def test_train_a_tiny_digits_model_to_the_end(page):
    pg = page
    goto(pg, "Train")
    no_exception(pg)
    choose(pg, "Recipe", "quick test")
    pg.locator('[data-testid="stFormSubmitButton"] button').first.click()
    expect(pg.get_by_text("Training finished: 2 epochs").first).to_be_visible(timeout=120_000)
    wait_idle(pg)
    no_exception(pg)
    # the new model is the active one in the sidebar
    expect(pg.locator('[data-testid="stSidebar"]').get_by_text("digits").first).to_be_visible()
    shot(pg, "train")


def test_stop_button_keeps_the_weights(page):
    pg = page
    epochs = pg.get_by_label("Epochs", exact=True)
    epochs.fill("400")
    epochs.press("Tab")
    pg.locator('[data-testid="stFormSubmitButton"] button').first.click()
    stop = pg.get_by_role("button", name="Stop")
    expect(stop).to_be_visible(timeout=30_000)
    pg.wait_for_timeout(2500)
    stop.click()
    expect(pg.get_by_text("stopped by the user").first).to_be_visible(timeout=60_000)
    wait_idle(pg)
    no_exception(pg)
    shot(pg, "train_stopped")


def test_anomalies_held_out_class_with_the_trained_model(page):
    pg = page
    goto(pg, "Anomalies")
    epochs = pg.get_by_label("epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    wait_idle(pg)
    pg.get_by_role("button", name="Train and evaluate").click()
    expect(pg.get_by_text("AUROC, −ELBO").first).to_be_visible(timeout=120_000)
    wait_idle(pg)
    no_exception(pg)
    shot(pg, "anomalies_held_out")


def test_latent_space_with_the_trained_model(page):
    pg = page
    goto(pg, "Latent space")
    no_exception(pg)
    shot(pg, "latent_space_trained")


def test_collapse_lab_rd_plane_and_heatmap(page):
    pg = page
    goto(pg, "Collapse lab")
    no_exception(pg)
    expect(pg.get_by_text("Rate–distortion plane").first).to_be_visible()
    charts = pg.locator('[data-testid="stPlotlyChart"]')
    expect(charts.nth(1)).to_be_visible(timeout=60_000)
    charts.nth(0).screenshot(path=str(SHOTS / "collapse_rd_plane.png"))
    charts.nth(1).screenshot(path=str(SHOTS / "collapse_kl_heatmap.png"))
    choose(pg, "Run", "β=4, λ=0, warm-up=0")
    no_exception(pg)
    shot(pg, "collapse_lab")
