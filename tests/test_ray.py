"""Runs as Ray tasks on a real local Ray cluster: `ray start --head` on 127.0.0.1 with 2 CPUs, stopped in teardown.

A small sweep goes through it with one run that raises, then resumes; the same sweep gives the same numbers on
the local executor with one worker, with two worker processes, and on Ray; data a user brought reaches the
workers through Ray's object store; and every server Ray started listens on the loopback interface only.
"""
import importlib.util
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from test_executors import Recorder

from bench.common import SAME_NUMBERS_RTOL, max_relative_difference
from vae_core import store
from vae_core.__main__ import main
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data import load_array_file
from vae_core.executors import LocalExecutor, RayExecutor
from vae_core.jobs import Job
from vae_core.runs import RunService, RunSpec
from vae_core.sweep import SweepSpec, load_sweep, submit_sweep

# Ray itself is imported by the executor only: it reads its local-only mode when it is imported
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed (pip install -e '.[ray]')")
RAY_CLI = Path(sys.executable).parent / "ray"
SWEEP = SweepSpec(latent_dim=4, hidden=(32,), epochs=3, betas=(0.5, 1.0, 4.0), iwae_k=5, batch_size=128)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The head of a local cluster, as `ray start --head --block` in its own process group (so that teardown
    stops every process it started); its address once it answers. The head and this process share a token
    through the environment (so a token file in ~/.ray, or none, changes nothing)."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # its sockets and logs (a short path: socket names)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_urlsafe(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # Ray's local-only mode: 127.0.0.1 only
    head = subprocess.Popen([str(RAY_CLI), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # the head answers once its GCS listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Ray head did not start")
                time.sleep(0.3)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def ray_executor(cluster):
    executor = RayExecutor(cluster)
    yield executor
    executor.shutdown()
    executor.ray.shutdown()


def run_sweep(executor, folder: Path, workspace: store.Workspace, spec: SweepSpec = SWEEP):
    service = RunService(workspace, executor)
    queued = submit_sweep(service, spec, folder, (1, 8, 8))
    for run in queued:
        assert run.wait(300)
    return queued, load_sweep(folder)[1]


def test_the_cluster_and_the_executor_listen_on_loopback_only(ray_executor):
    import psutil

    assert ray_executor.max_workers == 2 and ray_executor.options == {"num_cpus": 1.0, "num_gpus": 0.0,
                                                                      "max_retries": 0}
    ray_pids = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")}
    assert ray_pids
    addresses = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in ray_pids}
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


def test_a_sweep_on_ray_with_a_run_that_raises_and_a_resume(ray_executor, tmp_path):
    ws = store.Workspace(tmp_path / "home")
    service = RunService(ws, ray_executor)
    folder = tmp_path / "sweep"
    queued = submit_sweep(service, SWEEP, folder, (1, 8, 8))
    broken = service.submit(RunSpec(data=store.DataRef("gone.npz", "0" * 64), model=ModelConfig(image_shape=(1, 8, 8)),
                                    train=TrainConfig(epochs=1)))  # its data is nowhere: it raises on the worker
    for run in (*queued, broken):
        assert run.wait(300)
    assert [r.status for r in queued] == ["done"] * 3
    assert broken.status == "failed" and "not in the workspace" in broken.error and broken.saved is None
    runs = load_sweep(folder)[1]
    assert len(runs) == 3 and all(r.evaluation["iwae_nll"] is not None for r in runs)
    assert all(len(r.checkpoint.history) == 3 for r in runs)
    # a run lost (a worker died before it saved): the sweep again trains only that one
    (folder / f"{runs[1].name}.safetensors").unlink()
    again = submit_sweep(service, SWEEP, folder, (1, 8, 8))
    assert [r.spec.objective.beta for r in again] == [1.0]
    again[0].wait(300)
    assert again[0].status == "done" and len(load_sweep(folder)[1]) == 3


def test_the_same_sweep_gives_the_same_numbers_on_every_executor(ray_executor, tmp_path):
    ws = store.Workspace(tmp_path / "home")
    results = {}
    for name, executor in (("local-1", LocalExecutor(1)), ("local-2", LocalExecutor(2, processes=True)),
                           ("ray", ray_executor)):
        _, runs = run_sweep(executor, tmp_path / name, ws)
        results[name] = [(r.evaluation, [{k: v for k, v in h.items() if not k.endswith("seconds")}
                                         for h in r.checkpoint.history]) for r in runs]
        if executor is not ray_executor:
            executor.shutdown()
    # equal up to float32 rounding: one worker runs with all the cores' torch threads, the others with one each
    assert max_relative_difference(results["local-1"], results["local-2"]) <= SAME_NUMBERS_RTOL
    assert max_relative_difference(results["local-1"], results["ray"]) <= SAME_NUMBERS_RTOL
    assert results["local-2"] == results["ray"]  # one torch thread each: equal bit for bit


def test_a_users_dataset_reaches_the_ray_workers(ray_executor, tmp_path):
    ws = store.Workspace(tmp_path / "home")
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).integers(0, 256, (80, 8, 8), dtype=np.uint8), y=np.arange(80) % 4)
    stored = ws.put_dataset(load_array_file(buf.getvalue(), "mine.npz"), "mine.npz")
    service = RunService(ws, ray_executor)
    run = service.submit(RunSpec(data=store.DataRef("mine.npz", stored.hash),
                                 model=ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(16,), n_classes=4),
                                 train=TrainConfig(epochs=2, batch_size=32)))
    assert run.wait(300) and run.status == "done", run.error
    assert service.checkpoint(run).dataset["hash"] == stored.hash and len(run.history) == 2


def test_the_cli_runs_a_sweep_on_the_cluster(ray_executor, cluster, tmp_path, capsys):
    argv = ["sweep", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1", "--betas", "1,2",
            "--iwae-k", "0", "--json"]
    assert main([*argv, "--executor", "ray", "--ray-address", cluster, "--out", str(tmp_path / "on-ray")]) == 0
    on_ray = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert main([*argv, "--out", str(tmp_path / "here")]) == 0
    here = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(on_ray) == 2 and max_relative_difference(on_ray, here) <= SAME_NUMBERS_RTOL


def test_an_unreachable_cluster_is_a_clear_error_not_a_hang(capsys):
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--executor", "ray",
                 "--ray-address", f"127.0.0.1:{_free_port()}", "--out", "never"]) == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:" in capsys.readouterr().err


def test_a_ray_worker_that_dies_fails_its_run_with_the_reason_and_the_next_one_runs(ray_executor):
    def dying(reporter):  # nested: Ray ships it by value to the worker, which then vanishes
        os._exit(3)

    def fine(reporter):
        reporter.epoch({"epoch": 1}, None)
        return "ok"

    crashed = ray_executor.submit(Job("dies"), lambda job: ray_executor.call(dying, (), Recorder()))
    assert crashed.wait(120) and crashed.status == "failed" and "Ray worker running it died" in crashed.error
    rec = Recorder()
    after = ray_executor.submit(Job("fine"), lambda job: ray_executor.call(fine, (), rec))
    assert after.wait(120) and after.result == "ok" and rec.epochs == [{"epoch": 1}], (after.status, after.error)
