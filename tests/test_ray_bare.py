"""The private local Ray as a fresh machine starts it: in a clean environment (an empty home folder, none of Ray's
variables or the app's), `python -m vae_core sweep --executor ray` with no address gives the local executor's
numbers, writes no token into the home folder and leaves no folder behind; and a process that imported Ray first
gets a clear message instead of a Ray that cannot authenticate."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.common import SAME_NUMBERS_RTOL, max_relative_difference
from vae_core.__main__ import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed (pip install -e '.[ray]')")
SWEEP = ["sweep", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1", "--betas", "1",
         "--iwae-k", "0", "--json"]


@pytest.fixture
def bare(tmp_path):
    """A clean environment: an empty home folder, a temporary folder of its own (a short path: Ray's socket names),
    and no variable of Ray's or of this app's (its workspace goes into the empty home)."""
    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="vb-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VAE_", "XDG_"))}
    env.update(HOME=str(home), TMPDIR=str(temp))
    yield env, home, temp
    shutil.rmtree(temp, ignore_errors=True)


def test_the_cli_sweeps_on_a_private_local_ray_from_an_empty_home(bare, tmp_path, capsys):
    env, home, temp = bare
    done = subprocess.run([sys.executable, "-m", "vae_core", *SWEEP, "--executor", "ray",
                           "--out", str(tmp_path / "on-ray")], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert main([*SWEEP, "--out", str(tmp_path / "here")]) == 0
    here = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(on_ray) == 1 and max_relative_difference(on_ray, here) <= SAME_NUMBERS_RTOL
    assert not (home / ".ray").exists()  # no token file that a later `ray start` would pick up
    assert not list(temp.glob("vae-ray-*"))  # the private Ray's sockets and logs are gone


def test_ray_imported_before_the_executor_is_a_clear_message(bare):
    env, _, _ = bare
    code = ("import ray\n"
            "from vae_core.executors import ExecutorError, from_environment\n"
            "try:\n"
            "    from_environment()\n"
            "except ExecutorError as err:\n"
            "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], env={**env, "VAE_EXECUTOR": "ray"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ray was imported in this process before the ray executor" in done.stdout
