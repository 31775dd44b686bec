"""End to end in a real browser: `streamlit run` in a subprocess, Chromium driven by Playwright.

Each test opens its own browser context (its own cookies: another user) at its own address, and waits on the
app's state (`data-test-script-state`) or on the elements it expects, never on fixed sleeps. The server works
in the tests' throwaway workspace ($VAE_HOME from conftest). Skips (with the reason) when Playwright or Chromium
is missing, unless VAE_REQUIRE_BROWSER=1, which turns a missing browser into a failure. Screenshots go to
tests/e2e/screenshots/NAME.png (git-ignored).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from apphelp import colour_shapes_zip, mnist_like  # (tests/ is on the path: it holds conftest.py)
from vae_core import checkpoint as C
from vae_core import store
from vae_core.data import load_dataset
from vae_core.locations import available_builtin
from vae_core.metrics import evaluate_elbo
from vae_core.ui import first_paint

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("VAE_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("VAE_REQUIRE_BROWSER") == "1"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
STARTUP_TIMEOUT_S = 60
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
FASHION = (ROOT / "checkpoints" / "fashion-mnist-2d.safetensors").exists() and available_builtin()["fashion-mnist"]


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


def _relay(output, log, ready: threading.Event) -> None:
    """Copy the server's output to its log; set `ready` once it prints its URL (it is listening) or ends."""
    for line in output:
        log.write(line)
        log.flush()
        if b"URL:" in line:
            ready.set()
    ready.set()


@contextlib.contextmanager
def streamlit_server(log_name: str, **env):
    """`streamlit run serve.py` on a free loopback port, stopped afterwards; yields its URL once the server says it
    is listening and answers its health check (a fresh server: its background preload has only just started)."""
    if sync_playwright is None:
        _missing("the playwright package is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"Chromium was not found at {CHROMIUM} (apt install chromium, or set VAE_CHROMIUM)")
    port = _free_port()
    SHOTS.mkdir(exist_ok=True)
    log = open(SHOTS / log_name, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, **env))
    ready = threading.Event()
    relay = threading.Thread(target=_relay, args=(proc.stdout, log, ready), daemon=True)
    relay.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not ready.wait(STARTUP_TIMEOUT_S):
            pytest.fail(f"streamlit did not start listening within {STARTUP_TIMEOUT_S} s")
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with code {proc.returncode}; see tests/e2e/screenshots/{log_name}")
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as r:
            assert r.status == 200, f"/_stcore/health answered {r.status}"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        relay.join(10)
        log.close()


@pytest.fixture(scope="module")
def server():
    with streamlit_server("streamlit-server.log", VAE_MAX_RUNS="1") as url:  # one run at a time
        yield url


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        except Exception as err:  # noqa: BLE001
            _missing(f"Chromium could not be started ({err})")
        expect.set_options(timeout=60_000)  # a cold start loads Fashion-MNIST and encodes 10,000 images
        yield b
        b.close()


def visit(browser, server: str, path: str = "", title: str | None = None, context=None):
    """A page in a new browser context (a new user) — or in `context` — opened at `path`, once its script has run
    and (given a `title`) its heading shows."""
    context = context or browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(f"{server}/{path}")
    if title:
        expect(pg.locator("h1", has_text=title).first).to_be_visible(timeout=120_000)
    settled(pg)
    return pg


def settled(pg, timeout: float = 120_000) -> None:
    """Wait until the app's script is not running (Streamlit's own run state on the app's root element)."""
    pg.wait_for_selector(IDLE, timeout=timeout)


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator(
        '[data-testid="stException"]').first.inner_text()


def shot(pg, name: str) -> None:
    """A full-page screenshot: Streamlit scrolls inside its main container, so grow the viewport to fit it."""
    height = pg.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                         " return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0); }")
    pg.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 6000)})
    settled(pg)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 1000})


def nav(pg, title: str) -> None:
    """Go to a page through the sidebar's navigation, as a user does."""
    pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    expect(pg.locator("h1", has_text=title).first).to_be_visible(timeout=120_000)
    settled(pg)


def choose(pg, label: str, option: str, where: str = "", typed: str | None = None) -> None:
    """Pick `option` in the selectbox labelled `label` (after typing `typed` into it: a long list shows only the
    options in view, and typing filters them, as a user does)."""
    pg.locator(f'{where} [data-testid="stSelectbox"]'.strip(), has_text=label).first.click()
    if typed:
        pg.keyboard.type(typed)
    pg.locator('[role="option"]', has_text=option).first.click()


