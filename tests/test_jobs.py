"""Background jobs (vae_core/jobs.py) and the local executor (vae_core/executors/local.py), with fast fake jobs."""
import threading
import time

import pytest

from vae_core.executors import LocalExecutor, default_workers
from vae_core.jobs import CANCELLED, DONE, FAILED, QUEUED, Job, JobBoard, format_duration, progress_text


def gated(log: list, gate: threading.Event, active: list, peak: list, lock: threading.Lock):
    """A fake job that records when it starts, how many run at once, and waits for `gate`."""
    def work(job: Job):
        with lock:
            log.append(job.label)
            active.append(job.label)
            peak[0] = max(peak[0], len(active))
        gate.wait(5)
        with lock:
            active.remove(job.label)
        return job.label
    return work


def test_at_most_max_workers_run_at_once_and_the_rest_wait_in_order():
    pool = LocalExecutor(2)
    log, active, peak, lock, gate = [], [], [0], threading.Lock(), threading.Event()
    jobs = [pool.submit(Job(f"j{i}"), gated(log, gate, active, peak, lock)) for i in range(6)]
    deadline = time.monotonic() + 5
    while len(log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.load() == (2, 4)
    assert [pool.position(j) for j in jobs] == [None, None, 1, 2, 3, 4]
    assert [j.status for j in jobs[2:]] == [QUEUED] * 4 and progress_text(jobs[2]) == "waiting for a free worker"
    gate.set()
    assert all(j.wait(5) for j in jobs)
    assert peak[0] == 2 and log == [f"j{i}" for i in range(6)]  # first in, first started
    assert [j.result for j in jobs] == log and all(j.status == DONE and j.fraction == 1 for j in jobs)
    assert pool.load() == (0, 0)
    pool.shutdown()


def test_a_crashing_job_is_recorded_and_the_worker_goes_on():
    pool = LocalExecutor(1)
    bad = pool.submit(Job("bad"), lambda job: 1 / 0)
    oom = pool.submit(Job("oom"), lambda job: (_ for _ in ()).throw(MemoryError()))
    good = pool.submit(Job("good"), lambda job: "fine")
    assert good.wait(5)
    assert bad.status == FAILED and "division by zero" in bad.error
    assert oom.status == FAILED and "out of memory" in oom.error
    assert good.status == DONE and good.result == "fine"
    pool.shutdown()


def test_cancel_a_queued_job_and_a_running_one():
    pool = LocalExecutor(1)
    started, ran_second = threading.Event(), []

    def long(job: Job):
        started.set()
        for i in range(1000):
            job.report(i / 1000, f"step {i}")
            time.sleep(0.005)
        return "finished"

    first = pool.submit(Job("first"), long)
    second = pool.submit(Job("second"), lambda job: ran_second.append(1))
    assert started.wait(5)
    pool.cancel(second)
    assert second.status == CANCELLED and second.done and pool.position(second) is None
    first.cancel()
    assert first.wait(5) and first.status == CANCELLED and first.result is None and 0 < first.fraction < 1
    pool.shutdown()
    assert not ran_second  # the cancelled job never ran


def test_the_time_left_comes_from_progress_or_from_the_work_itself():
    job = Job("x")
    assert job.eta() is None and job.elapsed == 0.0
    job._start()
    job.started -= 10  # as if it had run for 10 s
    job.update(0.25)
    assert job.eta() == pytest.approx(30, rel=0.01)  # 10 s for a quarter: 30 s for the rest
    job.update(0.25, eta=5.0)  # a run that knows its measured epoch times says better
    assert job.eta() == pytest.approx(5.0, abs=0.1)
    assert "about 5.0 s left" in progress_text(job) or "about 4.9 s left" in progress_text(job)
    job._finish(DONE, 1)
    assert job.eta() is None and job.fraction == 1.0 and "left" not in progress_text(job)
    probed = Job("y", expected_seconds=100.0)
    probed._start()
    probed.started -= 10
    probed.update(0.01)  # 1 % after 10 s would extrapolate to 990 s left: too early to trust
    assert probed.eta() == pytest.approx(90, rel=0.01)  # the probe's 100 s, less the 10 s spent
    probed.update(0.15)  # between 5 % and 25 %: half the probe's 90 s, half the measured 56.7 s
    assert probed.eta() == pytest.approx(0.5 * 90 + 0.5 * 10 * 0.85 / 0.15, rel=0.01)
    probed.update(0.5)
    assert probed.eta() == pytest.approx(10, rel=0.01)  # from 25 %, the measured rate alone


def test_the_board_gives_the_same_job_for_the_same_key_and_keeps_only_recent_results():
    pool = LocalExecutor(1)
    board = JobBoard(pool, keep=2)
    calls = []
    a = board.submit("a", lambda job: calls.append("a") or "A", "a")
    assert board.submit("a", lambda job: "other", "a") is a
    a.wait(5)
    assert board.get("a").result == "A" and calls == ["a"]
    failed = board.submit("f", lambda job: 1 / 0, "f")
    failed.wait(5)
    retry = board.submit("f", lambda job: "ok", "f")
    assert retry is not failed and retry.wait(5) and retry.result == "ok"  # a failure is not cached
    for key in "bcd":
        board.submit(key, lambda job, key=key: key, key).wait(5)
    assert board.get("a") is None and len(board) == 2  # the least recently used results were dropped
    pool.shutdown()


def test_default_workers_follow_the_environment(monkeypatch):
    monkeypatch.setenv("VAE_MAX_RUNS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("VAE_MAX_RUNS")
    assert default_workers() >= 1


@pytest.mark.parametrize("seconds,text", [(None, "—"), (0.04, "40 ms"), (2.46, "2.5 s"), (42.4, "42 s"),
                                          (185, "3 min 05 s"), (3725, "1 h 02 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
