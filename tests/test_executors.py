"""Where runs execute (vae_core/executors/): in the driver's thread, in worker processes, and what they ask Ray for;
plus the run service's per-user limit and its estimate of when a queued run starts. Fake work keeps these fast."""
import os
import sys
import time
import types

import pytest
import torch

from vae_core import store
from vae_core.calibration import Measured, Probe
from vae_core.config import ModelConfig, TrainConfig
from vae_core.executors import LocalExecutor, Relay, cores, deliver, ray_options
from vae_core.executors.processes import WORKER_NICE
from vae_core.jobs import Cancelled, Job
from vae_core.runs import RunLimitError, RunService, RunSpec
from vae_core.spawn import process_pool, started


class Recorder:
    """A stand-in for a Run on the driver's side: what a relay delivered, and a Stop switch."""

    def __init__(self):
        self.updates, self.epochs, self.cancel_requested = [], [], False

    def update(self, fraction, message=None, eta=None):
        self.updates.append((fraction, message))

    def epoch(self, record, preview):
        self.epochs.append(record)


def counting(n, reporter, pause=0.0):
    """Fake work for a worker: reports `n` epochs; stops early when asked; says where it ran."""
    for i in range(n):
        reporter.update(i / n, f"step {i}")
        reporter.epoch({"epoch": i + 1}, None)
        if reporter.cancel_requested:
            return {"pid": os.getpid(), "stopped_after": i + 1}
        time.sleep(pause)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "modules": set(sys.modules), "nice": os.nice(0)}


def failing(reporter):
    raise ValueError("this dataset has no labels")


def dying(reporter):
    os._exit(3)  # the worker process vanishes, as if killed by the OOM killer


def test_one_worker_runs_in_its_own_thread_with_all_the_cores():
    ex = LocalExecutor(1)
    assert not ex.processes and ex.threads_per_job == cores()
    job = in_job(ex, counting, (3,), Recorder())
    assert job.result["pid"] == os.getpid() and job.result["threads"] == cores()
    ex.shutdown()


def in_job(ex: LocalExecutor, fn, args: tuple, reporter, **kwargs) -> Job:
    """`ex.call(fn, …)` as work runs it: inside a job of the executor (its driver thread)."""
    job = ex.submit(Job(fn.__name__), lambda job: ex.call(fn, args, reporter, **kwargs))
    assert job.wait(60)
    return job


