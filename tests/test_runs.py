"""The run service (vae_core/runs.py): the one way anything trains."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from vae_core import checkpoint as C
from vae_core import runs as runs_module
from vae_core import store
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import load_array_file
from vae_core.calibration import Calibration, Measured, Probe, steady_fit_seconds
from vae_core.estimates import Estimate, run_seconds
from vae_core.executors import LocalExecutor
from vae_core.metrics import evaluate_elbo
from vae_core.runs import INTERRUPTED, RunService, RunSpec
from vae_core.sweep import SweepSpec, load_sweep, submit_sweep

SHAPE = (1, 8, 8)


def spec(epochs=2, seed=0, hidden=(32,), data=None, **objective) -> RunSpec:
    return RunSpec(data=data or store.DataRef("digits"), model=ModelConfig(image_shape=SHAPE, latent_dim=2, hidden=hidden),
                   objective=ObjectiveConfig(**objective), train=TrainConfig(epochs=epochs, batch_size=64, seed=seed))


def strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


@pytest.fixture
def service(tmp_path):
    svc = RunService(store.Workspace(tmp_path / "home"), LocalExecutor(2))
    yield svc
    svc.executor.shutdown()


def test_same_seed_same_history_in_parallel_and_through_a_sweep(service, tmp_path):
    a, b = service.submit(spec(seed=3)), service.submit(spec(seed=3))  # two workers: they train at once
    c = service.submit(spec(seed=4))
    for r in (a, b, c):
        assert r.wait(60) and r.status == "done", r.error
    assert strip(a.history) == strip(b.history) != strip(c.history)
    sweep = SweepSpec(latent_dim=2, hidden=(32,), epochs=2, batch_size=64, lr=TrainConfig.lr, seed=3, iwae_k=0)
    (queued,) = submit_sweep(service, sweep, tmp_path / "sweep", SHAPE)
    queued.wait(60)
    assert strip(load_sweep(tmp_path / "sweep")[1][0].checkpoint.history) == strip(a.history)


def test_a_finished_run_is_recorded_with_its_checkpoint_and_preview(service):
    run = service.submit(spec(epochs=3), owner="me", label="first")
    assert run.wait(60) and run.status == "done" and run.fraction == 1.0
    assert run.saved.parent.name == run.id and run.preview.shape == (8, 8, 1, 8, 8)
    ckpt = service.checkpoint(run)
    assert ckpt.history == run.history and RunSpec.from_dict(ckpt.extra["run"]["spec"]) == run.spec
    assert ckpt.dataset["name"] == "digits" and ckpt.dataset["hash"] is None
    record = json.loads((service.workspace.runs_dir / run.id / "run.json").read_text())
    assert record["status"] == "done" and record["label"] == "first" and len(record["history"]) == 3
    assert service.runs(owner="me") == [run] and service.runs(owner="someone else") == []


def test_stop_keeps_the_weights_that_the_history_reports(service, digits):
    run = service.submit(spec(epochs=500))
    while len(run.history) < 2:
        run.wait(0.01)
    assert run.eta() is not None and "epoch" in run.message
    service.stop(run)
    assert run.wait(60) and run.status == "stopped" and "stopped by the user" in run.reason
    assert 2 <= len(run.history) < 500
    ckpt = C.load(run.saved)
    assert ckpt.history == run.history
    reported = run.history[-1]["test_elbo"]
    assert evaluate_elbo(ckpt.model, digits.x_test)["elbo"] == pytest.approx(reported, abs=1e-4)


def test_cancelling_a_queued_run_and_a_failing_run(tmp_path):
    service = RunService(store.Workspace(tmp_path / "home"), LocalExecutor(1))
    first = service.submit(spec(epochs=200))
    missing = service.submit(spec(data=store.DataRef("mine.npz", "0" * 64)))  # a dataset nobody stored
    waiting = service.submit(spec())
    assert service.position(missing) == 1 and service.position(waiting) == 2
    service.stop(waiting)
    assert waiting.status == "cancelled" and waiting.saved is None and "before it started" in waiting.reason
    service.stop(first)
    assert missing.wait(60) and missing.status == "failed" and "not in the workspace" in missing.error
    assert missing.saved is None
    again = service.submit(spec())  # the service goes on after a failure
    assert again.wait(60) and again.status == "done"
    service.executor.shutdown()


def test_a_run_on_a_stored_dataset_records_its_hash(service):
    rng = np.random.default_rng(0)
    arrays = load_array_file(_npz(rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)), "mine.npz")
    rec = service.workspace.put_dataset(arrays, "mine.npz")
    run = service.submit(spec(data=store.DataRef("mine.npz", rec.hash)))
    assert run.wait(60) and run.status == "done", run.error
    ckpt = service.checkpoint(run)
    assert ckpt.dataset["hash"] == rec.hash and ckpt.dataset["name"] == "mine.npz"
    assert store.DataRef.from_info(ckpt.dataset) == store.DataRef("mine.npz", rec.hash)


def _npz(x):
    import io
    buf = io.BytesIO()
    np.savez(buf, x=x)
    return buf.getvalue()


def test_the_held_out_class_experiment_is_a_run(service):
    held = spec(epochs=2, data=store.DataRef("digits", exclude_class=3))
    run = service.submit(held)
    assert run.wait(60) and run.status == "done", run.error
    ev = run.evaluation
    assert ev["held_out"] == 3 and ev["n_train"] < 1438 and 0 <= ev["auroc"]["−ELBO"] <= 1
    assert set(run.result["curves"]) == {"−ELBO", "reconstruction"}
    assert service.checkpoint(run).extra["evaluation"] == ev


def test_records_survive_a_restart_and_an_unfinished_run_is_marked_interrupted(tmp_path):
    ws = store.Workspace(tmp_path / "home")
    first = RunService(ws, LocalExecutor(1))
    done = first.submit(spec(), owner="me")
    done.wait(60)
    first.executor.shutdown()
    ghost = json.loads((ws.runs_dir / done.id / "run.json").read_text())
    ghost.update(id="run-20000101-000000-dead00", status="running", pid=2**22 + 12345)  # a process long gone
    (ws.runs_dir / ghost["id"]).mkdir()
    (ws.runs_dir / ghost["id"] / "run.json").write_text(json.dumps(ghost))
    (ws.runs_dir / "junk").mkdir()
    (ws.runs_dir / "junk" / "run.json").write_text("{not json")
    second = RunService(ws, LocalExecutor(1))
    back = second.get(done.id)
    assert back.status == "done" and strip(back.history) == strip(done.history) and back.saved == done.saved
    assert back.owner == "me" and second.checkpoint(back).history == done.history
    interrupted = second.get(ghost["id"])
    assert interrupted.status == INTERRUPTED and "server stopped" in interrupted.reason
    assert json.loads((ws.runs_dir / ghost["id"] / "run.json").read_text())["status"] == INTERRUPTED
    second.executor.shutdown()


def test_a_run_saved_under_a_name_remembers_it_and_a_discarded_run_is_gone(tmp_path):
    ws = store.Workspace(tmp_path / "home")
    service = RunService(ws, LocalExecutor(1))
    kept, dropped = service.submit(spec(epochs=1), owner="me"), service.submit(spec(epochs=1), owner="me")
    for r in (kept, dropped):
        assert r.wait(60) and r.status == "done", r.error
    path = service.save(kept, "my-model")
    assert path == ws.models_dir / "my-model.safetensors" and C.load(path).history == kept.history
    assert kept.saved_as == "my-model"
    with pytest.raises(C.CheckpointExistsError):
        service.save(dropped, "my-model")
    service.discard(dropped)
    assert service.runs(owner="me") == [kept] and not (ws.runs_dir / dropped.id).exists()
    service.executor.shutdown()
    again = RunService(ws, LocalExecutor(1))  # after a restart: the name is in the record, the discarded run gone
    assert [(r.id, r.saved_as) for r in again.runs(owner="me")] == [(kept.id, "my-model")]
    again.executor.shutdown()


def test_only_the_most_recent_runs_are_kept(tmp_path):
    service = RunService(store.Workspace(tmp_path / "home"), LocalExecutor(1), keep=2)
    runs = [service.submit(spec(epochs=1)) for _ in range(4)]
    for r in runs:
        r.wait(60)
    assert [r.id for r in service.runs()] == [runs[3].id, runs[2].id]
    folders = [p.name for p in service.workspace.runs_dir.iterdir() if p.is_dir()]
    assert sorted(folders) == sorted([runs[2].id, runs[3].id])
    service.executor.shutdown()


def test_the_estimate_is_made_of_its_measured_parts(digits):
    s = spec(epochs=7)
    est = run_seconds(s, digits)
    assert est.steps_per_epoch == 23  # ⌈1438 / 64⌉ steps
    assert est.seconds == pytest.approx(7 * est.epoch_seconds + est.end_seconds) and est.epoch_seconds > 0
    assert est.end_seconds < est.epoch_seconds  # only the replay's last step: no evaluation at the end
    lab = run_seconds(RunSpec(data=s.data, model=s.model, train=s.train, lab_metrics=True, iwae_k=10), digits)
    assert lab.end_seconds > 0 and lab.seconds == pytest.approx(7 * lab.epoch_seconds + lab.end_seconds)


def test_the_run_service_never_imports_streamlit():
    code = ("import sys, vae_core.runs, vae_core.store, vae_core.jobs, vae_core.executors, vae_core.sweep, "
            "vae_core.estimates, vae_core.__main__; assert 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_queue_estimates_learn_what_runs_really_take_here(tmp_path, monkeypatch):
    """A probe times a run's epochs in the server's process; the service learns from each finished run its start-up
    and the ratio measured/probed of its epochs (and of its evaluation), and later estimates use them."""
    monkeypatch.setattr(runs_module, "_EXECUTED", itertools.count())  # as in a fresh process
    service = RunService(store.Workspace(tmp_path), LocalExecutor())
    loading = service.submit(spec(epochs=2))
    loading.wait(120)  # no probe: nothing to learn from (this one loads the data)
    assert service.calibration.runs == 0 and loading.first_in_process
    probe = Estimate(seconds=0.01, epoch_seconds=0.005, steps_per_epoch=23, end_seconds=0.0)  # far too optimistic
    first = service.submit(spec(epochs=2), expected_seconds=probe)
    assert first.expected_seconds == pytest.approx(0.01)  # the probe's own figure before any run finished
    first.wait(120)
    assert service.calibration.runs == 1 and not first.first_in_process
    second = service.submit(spec(epochs=2), expected_seconds=probe)
    assert second.expected_seconds == pytest.approx(first.elapsed)  # start-up + ratio × probe: what the first took
    assert service.expected_seconds(probe) == pytest.approx(first.elapsed)
    second.wait(120)


def test_calibration_adds_start_up_to_the_epochs_and_the_evaluation_scaled_by_their_ratios():
    cal = Calibration()
    assert cal.expected(Probe(5.0, 1.0)) == 6.0  # nothing learnt: the probe's figures
    cal.add(Probe(10.0, 2.0), Measured(total_seconds=30.0, fit_seconds=20.0, end_seconds=4.0))  # start-up 6 s, 2×, 2×
    assert cal.expected(Probe(5.0, 1.0)) == pytest.approx(6 + 2 * 5 + 2 * 1)
    for _ in range(2):  # the median of the last runs: one odd run does not move it
        cal.add(Probe(10.0, 2.0), Measured(total_seconds=30.0, fit_seconds=20.0, end_seconds=4.0))
    cal.add(Probe(10.0, 2.0), Measured(total_seconds=300.0, fit_seconds=200.0, end_seconds=40.0))
    assert cal.expected(Probe(5.0, 1.0)) == pytest.approx(18.0)
    assert Probe.of(3.0) == Probe(3.0, 0.0) and Probe.of(None) is None


def test_a_fresh_processs_slow_first_epoch_counts_as_start_up_not_as_the_pace_of_every_epoch():
    """The class bench's finding: two 1-epoch runs on fresh workers (a first epoch 20× the others) taught the queue
    that every epoch took 47× its probe, and told the class 95 s for runs of 2.4 s."""
    assert steady_fit_seconds(1.3, [1.0, 0.1, 0.1, 0.1]) == pytest.approx(0.4)
    assert steady_fit_seconds(0.35, [0.05, 0.1, 0.1, 0.1]) == 0.35  # a fast first epoch stays as it was
    assert steady_fit_seconds(1.0, [1.0]) == 1.0  # nothing to compare a single epoch with
    cal = Calibration()
    cal.add(Probe(0.4), Measured(total_seconds=2.5, fit_seconds=steady_fit_seconds(1.3, [1.0, 0.1, 0.1, 0.1])))
    assert cal.expected(Probe(4.0)) == pytest.approx(2.1 + 4.0)  # start-up (with the slow epoch) + 1× the probe


def test_a_processs_first_run_teaches_its_ratios_but_not_its_start_up():
    """Found by the class bench: the two warm-up runs, each the first of a fresh worker (waiting for the process
    to be ready, loading the digits into its cache), set the start-up at 8 s, and runs of 2.5 s were told 10 s;
    even as the only runs known (a fresh server's first), runs of 2.8 s were told 6.6 s."""
    cal = Calibration()
    cal.add(Probe(2.0), Measured(total_seconds=10.0, fit_seconds=2.0), start_up=False)  # the first run of all
    assert cal.expected(Probe(2.0)) == pytest.approx(2.0)  # its ratio, and no start-up yet
    cal.add(Probe(2.0), Measured(total_seconds=10.0, fit_seconds=4.0), start_up=False)  # another fresh worker's
    assert cal.expected(Probe(2.0)) == pytest.approx(1.5 * 2.0)  # its ratio counts, its start-up not
    cal.add(Probe(2.0), Measured(total_seconds=2.5, fit_seconds=2.0))
    cal.add(Probe(2.0), Measured(total_seconds=2.5, fit_seconds=2.0))
    assert cal.expected(Probe(2.0)) == pytest.approx(0.5 + 2.0)  # warm runs' start-ups only


def test_a_processs_first_run_of_one_epoch_teaches_no_pace():
    """Found by the class bench: its warm-up runs of one epoch, each the first in its process, taught ratios 1.3 to
    5 times the steady one (that epoch holds the process's first-epoch set-up): 2.7-s runs were told 8.1 s."""
    cal = Calibration()
    cal.add(Probe(0.05), Measured(total_seconds=0.3, fit_seconds=0.25), start_up=False, pace=False)
    assert cal.expected(Probe(2.0)) == pytest.approx(2.0)  # the probe's own figure, not 5 ×
    cal.add(Probe(2.0), Measured(total_seconds=3.0, fit_seconds=3.0))
    assert cal.expected(Probe(2.0)) == pytest.approx(3.0)


def test_a_batch_of_runs_ends_when_the_last_worker_is_done(tmp_path):
    """`expected_finish`: new runs share the idle workers, each taking the first free one."""
    service = RunService(store.Workspace(tmp_path), LocalExecutor(max_workers=2))
    assert service.expected_finish([3.0, 3.0, 3.0]) == 6.0
    assert service.expected_finish([5.0, 1.0, 1.0, 1.0]) == 5.0
    assert service.expected_finish([]) == 0.0
    assert service.expected_finish([3.0, 3.0, 3.0], now=False) == 6.0  # on idle workers: the same here


def test_the_service_learns_no_pace_from_a_processs_first_single_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module, "_EXECUTED", itertools.count())  # as in a fresh process
    service = RunService(store.Workspace(tmp_path), LocalExecutor())
    probe = Estimate(seconds=0.001, epoch_seconds=0.001, steps_per_epoch=23, end_seconds=0.0)  # far too optimistic
    run = service.submit(spec(epochs=1), expected_seconds=probe)
    assert run.wait(120) and run.first_in_process and service.calibration.runs == 1
    assert service.expected_seconds(probe) == pytest.approx(probe.seconds)  # neither its start-up nor its pace
    service.executor.shutdown()
