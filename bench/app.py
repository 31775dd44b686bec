"""Page speed: AppTest first run and median of 10 reruns of every page with the shipped model cached (once its
background work is done: the Latent page's map of all 70,000 images), and in a real browser (Chromium) the first
page (the overview, until its picture has loaded), the latent page opened by its URL (until its map is on screen,
and until the interactive map has drawn every point), the latent page reached from the overview's sidebar link
(until its map is drawn) and the collapse lab (until its rate–distortion plane and runs table are drawn), each the
median of 5 visits to a warm server, each visit in a new browser context (nothing cached); and the overview and the
latent page (by URL) as the first visit to a fresh server (cold: nothing imported or loaded; median of 3 servers
each). On a cold server the latent map is first on screen as the stored still picture (`vae_core/previews.py`), the
interactive map replacing it once drawn. The map at 200,000 images: `bench.map`.

    python -m bench.app [--json] [--no-browser]
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

from streamlit.testing.v1 import AppTest

from vae_core.ui import state

from .common import CHROME_ARGS, chromium_path, emit, log, parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"shell (overview)": "streamlit_app.py", "overview": "app_pages/0_Overview.py", "train": "app_pages/1_Train.py",
         "latent space": "app_pages/2_Latent_space.py", "decoder grid": "app_pages/3_Decoder_grid.py",
         "anomalies": "app_pages/4_Anomalies.py", "collapse lab": "app_pages/5_Collapse_lab.py"}
MODEL = "shipped:fashion-mnist-2d"


def timed_runs(path: str, session: dict, reruns: int = 10) -> dict:
    at = AppTest.from_file(str(ROOT / path), default_timeout=300)
    for k, v in session.items():
        at.session_state[k] = v
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{path}: {at.exception[0].message}")
    while at.get("progress"):  # its background work (the latent page's encoding) first, as a user would wait
        time.sleep(0.2)
        at.run()
    times = []
    for _ in range(reruns):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    return {"first_s": round(first, 3), "rerun_median_s": round(statistics.median(times), 3)}


PICTURE_LOADED = ("() => { const i = document.querySelector('[data-testid=stImage] img');"
                  " return i !== null && i.complete && i.naturalWidth > 0; }")
SCATTER_DRAWN = "() => document.querySelector('.st-key-ls_map .vm-root[data-drawn]') !== null"
SCRIPT_DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
LAB_SHOWN = ("() => document.querySelector('[data-testid=stVegaLiteChart] .role-mark') !== null"  # the R–D plane
             " && document.querySelector('[data-testid=stDataFrame]') !== null")  # and the runs table
MAP_SHOWN = ("() => { const i = document.querySelector('.st-key-ls_map [data-testid=stImage] img');"
             " return (i !== null && i.complete && i.naturalWidth > 0)"
             " || document.querySelector('.st-key-ls_map .vm-root[data-drawn]') !== null; }")


class Server(NamedTuple):
    url: str
    proc: subprocess.Popen
    home: Path  # its workspace ($VAE_HOME)


@contextlib.contextmanager
def fresh_server(env: dict | None = None):
    """A new `streamlit run` on a free loopback port with an empty workspace (and `env` added to its environment),
    stopped and its workspace removed afterwards; yields it once it answers its health check (nothing imported or loaded yet: the next visit
    is a cold one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = Path(tempfile.mkdtemp(prefix="vae-bench-"))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, VAE_HOME=str(home), **(env or {})))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        yield Server(url, proc, home)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def browser_times(visits: int = 5, cold_starts: int = 3) -> dict | None:
    """Seconds from navigation until the overview's picture has loaded, and until the latent page's scatter is
    drawn (opened by its URL): the first visit to each of `cold_starts` fresh servers (cold: nothing imported or
    loaded; median), then the median of `visits` more to a warm one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = chromium_path()
    if chromium is None:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROME_ARGS)

        def visit(url: str, path: str, *done: str) -> float | list[float]:
            """Seconds from navigation until each condition in `done` holds (in turn); one float for one."""
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(f"{url}/{path}")
            elapsed = []
            for condition in done:
                page.wait_for_function(condition, timeout=120_000, polling=50)
                elapsed.append(time.perf_counter() - t0)
            page.wait_for_selector(SCRIPT_DONE, timeout=120_000)  # the next visit finds the server idle
            page.close()
            return elapsed[0] if len(elapsed) == 1 else elapsed

        def click_through(url: str) -> float:
            """From the overview, the sidebar link to the latent page: the way a user gets there."""
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function(PICTURE_LOADED, timeout=120_000, polling=50)
            page.wait_for_selector(SCRIPT_DONE, timeout=120_000)
            t0 = time.perf_counter()
            page.locator('[data-testid="stSidebarNav"] a', has_text="Latent space").first.click()
            page.wait_for_function(SCATTER_DRAWN, timeout=120_000, polling=50)
            elapsed = time.perf_counter() - t0
            page.wait_for_selector(SCRIPT_DONE, timeout=120_000)
            page.close()
            return elapsed

        cold_first, cold_map, cold_drawn = [], [], []
        for _ in range(cold_starts):
            with fresh_server() as server:
                cold_first.append(visit(server.url, "", PICTURE_LOADED))
            with fresh_server() as server:
                shown, drawn = visit(server.url, "latent", MAP_SHOWN, SCATTER_DRAWN)
                cold_map.append(shown)
                cold_drawn.append(drawn)
        with fresh_server() as server:
            url = server.url
            visit(url, "", PICTURE_LOADED)  # warm it up
            first = [visit(url, "", PICTURE_LOADED) for _ in range(visits)]
            latent = [visit(url, "latent", MAP_SHOWN, SCATTER_DRAWN) for _ in range(visits)]
            clicked = [click_through(url) for _ in range(visits)]
            lab = [visit(url, "collapse", LAB_SHOWN) for _ in range(visits)]
        browser.close()
    out = {}
    for name, times in [("cold_first_page", cold_first), ("cold_latent_map", cold_map),
                        ("cold_latent_drawn", cold_drawn), ("first_page", first),
                        ("latent_map", [shown for shown, _ in latent]), ("latent_drawn", [drawn for _, drawn in latent]),
                        ("overview_to_latent", clicked), ("collapse_lab", lab)]:
        out[f"browser_{name}_s"] = round(statistics.median(times), 2)
        out[f"browser_{name}_runs_s"] = [round(t, 2) for t in times]
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--no-browser", action="store_true")
    args = p.parse_args()
    os.environ["VAE_HOME"] = tempfile.mkdtemp(prefix="vae-bench-app-")  # the pages' map cache: not the user's
    session = {state.SELECT_KEY: MODEL}
    browser = {}
    if not args.no_browser:  # first: the AppTest runs below leave this process with threads of its own
        log("the overview and the latent page in Chromium …")
        browser = browser_times() or {}
    log("cold start: loading the model and Fashion-MNIST, encoding its test images …")
    t0 = time.perf_counter()
    AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300).run()
    cold = time.perf_counter() - t0
    pages = {}
    for name, path in PAGES.items():
        log(f"page {name} …")
        pages[name] = timed_runs(path, session)
    out = {"model": MODEL, "cold_start_s": round(cold, 3), "pages": pages,
           "worst_rerun_median_s": max(v["rerun_median_s"] for v in pages.values())}
    out.update(browser)
    emit(out, args.json)


if __name__ == "__main__":
    main()
