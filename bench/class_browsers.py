"""A class in real browsers: `--sessions` Chromium contexts open the Train page of one fresh server that trains
`--limit` models at a time (`$VAE_MAX_RUNS`) and press Train at one moment (quick recipe, `--epochs` epochs on the
digits), then watch their runs. The browsers run at the lowest CPU priority, so that the figures measure the server,
and each page is given a timer that presses Train, so that the clicks reach the server together (within a few
seconds) as twenty students' would, and a queue forms. While the class watches: the health check's answer time (p50,
p95, polled 4 times a second), the peak memory of the server with its worker processes, the runs' times (from start
to end; their mean and median against the same runs with no one watching, each tab closed once its run is queued, in
`--pairs` rounds of each, interleaved: this machine's speed drifts by 15 % from one minute to the next), and the
queue's estimates: the wait each run's page was told when it was queued ("it starts in about X", kept in the run's
record) against when it really started. Per round, the server's own CPU seconds per second (its main process: what
the class's tabs cost it) and the share of the machine's time its hypervisor gave to others (steal). A fresh
visitor's Overview (seconds until its picture has loaded, in a browser of its own at normal priority, as on the
visitor's own machine) in a last round of its own: its browser loads this machine's two cores for about two seconds,
so the runs beside it are not the ones timed. Bounded: at most 40 sessions, and every wait has a timeout.

    python -m bench.class_browsers [--sessions 20] [--limit 2] [--epochs 40] [--pairs 2] [--json]
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from vae_core import identity

from .app import PICTURE_LOADED, SCRIPT_DONE, fresh_server
from .common import CHROME_ARGS, chromium_path, emit, log, machine, parser

TIMEOUT_MS = 600_000
class LowestPriority:
    """Keeps a browser's processes, every thread of them, at nice 19, and their scheduling autogroup too (Linux: with
    autogroups, a process's nice only counts within its session's group, and Chromium starts its own). Chromium sets
    its renderers' priorities itself, so they are reniced as they appear. The server's figures should not pay for
    twenty browsers sharing its machine, where in a class they would run on the students' own."""

    def __init__(self, root: psutil.Process):
        self.root, self.stopped = root, threading.Event()
        threading.Thread(target=self._keep, daemon=True).start()

    def _keep(self) -> None:
        seen: set[int] = set()  # (cheap: this thread shares the server's autogroup, and acts on new processes only)
        while not self.stopped.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:  # one went away while listed (a closed context)
                continue
            for proc in procs:
                try:
                    if proc.pid in seen and proc.nice() == 19:
                        continue
                    if "chrom" in proc.name():
                        for thread in proc.threads():  # Linux keeps a nice per thread: renicing the process
                            with contextlib.suppress(OSError):  # would move its main thread only (one may end)
                                os.setpriority(os.PRIO_PROCESS, thread.id, 19)
                        Path(f"/proc/{proc.pid}/autogroup").write_text("19")
                    seen.add(proc.pid)
                except (psutil.Error, OSError):
                    pass
            self.stopped.wait(0.2)


class CpuMeter:
    """From its making to `read()`: the server's own CPU seconds per second (its main process, not the training
    workers), and the share of this machine's time its hypervisor gave to others (/proc/stat's steal)."""

    def __init__(self, server: psutil.Process):
        self.server, self.t0 = server, time.monotonic()
        self.cpu0, self.stat0 = self._cpu(), self._stat()

    def _cpu(self) -> float:
        times = self.server.cpu_times()
        return times.user + times.system

    @staticmethod
    def _stat() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal

    def read(self) -> dict:
        stat = [b - a for a, b in zip(self.stat0, self._stat())]
        return {"server_cpu_per_s": round((self._cpu() - self.cpu0) / (time.monotonic() - self.t0), 3),
                "steal_share": round(stat[7] / max(1, sum(stat)), 3)}