def test_worker_processes_relay_progress_and_stop_and_report_failures():
    ex = LocalExecutor(2, processes=True)
    assert ex.threads_per_job == max(1, cores() // 2)  # runs × threads ≤ cores
    rec = Recorder()
    result = in_job(ex, counting, (4,), rec).result
    assert result["pid"] != os.getpid() and result["threads"] == ex.threads_per_job
    assert "torch._dynamo" in result["modules"]  # warmed up as it started: a first optimizer imports it (2.5 s)
    assert result["nice"] == min(19, os.nice(0) + WORKER_NICE)  # training yields to the server's pages
    assert [e["epoch"] for e in rec.epochs] == [1, 2, 3, 4] and rec.updates[-1] == (0.75, "step 3")
    stopper = Recorder()
    stopper.cancel_requested = True  # the user pressed Stop: the worker sees it at its next poll
    assert in_job(ex, counting, (1000,), stopper, pause=0.01).result["stopped_after"] < 1000
    failed = in_job(ex, failing, (), Recorder())  # the worker's own error, with its message
    assert failed.status == "failed" and "no labels" in failed.error
    died = in_job(ex, dying, (), Recorder())
    assert died.status == "failed" and "stopped unexpectedly" in died.error
    assert in_job(ex, counting, (2,), Recorder()).result["pid"] != os.getpid()  # a fresh pool takes over
    with pytest.raises(RuntimeError, match="inside a submitted job"):
        ex.call(counting, (1,), Recorder())
    ex.shutdown()


def test_a_relay_thins_its_messages_but_never_loses_an_epoch_or_the_last_update():
    sent = []
    relay = Relay(sent.append, lambda: False)
    for i in range(1000):
        relay.update(i / 1000, f"step {i}")
        if i % 10 == 9:
            relay.epoch({"epoch": (i + 1) // 10}, f"preview {(i + 1) // 10}")
    relay.close()  # what the worker's wrapper does when the work ends
    assert len(sent) < 20  # a few messages, not 1,100
    rec = Recorder()
    for message in sent:
        deliver(message, rec)
    assert [e["epoch"] for e in rec.epochs] == list(range(1, 101)) and rec.updates[-1] == (0.999, "step 999")
    stop = Relay(sent.append, lambda: True)
    with pytest.raises(Cancelled):
        stop.report(0.5, "evaluating")


def test_what_a_run_asks_ray_for():
    assert ray_options({"CPU": 8.0}) == {"num_cpus": 1.0, "num_gpus": 0.0, "max_retries": 0}
    assert ray_options({"CPU": 8.0, "GPU": 1.0})["num_gpus"] == 0.25  # four small VAEs share a GPU
    assert ray_options({"CPU": 8.0, "GPU": 2.0}, cpus_per_run=2, gpus_per_run=0.5) == {
        "num_cpus": 2, "num_gpus": 0.5, "max_retries": 0}


def tiny_spec(epochs=1) -> RunSpec:
    return RunSpec(data=store.DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,)),
                   train=TrainConfig(epochs=epochs, batch_size=256))


def test_each_user_has_one_training_at_a_time_by_default(tmp_path, monkeypatch):
    service = RunService(store.Workspace(tmp_path), LocalExecutor(1))
    first = service.submit(tiny_spec(300), owner="ada", limited=True)
    with pytest.raises(RunLimitError, match="allows 1 at a time per user"):
        service.submit(tiny_spec(), owner="ada", limited=True)
    other = service.submit(tiny_spec(), owner="bob", limited=True)  # another user is not held up by ada's
    sweep_run = service.submit(tiny_spec(), owner="ada")  # a sweep's runs do not count
    monkeypatch.setenv("VAE_RUNS_PER_SESSION", "2")
    second = service.submit(tiny_spec(), owner="ada", limited=True)
    service.stop(first)
    for run in (first, other, sweep_run, second):
        assert run.wait(60)
    assert second.status == "done"
    service.submit(tiny_spec(), owner="ada", limited=True).wait(60)  # once done, the turn is free again
    service.executor.shutdown()


def test_a_queued_run_knows_roughly_when_it_starts(tmp_path):
    service = RunService(store.Workspace(tmp_path), LocalExecutor(1))
    running = service.submit(tiny_spec(1000), expected_seconds=100.0)
    while running.status != "running":
        running.wait(0.01)
    a = service.submit(tiny_spec(), expected_seconds=30.0)
    b = service.submit(tiny_spec(), expected_seconds=20.0)
    unknown = service.submit(tiny_spec())
    after_unknown = service.submit(tiny_spec(), expected_seconds=5.0)
    left = running.eta()
    assert service.expected_start(a) == pytest.approx(left if left is not None else 100.0, abs=5)
    assert service.expected_start(b) == pytest.approx(service.expected_start(a) + 30.0, abs=1)
    assert service.expected_start(unknown) == pytest.approx(service.expected_start(b) + 20.0, abs=1)
    assert service.expected_start(after_unknown) is None  # the run ahead of it has no estimate
    service.calibration.add(Probe(10.0), Measured(total_seconds=20.0, fit_seconds=20.0))  # runs here take 2×
    assert service.expected_start(b) == pytest.approx(service.expected_start(a) + 2 * 30.0, abs=1)  # learnt as
    for run in (running, a, b, unknown, after_unknown):  # the queue moves, not only what was known when queued
        service.stop(run)
    service.executor.shutdown()


def test_worker_processes_end_when_their_server_is_killed():
    """A server killed outright (no shutdown) must not leave its idle worker processes behind."""
    import signal
    import subprocess
    import sys

    import psutil

    server = subprocess.Popen([sys.executable, "-c", (
        "import time\n"
        "from vae_core.executors import LocalExecutor\n"
        "ex = LocalExecutor(2, processes=True)\n"
        "ex.warm()\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "up"
        deadline = time.monotonic() + 120
        while len(psutil.Process(server.pid).children()) < 2:  # the two workers (spawned in the background)
            assert time.monotonic() < deadline, "the worker processes did not start"
            time.sleep(0.1)
        workers = psutil.Process(server.pid).children()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"worker processes left behind: {[p.pid for p in alive]}"


def test_worker_processes_do_not_run_the_page_that_started_them(tmp_path, monkeypatch):
    """Streamlit installs each page script as `__main__` while it runs, and a spawned process re-runs its parent's
    `__main__` file first: a server's workers ran a page without a browser (and failed on the lab's)."""
    marker, script = tmp_path / "ran", tmp_path / "page.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('the page ran')\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", page)
    pool = process_pool(1)
    assert pool.submit(started).result(120)
    pool.shutdown()
    assert not marker.exists() and sys.modules["__main__"] is page