def progress_text(pg) -> str:
    bars = pg.locator('[data-testid="stProgress"]')
    return " | ".join(bars.all_inner_texts()) if bars.count() else ""


def set_number(pg, label: str, value) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def until(act, check, attempts: int = 3) -> None:
    """`act()`, then `check()` (an expect with a short timeout); again if the check fails, up to `attempts` times.
    Right after the first paint Plotly may still be attaching its handlers, or images still shifting the layout,
    so a first click or drag can go nowhere."""
    for attempt in range(attempts):
        act()
        try:
            check()
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def no_missing_data(pg) -> None:
    assert pg.get_by_text("not in this workspace").count() == 0


# ---------------------------------------------------------------- the pages

def test_overview_opens_with_its_picture_and_links_to_the_pages(browser, server):
    pg = visit(browser, server, "", "VAE latent-space explorer")
    no_exception(pg)
    picture = pg.locator('[data-testid="stImage"] img').first
    expect(picture).to_be_visible()
    pg.wait_for_function("i => i.complete && i.naturalWidth > 800", arg=picture.element_handle())
    shot(pg, "overview")
    assert "model=" in pg.url  # the address names the active model
    pg.locator('[data-testid="stMain"] [data-testid="stPageLink"] a', has_text="Latent space").first.click()
    expect(pg.locator("h1", has_text="Latent space").first).to_be_visible()
    pg.context.close()


@pytest.mark.parametrize("path", ["overview", "nonexistent", "overview?model=digits-2d"])
def test_an_address_that_names_no_page_opens_the_overview_without_a_dialog(browser, server, path):
    """/overview (Streamlit serves the default page at / only) and unknown names land on the Overview at /, with no
    "Page not found" dialog over it (it would block every click until closed)."""
    pg = visit(browser, server, path, "VAE latent-space explorer")
    no_exception(pg)
    assert pg.locator('[role="dialog"]').count() == 0 and pg.get_by_text("Page not found").count() == 0
    assert pg.url.split("?")[0].rstrip("/") == server
    if "model=" in path:
        assert "model=digits-2d" in pg.url  # the link's model survives the landing
    pg.locator('[data-testid="stSidebarNav"] a', has_text="Train").first.click()  # nothing blocks a click
    expect(pg.locator("h1", has_text="Train a VAE").first).to_be_visible()
    pg.context.close()


def test_on_a_narrow_screen_formulas_scroll_in_their_box_and_the_favicon_is_local(browser, server):
    context = browser.new_context(viewport={"width": 420, "height": 900})
    pg = visit(browser, server, "train", "Train a VAE", context=context)
    no_exception(pg)
    formula = pg.locator(".katex-display").first
    expect(formula).to_be_visible()
    box = formula.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 420  # the formula's box fits the screen …
    assert pg.evaluate("e => e.scrollWidth > e.clientWidth", formula.element_handle())  # … and scrolls inside it
    icons = pg.eval_on_selector_all("link[rel~='icon']", "ls => ls.map(l => l.href)")
    assert icons and all(href.startswith(server) or href.startswith("data:") for href in icons), icons
    context.close()


@pytest.mark.parametrize("path, title", [("train", "Train a VAE"), ("latent", "Latent space"),
                                         ("decoder", "Decoder grid"), ("anomalies", "Anomalies"),
                                         ("collapse", "Posterior-collapse lab"),
                                         ("demo", "Posterior collapse: a lecture demo")])
def test_every_declared_address_opens_its_page(browser, server, path, title):
    pg = visit(browser, server, path, title)
    no_exception(pg)
    assert pg.locator('[role="dialog"]').count() == 0
    pg.context.close()