def run_records(home: Path) -> dict[str, dict]:
    out = {}
    for path in (home / "runs").glob("*/run.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out[rec["id"]] = rec
    return out


QUICK_WIDTHS = "64"  # the quick recipe's MLP (the form's own default is 512, 256: a run 4× as long)


async def press_train(page, url: str, epochs: int) -> None:
    """Open the Train page and fill in the quick recipe with `epochs` epochs (Train is pressed later, by all at
    once). Each setting is read back until it holds: a rerun drawn meanwhile can close the recipe's list before the
    option is chosen, or reset what was typed (a class whose tabs trained two models would time both as one)."""
    await page.goto(f"{url}/train?model=digits-2d")
    widths, box = page.get_by_label("MLP widths (comma-separated)", exact=True), page.get_by_label("Epochs", exact=True)
    while await widths.input_value() != QUICK_WIDTHS:
        await page.locator('[data-testid="stSelectbox"]', has_text="Recipe").first.click(timeout=TIMEOUT_MS)
        await page.locator('[role="option"]', has_text="quick test").first.click()
        await page.wait_for_selector(SCRIPT_DONE, timeout=TIMEOUT_MS)  # the recipe's values are drawn
    while await box.input_value() != str(epochs) or await widths.input_value() != QUICK_WIDTHS:
        await box.fill(str(epochs))
        await box.press("Tab")
        await page.wait_for_selector(SCRIPT_DONE, timeout=TIMEOUT_MS)
    await page.get_by_text("Estimated time on this machine").first.wait_for(timeout=TIMEOUT_MS)
    await page.wait_for_selector(SCRIPT_DONE, timeout=TIMEOUT_MS)


async def queued_run(page, home: Path) -> tuple[str, str]:
    """After Train: its run's id and what its live panel first said (its queue place and predicted wait, or that
    it trains; 'finished' for a run over before the page drew). The run is found by its owner, the id the page
    records for this browser's cookie."""
    handle = await page.wait_for_function(
        "() => { const bar = [...document.querySelectorAll('[data-testid=stProgress]')]"
        ".find(e => /queued|training|loading/.test(e.innerText)); if (bar) return bar.innerText;"
        " const done = [...document.querySelectorAll('[data-testid=stAlertContentSuccess]')]"
        ".some(e => e.innerText.includes('Training finished')); return done ? 'finished' : null; }",
        timeout=TIMEOUT_MS, polling=50)
    text = (await handle.json_value()).strip()
    token = next(c["value"] for c in await page.context.cookies() if c["name"] == identity.COOKIE)
    owner = identity.owner_id(token)
    while True:
        found = [i for i, rec in run_records(home).items() if rec.get("owner") == owner]
        if found:
            return found[0], text
        await asyncio.sleep(0.2)


def queue_errors(records: list[dict]) -> list[float]:
    """|predicted − real wait| / real wait of the runs that waited over 5 s: the wait the queue predicted when the
    run was queued (what its page says first, kept in its record) against when it really started."""
    waits = [(r["predicted_wait"], r["started"] - r["created"]) for r in records
             if r.get("predicted_wait") is not None and r.get("started")]
    log("waits, predicted → real: " + ", ".join(f"{p:.1f} → {r:.1f} s" for p, r in sorted(waits)))
    return [abs(predicted - real) / real for predicted, real in waits if real > 5]


async def press_together(pages, lead_s: float = 2.0) -> float:
    """Press Train in every page at one moment: each page is given a timer for it first, so that the clicks leave
    together however slowly the browsers run (at the lowest priority, beside two cores busy training, a click
    driven step by step from here takes seconds per tab, and the runs of one round would trickle in instead of
    queueing). Returns when the moment has passed (time.time())."""
    at = time.time() + lead_s
    await asyncio.gather(*(p.get_by_role("button", name="Train", exact=True).evaluate(
        "(button, at) => setTimeout(() => button.click(), at - Date.now())", at * 1000) for p in pages))
    if time.time() > at:
        raise RuntimeError(f"the pages were not ready to press Train within {lead_s} s")
    await asyncio.sleep(at - time.time())
    return at


async def class_round(browser, url: str, sessions: int, epochs: int, watch: bool, home: Path, server: psutil.Process,
                      during=None) -> dict:
    """One class: open the Train page in `sessions` contexts, press Train in all at one moment, then watch the runs
    (or close the tabs) until all have ended."""
    contexts = [await browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(sessions)]
    pages = [await c.new_page() for c in contexts]
    for page in pages:
        page.set_default_timeout(TIMEOUT_MS)
    await asyncio.gather(*(press_train(p, url, epochs) for p in pages))
    pressed = await press_together(pages)
    meter = CpuMeter(server)
    queued = await asyncio.gather(*(queued_run(p, home) for p in pages))
    ids = {run_id for run_id, _ in queued}
    read = sum("it starts in about" in text for _, text in queued)
    if not watch:
        for c in contexts:
            await c.close()
    extra = await during() if during else {}
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        records = run_records(home)
        if all(records.get(i, {}).get("status") in ("done", "stopped", "failed", "diverged") for i in ids):
            break
        await asyncio.sleep(0.5)
    cpu = meter.read()  # (until the last run has ended)
    if watch:
        for c in contexts:
            await c.close()
    everyone = run_records(home)  # one read of every record, not one per run
    records = [everyone[i] for i in ids]
    records.sort(key=lambda r: r["started"])
    settings = {json.dumps(r["spec"], sort_keys=True) for r in records}
    if len(settings) > 1:
        raise RuntimeError(f"the tabs trained {len(settings)} different settings: their times are not one model's")
    arrived = max(r["created"] for r in records) - pressed
    log(f"{len(ids)} runs queued within {arrived:.2f} s of the moment Train was pressed; {read} tabs drew a queued "
        "run's predicted wait")
    ran = [r["finished"] - r["started"] for r in records]
    errors = queue_errors(records)
    return {"runs": len(ids), "done": sum(r["status"] == "done" for r in records),
            "run_mean_s": statistics.fmean(ran), "run_median_s": statistics.median(ran), "run_s": ran,
            "clicks_arrived_within_s": round(arrived, 2), "queue_errors": errors, **cpu, **extra}


def health_poller(url: str, stop: threading.Event, watching: threading.Event, times: list[float]) -> None:
    while not stop.is_set():
        if not watching.wait(0.25):
            continue
        t0 = time.perf_counter()
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=60).read()
        except OSError:
            pass
        times.append(time.perf_counter() - t0)
        stop.wait(0.25)


