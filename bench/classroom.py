"""A class shares one server: N AppTest sessions (threads of this process, as a Streamlit server runs them) each
press Train at once on the digits (quick recipe, 10 epochs), on a server that trains at most `--limit` models at a
time (`$VAE_MAX_RUNS`, so in that many worker processes). Meanwhile another session keeps rerunning the Latent
space page, as a student browsing would. Reports how many trainings completed, the most that ever ran at once, the
browsing session's rerun times while the class trained (p50, p95; idle for comparison), and the peak memory of the
server and its worker processes together.

    python -m bench.classroom [--sessions 20] [--limit 2] [--json]
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from streamlit.testing.v1 import AppTest

from .common import apptests_in_threads, emit, log, machine, parser

ROOT = Path(__file__).resolve().parent.parent


def app(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=600)
    at.session_state["vae_model_select"] = "shipped:digits-2d"
    return at


def timed_rerun(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    machine_line = machine()
    os.environ["VAE_HOME"] = tempfile.mkdtemp(prefix="vae-bench-classroom-")
    os.environ["VAE_MAX_RUNS"] = str(args.limit)
    from vae_core.runs import default_service  # noqa: PLC0415 — after $VAE_HOME and $VAE_MAX_RUNS are set

    service = default_service()
    browsing = app("app_pages/2_Latent_space.py")
    browsing.run()
    idle = [timed_rerun(browsing) for _ in range(10)]
    me = psutil.Process()
    peak_running, peak_rss, sampling = [0], {"server": 0.0, "workers": 0.0, "total": 0.0}, threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak_running[0] = max(peak_running[0], service.load()[0])
            server = me.memory_info().rss / 2**20
            workers = sum(c.memory_info().rss for c in me.children(recursive=True) if c.is_running()) / 2**20
            for key, value in (("server", server), ("workers", workers), ("total", server + workers)):
                peak_rss[key] = max(peak_rss[key], value)
            time.sleep(0.02)

    start = threading.Barrier(args.sessions, timeout=600)

    def student(i: int):
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=600).run()
        at.switch_page("app_pages/1_Train.py").run()
        at.selectbox(key="tr_recipe").set_value("quick").run()
        at.number_input(key="tr_epochs").set_value(args.epochs)
        at.number_input(key="tr_seed").set_value(i)
        start.wait()
        at.button(key="tr_train").click().run()
        run = service.get(at.session_state["tr_run"])
        run.wait()
        return run

    log(f"{args.sessions} sessions press Train at once; at most {args.limit} train at a time …")
    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    busy: list[float] = []
    try:
        with apptests_in_threads(), ThreadPoolExecutor(args.sessions) as pool:
            futures = [pool.submit(student, i) for i in range(args.sessions)]
            while not all(f.done() for f in futures):
                busy.append(timed_rerun(browsing))
            runs = [f.result() for f in futures]
    finally:
        sampling.set()
        sampler.join()
    wall = time.perf_counter() - t0
    service.executor.shutdown()
    ms = lambda xs, q: round(1000 * float(np.quantile(xs, q)), 1)  # noqa: E731
    emit({"sessions": args.sessions, "completed": sum(r.status == "done" for r in runs),
          "max_concurrent_runs": peak_running[0], "limit": args.limit, "epochs_per_run": args.epochs,
          "wall_s": round(wall, 1), "rerun_ms_p50": ms(busy, 0.5), "rerun_ms_p95": ms(busy, 0.95),
          "reruns_measured": len(busy), "idle_rerun_ms_p50": ms(idle, 0.5), "rss_mb_peak": round(peak_rss["total"]),
          "rss_mb_peak_server": round(peak_rss["server"]), "rss_mb_peak_workers": round(peak_rss["workers"]),
          "machine": machine_line}, args.json)


if __name__ == "__main__":
    main()
