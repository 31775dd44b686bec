"""The Latent page's map at CelebA scale: 200,000 images through the conv model `bench.celeba` trained (run it first;
this reuses its workspace).

    python -m bench.map [--home DIR] [--model NAME] [--points 100000] [--json]

- encoding every image (`latent_map.encode`), against its estimate (`estimates.encode_seconds`), and reading the
  encodings back from the workspace's map cache (what reopening the model costs);
- the page's rerun once the map is cached (AppTest, median of 10; goal ≤ 300 ms), with the points by URL as
  `serve.py` sends them and inline as `streamlit run streamlit_app.py` does;
- the first draw of the map in headless Chromium (a fresh browser context on a warm server, until the map has
  drawn every point; goal ≤ 3 s), and the image under the pointer (from the pointer's last move until its image
  has loaded; goal ≤ 100 ms), median of several;
- t-SNE and UMAP of `--points` images, each against its estimate.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .app import SCRIPT_DONE
from .common import CHROME_ARGS, chromium_path, emit, log, parser

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "vae-bench-celeba")
    p.add_argument("--model", default="celeba-conv")
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--visits", type=int, default=5)
    args = p.parse_args()
    os.environ["VAE_HOME"] = str(args.home)  # before the library reads it
    result = {"model": args.model}
    result.update(encode_figures(args.model))
    result.update(page_reruns(args.model))
    result.update(browser_figures(args.home, args.model, args.visits))
    result.update(slow_views(args.model, args.points))
    emit(result, args.json)


def _open(name: str):
    from vae_core import checkpoint as C
    from vae_core import store
    from vae_core.device import default_device

    path = store.Workspace().models_dir / f"{name}.safetensors"
    ckpt = C.load(path, device=default_device())
    data = store.load(store.DataRef.from_info(ckpt.dataset), default_device())
    return path, ckpt, data


def encode_figures(name: str) -> dict:
    from vae_core import latent_map, store
    from vae_core.estimates import encode_seconds

    path, ckpt, data = _open(name)
    n = len(data.x_train) + len(data.x_test)
    estimate = encode_seconds(ckpt.model, data)
    log(f"encoding {n:,} images (estimate {estimate:.0f} s)")
    t0 = time.perf_counter()
    enc = latent_map.encode(ckpt.model, data)
    seconds = time.perf_counter() - t0
    log(f"  took {seconds:.0f} s")
    cache = latent_map.MapCache.of_checkpoint(store.Workspace().maps_dir, path, data)
    cache.save_encodings(enc)
    t0 = time.perf_counter()
    assert cache.encodings() is not None
    return {"images": n, "encode_seconds": round(seconds, 1), "encode_estimate_seconds": round(estimate, 1),
            "encodings_reload_ms": round(1e3 * (time.perf_counter() - t0), 1)}


def page_reruns(name: str, repeat: int = 10) -> dict:
    from streamlit.testing.v1 import AppTest

    from vae_core import map_server
    from vae_core.ui import state

    out = {}
    for label, mounted in (("urls", True), ("inline", False)):
        (map_server._MOUNTED.set if mounted else map_server._MOUNTED.clear)()
        at = AppTest.from_file(str(ROOT / "app_pages" / "2_Latent_space.py"), default_timeout=600)
        at.session_state[state.SELECT_KEY] = f"saved:{name}"
        at.run()  # first run: the cached encodings read, the points published
        assert not at.exception and not at.error, [e.value for e in at.error]
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
        out[f"page_rerun_ms_{label}"] = round(1e3 * statistics.median(times))
        log(f"page rerun ({label}): {out[f'page_rerun_ms_{label}']} ms")
    map_server._MOUNTED.clear()
    return out


def browser_figures(home: Path, name: str, visits: int) -> dict:
    from playwright.sync_api import sync_playwright


    port = 8700
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType",
                             "none", "--browser.gatherUsageStats", "false"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, VAE_HOME=str(home)))
    url = f"http://127.0.0.1:{port}/latent?model={name}"
    draws, hovers = [], []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROME_ARGS, headless=True)
            for visit in range(visits + 1):  # the first visit warms the server (its imports, the model)
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                pg = context.new_page()
                t0 = time.perf_counter()
                pg.goto(url, timeout=600_000)
                pg.wait_for_selector(".st-key-ls_map .vm-root[data-drawn]", timeout=600_000, state="attached")
                if visit:
                    draws.append(time.perf_counter() - t0)
                pg.wait_for_selector(SCRIPT_DONE, timeout=600_000)
                if visit:
                    hovers += hover_times(pg)
                context.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    log(f"first draw {statistics.median(draws):.2f} s, hover image {1e3 * statistics.median(hovers):.0f} ms")
    return {"first_draw_seconds": round(statistics.median(draws), 2), "first_draw_all": [round(d, 2) for d in draws],
            "hover_image_ms": round(1e3 * statistics.median(hovers)), "hover_image_ms_p90": round(
                1e3 * sorted(hovers)[int(0.9 * (len(hovers) - 1))])}


def hover_times(pg) -> list[float]:
    """For points under a few pointer positions: seconds from the pointer's last move to its image loaded."""
    box = pg.locator(".st-key-ls_map .vm-main .vm-stack").first.bounding_box()
    root = pg.locator(".st-key-ls_map .vm-root").first
    times = []
    for fx, fy in ((0.5, 0.5), (0.45, 0.55), (0.55, 0.45), (0.4, 0.4), (0.6, 0.6), (0.52, 0.48)):
        t0 = time.perf_counter()
        pg.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        row = root.get_attribute("data-hover")
        if not row:
            continue
        pg.wait_for_function("r => document.querySelector('.vm-tip-image').dataset.row === r", arg=row,
                             polling="raf")
        times.append(time.perf_counter() - t0)
    return times


def slow_views(name: str, points: int) -> dict:
    from vae_core import latent_map, store

    path, ckpt, data = _open(name)
    cache = latent_map.MapCache.of_checkpoint(store.Workspace().maps_dir, path, data)
    enc = cache.encodings()
    out = {}
    for view in (latent_map.View("UMAP", points=points), latent_map.View("t-SNE", points=points)):
        estimate = view.seconds(enc.n)
        log(f"{view.label(enc.n)}: estimate {estimate:.0f} s")
        t0 = time.perf_counter()
        latent_map.project(enc, view)
        seconds = time.perf_counter() - t0
        key = view.kind.lower().replace("-", "")
        out[f"{key}_{points}_seconds"] = round(seconds, 1)
        out[f"{key}_{points}_estimate_seconds"] = round(estimate, 1)
        log(f"  took {seconds:.0f} s")
    return out


if __name__ == "__main__":
    main()