def rss_sampler(pid: int, stop: threading.Event, watching: threading.Event, peak: list[float]) -> None:
    server = psutil.Process(pid)
    while not stop.is_set():
        if not watching.wait(0.25):
            continue
        try:
            procs = [server, *server.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()) / 2**30)
        except psutil.Error:
            pass
        stop.wait(0.5)


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    out = {"machine": machine(), "sessions": args.sessions, "limit": args.limit, "epochs": args.epochs}
    async with async_playwright() as pw:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROME_ARGS)
        root = next(p for p in psutil.Process().children(recursive=True)
                    if p.pid not in before and "chrom" in p.name() and "chrom" not in p.parent().name())
        visitor_browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROME_ARGS)
        priority = LowestPriority(root)
        with fresh_server(env={"VAE_MAX_RUNS": str(args.limit)}) as (url, proc, home):
            server = psutil.Process(proc.pid)
            warm = await browser.new_page()
            for path in ("", "train?model=digits-2d"):  # what the fresh visitor and the class open, imported once
                await warm.goto(f"{url}/{path}")
                await warm.wait_for_selector(SCRIPT_DONE, timeout=TIMEOUT_MS)
            await warm.close()
            log("warming the worker processes up")
            await class_round(browser, url, args.limit, 1, False, home, server)
            idle_health = []
            for _ in range(20):
                t0 = time.perf_counter()
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=60).read()
                idle_health.append(time.perf_counter() - t0)
            stop, watching, health, peak = threading.Event(), threading.Event(), [], [0.0]
            threads = [threading.Thread(target=health_poller, args=(url, stop, watching, health), daemon=True),
                       threading.Thread(target=rss_sampler, args=(proc.pid, stop, watching, peak), daemon=True)]
            for t in threads:
                t.start()

            async def watch() -> dict:
                watching.set()  # while the class watches (not while twenty browsers press Train)
                return {}

            async def fresh_visitor() -> dict:
                await asyncio.sleep(3)  # the class is training and watching
                page = await visitor_browser.new_page(viewport={"width": 1400, "height": 1000})  # their own
                page.set_default_timeout(TIMEOUT_MS)
                t0 = time.perf_counter()
                await page.goto(url)
                await page.wait_for_function(PICTURE_LOADED, timeout=TIMEOUT_MS, polling=50)
                seconds = time.perf_counter() - t0
                await page.close()
                return {"fresh_visitor_overview_s": round(seconds, 2)}

            alone, watched = [], []
            for pair in range(1, args.pairs + 1):  # interleaved: this machine's speed drifts from minute to minute
                log(f"pair {pair}: the runs with no one watching")
                alone.append(await class_round(browser, url, args.sessions, args.epochs, False, home, server))
                log(f"pair {pair}: the class watches its runs")
                watched.append(await class_round(browser, url, args.sessions, args.epochs, True, home, server,
                                                   during=watch))
                watching.clear()
            stop.set()
            for t in threads:
                t.join()
            log("a fresh visitor while the class watches")  # a round of its own: the visitor's browser shares this
            visited = await class_round(browser, url, args.sessions, args.epochs, True, home, server,  # machine,
                                        during=fresh_visitor)  # where in a class it would not: its runs are not timed
        await browser.close()
        await visitor_browser.close()
        priority.stopped.set()
    health.sort()
    alone_s, watched_s = [t for r in alone for t in r["run_s"]], [t for r in watched for t in r["run_s"]]
    errors = [e for r in watched for e in r["queue_errors"]]
    out.update({
        "alone_run_mean_s": round(statistics.fmean(alone_s), 2), "watched_run_mean_s": round(statistics.fmean(watched_s), 2),
        "run_slowdown": round(statistics.fmean(watched_s) / statistics.fmean(alone_s), 2),
        "run_slowdown_median": round(statistics.median(watched_s) / statistics.median(alone_s), 2),
        "run_slowdown_per_pair": [round(w["run_mean_s"] / a["run_mean_s"], 2) for a, w in zip(alone, watched)],
        "alone_runs_s": [[round(t, 2) for t in r["run_s"]] for r in alone],
        "watched_runs_s": [[round(t, 2) for t in r["run_s"]] for r in watched],
        "runs_done": f"{sum(r['done'] for r in watched)}/{sum(r['runs'] for r in watched)}",
        "fresh_visitor_overview_s": visited["fresh_visitor_overview_s"],
        "health_idle_p50_ms": round(1000 * statistics.median(idle_health), 1),
        "health_p50_ms": round(1000 * statistics.median(health), 1),
        "health_p95_ms": round(1000 * health[int(0.95 * (len(health) - 1))], 1),
        "health_max_ms": round(1000 * health[-1], 1),
        "clicks_arrived_within_s": [r["clicks_arrived_within_s"] for r in alone + watched],
        "server_cpu_per_s_unwatched_watched": [[r["server_cpu_per_s"] for r in rounds] for rounds in (alone, watched)],
        "steal_share_unwatched_watched": [[r["steal_share"] for r in rounds] for rounds in (alone, watched)],
        "queue_estimate_error_p50": round(statistics.median(errors), 3) if errors else None,
        "queue_estimate_error_max": round(max(errors), 3) if errors else None,
        "queue_estimate_error_max_per_round": [round(max(r["queue_errors"]), 3) if r["queue_errors"] else None
                                               for r in watched],
        "queue_estimates_compared": len(errors),
        "peak_rss_gib": round(peak[0], 2)})
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--pairs", type=int, default=2, help="rounds unwatched and watched, interleaved")
    args = p.parse_args()
    if chromium_path() is None:
        raise SystemExit("needs Chromium (apt-get install chromium) and playwright")
    args.sessions = max(1, min(args.sessions, 40))
    emit(asyncio.run(main_async(args)), args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
