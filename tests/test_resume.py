"""No run is lost: the training state after every epoch (`resume.py`) continues a run exactly; a run killed with
its process keeps its epochs listed and resumes from the CLI; a name taken while a run trained keeps the weights
under a fresh name; a killed save leaves no temporary file for good; a second process on the workspace never
removes the run folders a server lists."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vae_core import resume, store
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.executors import LocalExecutor
from vae_core.files import atomic_write, remove_stale_temporaries
from vae_core.model import VAE, init_weights
from vae_core.runs import INTERRUPTED, STOPPED, RunService, RunSpec
from vae_core.train import fit

TOL = 1e-6


def strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def assert_same_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(strip(a), strip(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            if isinstance(va, list):
                assert max(abs(x - y) for x, y in zip(va, vb)) <= TOL, k
            elif isinstance(va, float):
                assert abs(va - vb) <= TOL, (k, va, vb)
            else:
                assert va == vb, k


@pytest.mark.parametrize("objective", [ObjectiveConfig(), ObjectiveConfig(kl_target=2.0, beta=1.0),
                                       ObjectiveConfig(aggressive=True)], ids=["plain", "soft-target", "aggressive"])
def test_fit_resumed_from_a_saved_state_equals_the_uninterrupted_run(digits, objective):
    cfg = ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(32,))
    train = TrainConfig(epochs=3, batch_size=128, seed=5)
    full = init_weights(VAE(cfg), 1)
    whole = fit(full, digits, objective, train).history

    states = []
    first = init_weights(VAE(cfg), 1)
    fit(first, digits, objective, TrainConfig(epochs=3, batch_size=128, seed=5),
        on_state=lambda s: states.append(resume.to_bytes(s, {"k": 1})), should_stop=lambda: len(states) >= 2)
    state = resume.from_bytes(states[1], {"k": 1})  # through the file format: after epoch 2
    assert state.epoch == 2 and len(state.history) == 2
    again = VAE(cfg)  # other initial weights: everything comes from the state
    rest = fit(again, digits, objective, train, start=state).history
    assert_same_history(rest, whole)
    for (k, a), b in zip(full.state_dict().items(), again.state_dict().values()):
        assert torch.allclose(a, b, atol=TOL, rtol=0), k


def test_a_state_is_refused_for_another_run_and_when_absent(tmp_path, digits):
    cfg = ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,))
    states = []
    fit(VAE(cfg), digits, ObjectiveConfig(), TrainConfig(epochs=1), on_state=states.append)
    resume.save(tmp_path, states[0], {"seed": 1})
    with pytest.raises(resume.ResumeError, match="other settings"):
        resume.load(tmp_path, {"seed": 2})
    (tmp_path / resume.NAME).write_bytes(b"\x08" + b"\0" * 20)
    with pytest.raises(resume.ResumeError, match="not a readable"):
        resume.load(tmp_path, {"seed": 1})
    with pytest.raises(resume.ResumeError, match="no training state"):
        resume.load(tmp_path / "elsewhere", {"seed": 1})


def spec(epochs=4) -> RunSpec:
    return RunSpec(data=store.DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(32,)),
                   train=TrainConfig(epochs=epochs, batch_size=128, seed=3))


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path):
    ws = store.Workspace(tmp_path)
    svc = RunService(ws, LocalExecutor())
    whole = svc.submit(spec(), label="whole")
    whole.wait()
    stopped = svc.submit(spec(), label="part")
    stopped._on_epoch.append(lambda r: r.stop() if len(r.history) == 2 else None)
    stopped.wait()
    assert stopped.status == STOPPED and len(stopped.history) == 2
    assert (ws.runs_dir / stopped.id / resume.NAME).is_file()
    again = svc.resume(stopped.id)
    assert again.id == stopped.id and svc.get(stopped.id) is again and len(again.history) == 2
    again.wait()
    assert again.status == "done"
    assert_same_history(again.history, whole.history)
    a, b = svc.checkpoint(whole).model.state_dict(), svc.checkpoint(again).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=TOL, rtol=0) for k in a)
    assert not (ws.runs_dir / again.id / resume.NAME).exists()  # kept its model: nothing left to resume
    with pytest.raises(resume.ResumeError, match="only an interrupted or stopped"):
        svc.resume(again.id)


def cli(*args, home, **kw):
    env = dict(os.environ, VAE_HOME=str(home))
    return subprocess.Popen([sys.executable, "-m", "vae_core", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_killed_cli_run_keeps_its_epochs_and_resumes_from_the_cli(tmp_path):
    args = ["train", "--dataset", "digits", "--hidden", "32", "--epochs", "20", "--batch-size", "128", "--seed", "3"]
    proc = cli(*args, "--out", "killed", home=tmp_path)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    record = None
    while time.monotonic() < deadline:  # the record on disk follows the epochs while it trains
        found = list(runs.glob("*/run.json"))
        if found:
            record = json.loads(found[0].read_text())
            if record["history"] and (found[0].parent / resume.NAME).is_file():
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert record and record["history"] and record["status"] == "running", record
    run_id = record["id"]
    svc = RunService(store.Workspace(tmp_path), LocalExecutor())
    assert svc.get(run_id).status == INTERRUPTED and svc.get(run_id).history  # honest, with its epochs
    del svc

    done = cli("train", "--resume", run_id, home=tmp_path)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "resuming run" in err and str(tmp_path / "models" / "killed.safetensors") in out
    whole = cli(*args, "--out", "whole", home=tmp_path)
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    from vae_core import checkpoint as ckpt_io
    a = ckpt_io.load(tmp_path / "models" / "killed.safetensors")
    b = ckpt_io.load(tmp_path / "models" / "whole.safetensors")
    assert_same_history(a.history, b.history)
    assert all(torch.allclose(x, y, atol=TOL, rtol=0) for x, y in
               zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_name_taken_while_training_is_refused_first_or_kept_under_a_fresh_name(tmp_path):
    ws = store.Workspace(tmp_path)
    svc = RunService(ws, LocalExecutor())
    out = ws.models_dir / "mine.safetensors"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"someone's")
    from vae_core import checkpoint as ckpt_io
    with pytest.raises(ckpt_io.CheckpointExistsError, match="already exists"):  # before any training
        svc.submit(spec(1), out=out)
    other = ws.models_dir / "late.safetensors"
    run = svc.submit(spec(2), out=other)
    run._on_epoch.append(lambda r: other.write_bytes(b"taken meanwhile") if len(r.history) == 1 else None)
    run.wait()
    assert run.status == "done" and run.saved == ws.models_dir / "late-2.safetensors"
    assert other.read_bytes() == b"taken meanwhile" and svc.checkpoint(run).history == run.history


def test_a_killed_save_leaves_no_temporary_file_for_good(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    folder = tmp_path / "models"
    folder.mkdir()
    stale = folder / f".m.safetensors~{pid}~abc.tmp"
    stale.write_bytes(b"half")
    mine = folder / f".n.safetensors~{os.getpid()}~abc.tmp"  # a save still going on in a live process
    mine.write_bytes(b"half")
    atomic_write(folder / "kept.safetensors", b"whole")
    assert remove_stale_temporaries(folder) == 1
    assert not stale.exists() and mine.exists() and (folder / "kept.safetensors").read_bytes() == b"whole"
    stale.write_bytes(b"half")
    RunService(store.Workspace(tmp_path), LocalExecutor())  # a process opening the workspace cleans up
    assert not stale.exists()


def test_a_second_process_never_removes_the_runs_a_server_lists(tmp_path):
    ws = store.Workspace(tmp_path)
    server = RunService(ws, LocalExecutor(), keep=5)
    listed = server.submit(spec(1), label="listed")
    listed.wait()
    cli_like = RunService(ws, LocalExecutor(), keep=1)  # like `train` from the CLI on the same workspace
    for _ in range(2):
        cli_like.submit(spec(1)).wait()
    assert (ws.runs_dir / listed.id / "model.safetensors").is_file()  # the server's run survives
    assert server.checkpoint(listed).history == listed.history
    own = [r for r in cli_like.runs()]
    assert len(own) == 1  # the second process keeps only its newest in its own list
    server.close()  # the server is gone: now a process alone on the workspace prunes everything beyond `keep`
    cli_like.submit(spec(1)).wait()
    assert not (ws.runs_dir / listed.id).exists()


def test_a_full_disk_is_one_clear_message_and_nothing_half_written(tmp_path, monkeypatch, capsys):
    import errno

    from vae_core import files, runs
    from vae_core.__main__ import main

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setenv("VAE_HOME", str(tmp_path))
    monkeypatch.setattr(runs, "atomic_write", full)
    monkeypatch.setattr(files, "atomic_write", full)
    monkeypatch.setattr(resume, "atomic_write", full)
    assert main(["train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())  # nothing half-written