def test_a_fresh_server_shows_the_latent_map_before_torch_has_loaded(browser):
    """A new server's first visitor opens the Latent page by its address: the default model's stored still picture
    of the map is on screen while the server is still importing torch, and the interactive map takes its place
    once it has drawn every image; the sidebar follows the page."""
    with streamlit_server("streamlit-fresh-server.log") as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.goto(f"{url}/latent")
        area = pg.locator(f".st-key-{first_paint.MAP_KEY}")
        still, chart = area.locator('[data-testid="stImage"] img'), area.locator(".vm-root[data-drawn]")
        expect(still).to_be_visible(timeout=60_000)
        assert chart.count() == 0  # a first paint: the page is still waiting for the library
        expect(pg.get_by_text("A still picture of the test images' map").first).to_be_visible()
        pg.screenshot(path=str(SHOTS / "latent_first_paint.png"))
        expect(chart.first).to_be_attached(timeout=180_000)  # (every image encoded first: a job)
        expect(still).to_be_hidden()
        settled(pg)
        expect(pg.locator('[data-testid="stSidebar"]').get_by_text("Active model")).to_be_visible()
        no_exception(pg)
        shot(pg, "latent_after_first_paint")
        context.close()


def test_decoder_grid_slider(browser, server):
    pg = visit(browser, server, "decoder", "Decoder grid")
    no_exception(pg)
    expect(pg.get_by_text("PNG (15×15)").first).to_be_visible()
    thumb = pg.locator('[data-testid="stSlider"]', has_text="Grid size").locator('input[type="range"]').first
    thumb.focus()
    for _ in range(3):
        thumb.press("ArrowRight")
    expect(pg.get_by_text("PNG (18×18)").first).to_be_visible()
    no_exception(pg)
    # a click anywhere on the lattice decodes the latent point under the mouse (hover shows it first)
    plot = pg.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    expect(plot.locator(".nsewdrag").first).to_be_attached()
    decoded = pg.get_by_text(re.compile(r"E\[x \| z\] at z0 = -?\d\.\d{3}, z1 = -?\d\.\d{3}"))

    def click_upper_right():  # z0 > 0, z1 > 0
        box = plot.locator(".nsewdrag").first.bounding_box()
        pg.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.2)
        pg.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.2)

    until(click_upper_right, lambda: expect(decoded.first).to_be_visible(timeout=10_000))
    z0, z1 = map(float, re.findall(r"-?\d\.\d{3}", decoded.first.inner_text())[:2])
    assert z0 > 0 and z1 > 0  # the point clicked, not the origin or a cell of the wrong corner
    no_exception(pg)
    shot(pg, "decoder_grid")
    for tab, name in (("Interpolation", "decoder_interpolation"), ("Prior samples", "decoder_samples")):
        pg.get_by_role("tab", name=tab).click()
        settled(pg)
        no_exception(pg)
        shot(pg, name)
    expect(pg.get_by_text("top: linear, bottom: spherical").first).to_be_attached()
    pg.context.close()


def test_anomalies_page_and_the_held_out_class_experiment(browser, server):
    pg = visit(browser, server, "anomalies?model=digits-2d", "Anomalies")
    no_exception(pg)
    expect(pg.get_by_text("Flagged").first).to_be_visible()
    shot(pg, "anomalies")
    set_number(pg, "epochs", 3)
    expect(pg.get_by_text("press Train and evaluate: about").first).to_be_visible()  # measured before starting
    pg.get_by_role("button", name="Train and evaluate").click()
    expect(pg.get_by_text("AUROC, −ELBO").first).to_be_visible(timeout=120_000)
    no_exception(pg)
    shot(pg, "anomalies_held_out")
    pg.context.close()


def test_collapse_lab_rd_plane_and_heatmap(browser, server):
    pg = visit(browser, server, "collapse", "Posterior-collapse lab")
    no_exception(pg)
    expect(pg.get_by_text("Rate–distortion plane").first).to_be_visible()
    rd = pg.locator('[data-testid="stVegaLiteChart"]')
    expect(rd.locator(".role-legend-label text", has_text="λ=0.5").first).to_be_attached()
    rd.first.screenshot(path=str(SHOTS / "collapse_rd_plane.png"))
    lab_section(pg, "KL per dimension & replay")
    charts = pg.locator('[data-testid="stPlotlyChart"]')
    expect(charts.nth(1)).to_be_visible()
    charts.nth(0).screenshot(path=str(SHOTS / "collapse_kl_heatmap.png"))
    choose(pg, "Run", "β=4", '[data-testid="stMain"]')
    settled(pg)
    no_exception(pg)
    shot(pg, "collapse_lab")
    pg.context.close()


