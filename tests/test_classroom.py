"""A class shares one server: 20 AppTest sessions press Train at once on a server that trains at most 2 models at a
time (`$VAE_MAX_RUNS=2`, so in two worker processes). All 20 finish, never more than 2 run at a moment, each
session sees only its own run, and a page rerun during the load stays fast compared with the same rerun idle."""
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from apphelp import DIGITS, SHIPPED_DIGITS, apptests_in_threads, current_run, messages, model_options, page, shell

from vae_core.runs import default_service
from vae_core.ui import state

SESSIONS = 20
LIMIT = 2

pytestmark = pytest.mark.skipif(not SHIPPED_DIGITS.exists(), reason="the shipped digits checkpoint is missing")


def rerun_times(at, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    return times


def test_twenty_sessions_press_train_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAE_MAX_RUNS", str(LIMIT))
    service = default_service()
    assert service.executor.max_workers == LIMIT and service.executor.processes
    observer = page("app_pages/0_Overview.py", model=DIGITS)
    observer.run()
    idle = rerun_times(observer, 10)

    peak, done_sampling = [0], threading.Event()

    def sample():
        while not done_sampling.is_set():
            peak[0] = max(peak[0], service.load()[0])
            time.sleep(0.005)

    start = threading.Barrier(SESSIONS, timeout=300)

    def session(i):
        try:
            at = shell().run().switch_page("app_pages/1_Train.py").run()
            at.selectbox(key="tr_recipe").set_value("quick").run()
            at.number_input(key="tr_epochs").set_value(5)
            at.number_input(key="tr_seed").set_value(i)
            start.wait()
            at.button(key="tr_train").click().run()
            run = current_run(at)
            text = " ".join(p.proto.text for p in at.get("progress"))
            assert run.wait(600), i  # waits on the run itself: no session polls the page meanwhile
            at.run()
            return at, run, text
        except BaseException:
            start.abort()
            raise

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with apptests_in_threads(), ThreadPoolExecutor(SESSIONS) as pool:
            futures = [pool.submit(session, i) for i in range(SESSIONS)]
            busy = []
            while not all(f.done() for f in futures):  # the observer's reruns while the class trains
                if service.load()[0]:
                    busy += rerun_times(observer, 1)
            sessions = [f.result() for f in futures]
    finally:
        done_sampling.set()
        sampler.join()

    assert all(run.status == "done" for _, run, _ in sessions)
    assert 1 <= peak[0] <= LIMIT  # never more at once than the server allows
    assert any("queued" in text and "in line" in text for _, _, text in sessions)  # the waiting were told
    for i, (at, run, _) in enumerate(sessions):
        assert not at.exception and not at.error, i
        assert any("Training finished: 5 epochs" in s for s in messages(at, ("success",))), i
        assert run.spec.train.seed == i and run.owner == at.session_state[state.BROWSER_KEY]
        mine = [o for o in model_options(at) if o.startswith("run ·")]
        assert len(mine) == 1 and run.label in mine[0], (i, mine)  # its own run, and only that one
    assert len({run.id for _, run, _ in sessions}) == SESSIONS
    # a page rerun while the class trains stays of the order of the same rerun idle (a ratio, not a time)
    assert len(busy) >= 5 and statistics.median(busy) < 5 * statistics.median(idle) + 0.25, (idle, busy)


def test_watching_tabs_share_one_drawing_per_epoch(monkeypatch):
    """A watching tab redraws its run's panel every second; the curves and the decoder preview are made once per
    epoch for all the tabs (`jobs.drawn`), so watching costs the server no Plotly or PNG work per redraw."""
    from vae_core import pictures, plots
    from vae_core.ui import jobs

    built = []
    real_curves, real_png = plots.loss_curves, pictures.png_bytes
    monkeypatch.setattr(plots, "loss_curves", lambda *a, **k: built.append("curves") or real_curves(*a, **k))
    monkeypatch.setattr(pictures, "png_bytes", lambda *a, **k: built.append("png") or real_png(*a, **k))
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    at.selectbox(key="tr_recipe").set_value("quick").run()
    at.number_input(key="tr_epochs").set_value(2)
    at.button(key="tr_train").click().run()
    run = current_run(at)
    assert run.wait(300)
    at.run()
    assert not at.exception and at.get("plotly_chart")
    made = len(built)
    assert made >= 1 and ("curves" in built) and ("png" in built)
    for _ in range(5):  # five more redraws of the finished run's panel: nothing is built again
        at.run()
    assert len(built) == made and not at.exception
    assert jobs.drawn((run.id, len(run.history), "preview"), lambda: b"not used").startswith(b"\x89PNG")  # shared