def lab_section(pg, name: str) -> None:
    """Show one part of the collapse lab (its segmented control), once its run has ended."""
    pg.locator(".st-key-lab_section").get_by_role("radio", name=name, exact=True).click()
    settled(pg)


def replay_epoch(chart) -> str:
    """The epoch the replay figure shows, from its caption ("epoch N · rate …")."""
    text = chart.locator(".annotation-text", has_text="· rate").first.text_content()
    return text.split("·")[0].replace("epoch", "").strip()


def test_every_cure_on_one_plane_and_the_replay_scrubbed(browser, server):
    pg = visit(browser, server, "collapse", "Posterior-collapse lab")
    choose(pg, "Sweep", "fashion-every-cure-d16", '[data-testid="stMain"]')
    settled(pg)
    no_exception(pg)
    rd = pg.locator('[data-testid="stVegaLiteChart"]').first
    for cure in ("β-VAE", "λ=0.5", "warm-up 10", "cyclical ×4", "soft target 10 nats", "aggressive", "capacity 25"):
        expect(rd.locator(".role-legend-label text", has_text=cure).first).to_be_attached()
    rd.screenshot(path=str(SHOTS / "collapse_rd_all_cures.png"))
    lab_section(pg, "KL per dimension & replay")
    choose(pg, "Run", "β=4, aggressive", '[data-testid="stMain"]', typed="aggressive")
    expect(pg.get_by_text("The run picked above, β=4, aggressive, epoch by epoch.")).to_be_visible()
    settled(pg)
    replay = pg.locator('[data-testid="stPlotlyChart"]', has=pg.locator(".slider-container")).first
    replay.scroll_into_view_if_needed()
    expect(replay.locator(".slider-container")).to_be_visible()
    rail = replay.locator(".slider-rail-touch-rect").first.bounding_box()
    for where, epoch, name in ((0.0, "1", "replay_epoch_first"), (1.0, "20", "replay_epoch_last")):
        pg.mouse.click(rail["x"] + 2 + where * (rail["width"] - 4), rail["y"] + rail["height"] / 2)
        expect(replay.locator(".annotation-text", has_text=f"epoch {epoch} ·").first).to_be_attached()
        assert replay_epoch(replay) == epoch
        settled(pg)
        replay.screenshot(path=str(SHOTS / f"{name}.png"))
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download the replay as a GIF").click()
    assert download.value.suggested_filename.endswith("-replay.gif")
    no_exception(pg)
    pg.context.close()


def test_the_ppca_panel_fits_the_linear_vae_exactly(browser, server):
    pg = visit(browser, server, "collapse", "Posterior-collapse lab")
    lab_section(pg, "pPCA")
    heading = pg.locator("h3", has_text="Collapse without any optimisation problem").first
    heading.scroll_into_view_if_needed()
    pg.get_by_role("button", name="Fit the linear VAE exactly").click()
    verdict = pg.get_by_text("Exact fits: the same active units as the closed form at 3 of 3").first
    expect(verdict).to_be_visible(timeout=120_000)
    settled(pg)
    no_exception(pg)
    heading.scroll_into_view_if_needed()
    pg.screenshot(path=str(SHOTS / "collapse_ppca_panel.png"), full_page=False)
    pg.context.close()


# ---------------------------------------------------------------- work outlives the page

def start_training(pg, epochs: int, beta: float = 1.0) -> None:
    """On the Train page: the quick recipe with `epochs` epochs (and β = `beta`), then Train; returns once the page
    shows the run (running, or already done: a short one can end before its first progress bar is drawn)."""
    choose(pg, "Recipe", "quick test")
    expect(pg.get_by_label("Epochs", exact=True)).to_have_value("2")
    set_number(pg, "Epochs", epochs)
    if beta != 1.0:
        set_number(pg, "β (KL weight)", beta)
    expect(pg.get_by_text("Estimated time on this machine").first).to_be_visible()
    settled(pg)
    pg.get_by_role("button", name="Train", exact=True).click()
    expect(pg.get_by_text(re.compile(rf"β={beta:g} · {epochs} epochs")).first).to_be_visible()


def test_a_beta_4_run_ends_with_a_collapse_notice_and_its_kl_on_its_own_panel(browser, server):
    pg = visit(browser, server, "train?model=digits-2d", "Train a VAE")
    start_training(pg, 20, beta=4)
    expect(pg.get_by_text("Training finished: 20 epochs").first).to_be_visible(timeout=180_000)
    notice = pg.locator('[data-testid="stAlert"]', has_text="Every latent dimension collapsed (2 of 2)")
    expect(notice.first).to_be_visible()
    expect(notice.first).to_contain_text("β = 4 > 1 trades rate away by design")
    expect(pg.get_by_role("button", name="Free bits λ = 0.5 and 35 epochs", exact=True)).to_be_visible()
    pg.get_by_text("KL of each latent dimension").first.click()  # the toggle: each dimension's KL under the total
    expect(pg.locator('[data-testid="stPlotlyChart"]').first.locator("text=KL of each dimension").first
           ).to_be_attached()
    settled(pg)
    no_exception(pg)
    shot(pg, "train_collapse_notice")
    pg.context.close()


def test_training_goes_on_while_the_user_visits_two_other_pages(browser, server):
    pg = visit(browser, server, "train?model=digits-2d", "Train a VAE")
    start_training(pg, 200)
    expect(pg.locator('[data-testid="stProgress"]').filter(has_text="left").filter(has_text="epoch").first
           ).to_be_visible()  # the live bar: the epoch, the elapsed time and the time left
    expect(pg.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()  # and the curves so far
    shot(pg, "train_running")
    nav(pg, "Latent space")
    expect(pg.locator(".vm-root[data-drawn]").first).to_be_attached()
    expect(pg.locator('[data-testid="stSidebar"]').get_by_text("training").first).to_be_visible()
    nav(pg, "Decoder grid")
    expect(pg.get_by_text("PNG (15×15)").first).to_be_visible()
    nav(pg, "Train")
    expect(pg.get_by_text("Training finished: 200 epochs").first).to_be_visible(timeout=180_000)
    # the new model becomes the active one, and the address names it (the page reruns once to show it: between
    # the two runs the app is briefly idle, so wait for the picker itself, not only for idle)
    expect(pg.get_by_role("combobox", name="Model")).to_have_value(re.compile(r"^run · "), timeout=60_000)
    settled(pg)
    no_exception(pg)
    assert "model=run-" in pg.url
    shot(pg, "train")
    replay = pg.get_by_text("Training replay: the same test images")
    if replay.count() == 0:  # no collapse: the replay is folded away and drawn only once opened
        pg.get_by_text("Watch the training again (replay)").click()
    expect(replay.first).to_be_visible()
    pg.context.close()


def newest_run(status: str) -> dict:
    records = [json.loads(p.read_text()) for p in store.Workspace().runs_dir.glob("*/run.json")]
    return max((r for r in records if r["status"] == status), key=lambda r: r["created"])


def test_stop_keeps_the_weights_it_reports(browser, server):
    pg = visit(browser, server, "train?model=digits-2d", "Train a VAE")
    start_training(pg, 400)
    at_least_3 = re.compile(r"epoch ([3-9]|\d\d+) of 400")  # the bar is redrawn every second, epochs are faster
    expect(pg.locator('[data-testid="stProgress"]').filter(has_text=at_least_3).first).to_be_visible()
    pg.get_by_role("button", name="Stop").click()
    expect(pg.get_by_text("stopped by the user").first).to_be_visible()
    settled(pg)
    no_exception(pg)
    shown = float(pg.locator('[data-testid="stMetric"]', has_text="test −ELBO").locator(
        '[data-testid="stMetricValue"]').inner_text())
    record = newest_run("stopped")
    kept = C.load(record["checkpoint"])
    assert kept.history == record["history"] and 3 <= len(kept.history) < 400
    measured = evaluate_elbo(kept.model, load_dataset("digits").x_test)["elbo"]
    assert abs(measured - shown) < 0.006  # the weights kept are the ones whose −ELBO the page reports
    shot(pg, "train_stopped")
    pg.context.close()


def new_digits_npz() -> bytes:
    """A dataset the project never trained on: the 8×8 digits enlarged to 16×16 and mirrored, 1,797 images."""
    bunch = load_digits()
    x = np.kron(bunch.images, np.ones((2, 2)))[:, :, ::-1] * (255 / 16)  # (1797, 16, 16)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x.astype(np.uint8), y=bunch.target)
    return buf.getvalue()


def test_a_model_trained_on_an_uploaded_file_opens_in_new_contexts_by_picker_link_and_download(browser, server,
                                                                                                tmp_path):
    name = "e2e-upload-model"
    pg = visit(browser, server, "train?model=digits-2d", "Train a VAE")
    choose(pg, "Dataset", "upload a file")
    pg.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": "new-digits.npz", "mimeType": "application/octet-stream", "buffer": new_digits_npz()})
    expect(pg.get_by_text("1,438 training and 359 test images of 1×16×16").first).to_be_visible()
    start_training(pg, 5)
    expect(pg.get_by_text("Training finished: 5 epochs").first).to_be_visible(timeout=120_000)
    pg.get_by_label("Name", exact=True).fill(name)
    pg.get_by_role("button", name="Save").click()
    expect(pg.get_by_text(f"Saved as {name}").first).to_be_visible()
    settled(pg)
    with pg.expect_download() as download:
        pg.get_by_role("button", name="Download this model").click()
    downloaded = tmp_path / "downloaded.safetensors"
    download.value.save_as(downloaded)
    pg.context.close()

    # another user picks it in the sidebar
    other = visit(browser, server, "", "VAE latent-space explorer")
    choose(other, "Model", f"saved · {name}", '[data-testid="stSidebar"]')
    expect(other.locator('[data-testid="stImage"]').filter(has_text="359 test images").first).to_be_visible()
    no_missing_data(other)
    nav(other, "Latent space")
    expect(other.locator(".vm-root[data-drawn]").first).to_be_attached()
    nav(other, "Anomalies")
    expect(other.get_by_text("Flagged").first).to_be_visible()
    no_missing_data(other)
    no_exception(other)
    shot(other, "saved_model_anomalies")
    other.context.close()

    # a third opens it by link, on each page
    for path, title, ready in (("", "VAE latent-space explorer", "359 test images"),
                               ("latent", "Latent space", "Selection:"), ("anomalies", "Anomalies", "Flagged")):
        linked = visit(browser, server, f"{path}?model={name}", title)
        expect(linked.get_by_text(ready).first).to_be_visible()
        no_missing_data(linked)
        no_exception(linked)
        if path == "":
            shot(linked, "overview_by_link")
        linked.context.close()

    # a fourth uploads the downloaded file: its data is found through the hash the checkpoint records
    uploader = visit(browser, server, "", "VAE latent-space explorer")
    uploader.locator('[data-testid="stSidebar"] [data-testid="stFileUploader"] input[type="file"]').set_input_files(
        str(downloaded))
    expect(uploader.locator('[data-testid="stImage"]').filter(has_text="downloaded, 359 test images").first
           ).to_be_visible()
    no_missing_data(uploader)
    nav(uploader, "Latent space")
    expect(uploader.locator(".vm-root[data-drawn]").first).to_be_attached()
    no_exception(uploader)
    uploader.context.close()


def test_a_zip_of_colour_images_is_trained_and_browsed(browser, server):
    pg = visit(browser, server, "train?model=digits-2d", "Train a VAE")
    choose(pg, "Dataset", "upload a file")
    set_number(pg, "Image size for a .zip (px, 0 = most common)", 16)
    settled(pg)
    pg.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": "shapes.zip", "mimeType": "application/zip", "buffer": colour_shapes_zip(per_class=100)})
    expect(pg.get_by_text(re.compile(r"training and \d+ test images of 3×16×16")).first).to_be_visible()
    choose(pg, "Architecture", "conv")
    box = pg.get_by_label("Epochs", exact=True)
    box.fill("60")
    box.press("Enter")  # Enter in a field sets the value; only the button starts training
    settled(pg)
    expect(box).to_have_value("60")
    assert pg.get_by_text(re.compile(r"β=1 · 60 epochs")).count() == 0
    pg.get_by_role("button", name="Train", exact=True).click()
    expect(pg.get_by_text("Training finished: 60 epochs").first).to_be_visible(timeout=180_000)
    settled(pg)
    no_exception(pg)
    nav(pg, "Latent space")
    expect(pg.locator(".vm-root[data-drawn]").first).to_be_attached()
    expect(pg.locator(".vm-legend").first).to_contain_text("triangle")  # the class folders' names
    no_exception(pg)
    shot(pg, "zip_colour_latent")
    nav(pg, "Decoder grid")
    expect(pg.get_by_text("PNG (15×15)").first).to_be_visible()
    no_exception(pg)
    shot(pg, "zip_colour_decoder")
    pg.context.close()


@pytest.mark.skipif(not FASHION, reason="needs Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_a_long_iwae_evaluation_can_be_cancelled(browser, server):
    pg = visit(browser, server, "anomalies?model=fashion-mnist-2d", "Anomalies")
    pg.get_by_text("IWAE NLL (nats)").first.click()
    thumb = pg.locator('[data-testid="stSlider"]', has_text="importance samples").locator('input[type="range"]').first
    expect(thumb).to_be_visible()
    thumb.focus()
    thumb.press("End")  # k = 1000: about two minutes on 10,000 images here
    start = pg.get_by_role("button", name="Compute the IWAE bound")
    expect(start).to_be_visible()
    expect(pg.get_by_text("IWAE NLL with k = 1000 on 10,000 test images: about").first).to_be_visible()
    start.click()
    expect(pg.locator('[data-testid="stProgress"]').filter(has_text="left").first).to_be_visible()
    shot(pg, "anomalies_iwae_running")
    pg.get_by_role("button", name="Cancel").click()
    expect(pg.get_by_text("was cancelled").first).to_be_visible()
    settled(pg)
    no_exception(pg)
    assert pg.locator('[data-testid="stProgress"]').count() == 0
    pg.context.close()


@pytest.mark.skipif(not FASHION, reason="needs Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_anomalies_new_data_scores_an_upload_against_the_test_set(browser, server):
    """Score new data: 500 images of Fashion-MNIST's shape that are not clothes (sklearn's digits, enlarged from
    8×8 to 28×28) uploaded on the Anomalies page of the Fashion-MNIST model, scored as a job."""
    digits = load_digits()
    x = np.kron(digits.images[:500], np.ones((4, 4)))[:, 2:30, 2:30] * (255 / 16)  # (500, 28, 28), centre of 32×32
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x.round().astype(np.uint8))
    pg = visit(browser, server, "anomalies?model=fashion-mnist-2d", "Anomalies")
    option = pg.locator('[role="option"]', has_text="upload a file")
    until(lambda: pg.get_by_role("combobox", name="Second dataset").click(),
          lambda: expect(option.first).to_be_visible(timeout=10_000))
    pg.keyboard.type("upload a file")  # by keyboard: images still loading below may cover the option for a mouse
    pg.keyboard.press("Enter")
    uploader = pg.locator('[data-testid="stMain"] [data-testid="stFileUploader"]', has_text="Images of grey 28×28")
    expect(uploader).to_be_visible()
    uploader.locator('input[type="file"]').set_input_files(
        {"name": "digits-28.npz", "mimeType": "application/octet-stream", "buffer": buf.getvalue()})
    expect(pg.get_by_text("(the whole file): 500 images of grey 28×28").first).to_be_visible()
    raw = pg.locator('[data-testid="stMetric"]', has_text="New vs. test AUROC · raw −ELBO")
    start = pg.get_by_role("button", name="Score the new images")
    expect(raw.or_(start).first).to_be_visible()  # started at once when quick, else after its estimate
    if start.is_visible():
        start.click()
    expect(raw).to_be_visible(timeout=120_000)
    corrected = pg.locator('[data-testid="stMetric"]', has_text="New vs. test AUROC · corrected −ELBO − L(x)")
    expect(corrected).to_be_visible()
    for metric in (raw, corrected):
        assert 0.0 <= float(metric.locator('[data-testid="stMetricValue"]').inner_text()) <= 1.0
    expect(pg.get_by_text("new images with the highest").first).to_be_visible()  # the gallery's caption
    expect(pg.get_by_role("button", name="Scores of both sets (CSV)")).to_be_visible()
    settled(pg)
    no_exception(pg)
    shot(pg, "anomalies_new_data")
    pg.context.close()


NALISNICK_RUN = "fashion-every-cure-d16/beta1_fb0_wu0"  # a sweep's run: the 16-D Fashion-MNIST model at β = 1


@pytest.mark.skipif(not (FASHION and (ROOT / "checkpoints" / "sweeps" / f"{NALISNICK_RUN}.safetensors").exists()),
                    reason="needs Fashion-MNIST (apt install dataset-fashion-mnist) and the shipped sweeps")
def test_a_sweep_run_opened_by_its_address_finds_mnist_like_digits_more_likely(browser, server):
    """A fresh context opens the Anomalies page at ?model=SWEEP/RUN (the 16-D Fashion-MNIST run) and scores
    MNIST-like digits against its test set: raw −ELBO below chance (Nalisnick et al. 2019), corrected well above."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=mnist_like())
    pg = visit(browser, server, f"anomalies?model={NALISNICK_RUN}", "Anomalies")
    no_exception(pg)
    sidebar = pg.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_role("combobox", name="Model")).to_have_value(f"sweep · {NALISNICK_RUN}")
    expect(sidebar.get_by_text("Active latent units: 16 of 16")).to_be_visible()
    option = pg.locator('[role="option"]', has_text="upload a file")
    until(lambda: pg.get_by_role("combobox", name="Second dataset").click(),
          lambda: expect(option.first).to_be_visible(timeout=10_000))
    pg.keyboard.type("upload a file")
    pg.keyboard.press("Enter")
    uploader = pg.locator('[data-testid="stMain"] [data-testid="stFileUploader"]', has_text="Images of grey 28×28")
    uploader.locator('input[type="file"]').set_input_files(
        {"name": "mnist-like-digits.npz", "mimeType": "application/octet-stream", "buffer": buf.getvalue()})
    raw = pg.locator('[data-testid="stMetric"]', has_text="New vs. test AUROC · raw −ELBO")
    start = pg.get_by_role("button", name="Score the new images")
    expect(raw.or_(start).first).to_be_visible()
    if start.is_visible():
        start.click()
    expect(raw).to_be_visible(timeout=120_000)
    corrected = pg.locator('[data-testid="stMetric"]', has_text="New vs. test AUROC · corrected −ELBO − L(x)")
    assert float(raw.locator('[data-testid="stMetricValue"]').inner_text()) < 0.45
    assert float(corrected.locator('[data-testid="stMetricValue"]').inner_text()) > 0.8
    expect(pg.get_by_text("HIGHER likelihood").first).to_be_visible()  # the page says why, and what corrects it
    assert f"model={NALISNICK_RUN}" in pg.url.replace("%2F", "/")
    settled(pg)
    no_exception(pg)
    shot(pg, "anomalies_sweep_run_nalisnick")
    pg.context.close()


def test_latent_space_a_drawn_image_lands_on_the_map_and_the_umap_map(browser, server):
    pg = visit(browser, server, "latent?model=digits-2d", "Latent space")
    no_exception(pg)
    pg.get_by_text("draw one").first.click()  # the canvas loads when asked for
    settled(pg)
    # the drawing component (Fabric.js) stacks two <canvas> elements; the upper one takes the mouse
    canvas = pg.locator('[data-testid="stMain"] canvas.upper-canvas').first
    expect(canvas).to_be_visible()
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    pg.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)  # a "1": one stroke down the middle
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.85, steps=20)
    pg.mouse.up()
    expect(pg.get_by_text("your image at 8×8").first).to_be_visible()
    expect(pg.locator('[data-testid="stMetric"]', has_text="−ELBO (nats)").first).to_be_visible()
    expect(pg.get_by_text("Black ×: your image's posterior mean").first).to_be_visible()
    settled(pg)
    no_exception(pg)
    expect(pg.locator(".vm-root[data-drawn]")).to_have_count(2)  # the map, and the map with your image on it
    shot(pg, "latent_drawn")
    # UMAP: set up first, then a background job with its progress, then the map and what it preserves
    pg.locator('[data-testid="stRadio"]', has_text="Map").get_by_text("UMAP", exact=True).click()
    start = pg.get_by_role("button", name="Compute the UMAP map")
    expect(start).to_be_enabled()
    expect(pg.get_by_text(re.compile(r"UMAP of 1,797 points \(n_neighbors = 15, min_dist = 0.1\): about")).first
           ).to_be_visible()
    settled(pg)
    start.click()
    expect(pg.get_by_text(re.compile(r"of 1,797 images \(UMAP of 1,797 points")).first).to_be_visible(
        timeout=120_000)
    settled(pg)
    no_exception(pg)
    expect(pg.locator(".st-key-ls_map .vm-root[data-drawn]").first).to_be_attached()
    expect(pg.get_by_text("The UMAP map places only the images it was computed on").first).to_be_visible()
    shot(pg, "latent_umap")
    pg.context.close()
