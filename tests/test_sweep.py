"""The collapse lab's sweep encodes what the literature says, on small data."""
import dataclasses
import json
import math

import pytest

from vae_core import checkpoint as C
from vae_core.__main__ import main
from vae_core.config import ConfigError
from vae_core.executors import LocalExecutor
from vae_core.runs import RunService
from vae_core.store import Workspace
from vae_core.sweep import MANIFEST, SweepError, SweepSpec, load_sweep, submit_sweep

def run_sweep(spec: SweepSpec, folder, image_shape=(1, 8, 8)):
    """Submit a sweep to a fresh run service, wait for it, and return (finished runs, runs that were trained)."""
    service = RunService(Workspace(folder.parent / f"{folder.name}-workspace"), LocalExecutor(1))
    queued = submit_sweep(service, spec, folder, image_shape)
    for run in queued:
        run.wait()
    assert all(r.status == "done" for r in queued), [(r.status, r.error) for r in queued]
    return load_sweep(folder)[1], queued


KEYS = {"beta", "free_bits", "warmup", "rate", "distortion", "test_elbo", "active_units", "mutual_info", "iwae_nll",
        "kl_per_dim"}


@pytest.fixture(scope="module")
def beta_sweep(digits, tmp_path_factory):
    spec = SweepSpec(latent_dim=8, hidden=(64,), epochs=12, betas=(0.5, 1.0, 4.0, 30.0), iwae_k=20, batch_size=64)
    out = tmp_path_factory.mktemp("beta")
    return spec, out, run_sweep(spec, out)[0]


def test_active_units_fall_with_beta_and_vanish_for_large_beta(beta_sweep):
    _, _, runs = beta_sweep
    au = [r.evaluation["active_units"] for r in runs]
    assert au == sorted(au, reverse=True), au
    assert au[0] >= 3 and au[-1] == 0
    assert runs[-1].evaluation["rate"] < 0.1  # β = 30: the posterior collapsed onto the prior


def test_rate_plus_distortion_is_the_negative_elbo_and_bounds_hold(beta_sweep, digits):
    _, _, runs = beta_sweep
    for r in runs:
        ev = r.evaluation
        assert KEYS <= set(ev)
        assert ev["rate"] + ev["distortion"] == pytest.approx(ev["test_elbo"], abs=1e-9)
        assert sum(ev["kl_per_dim"]) == pytest.approx(ev["rate"], abs=1e-6)
        assert ev["mutual_info"] <= math.log(len(digits.x_test))
        assert ev["iwae_nll"] <= ev["test_elbo"] + 0.5


def test_free_bits_keep_every_dimension_from_collapsing(digits, tmp_path):
    """β = 4 collapses the code without free bits. With λ = 0.5 the objective floors each dimension's batch-mean
    training KL at λ, so no dimension collapses: each keeps a test KL of the order of λ (over seeds 0–3 we
    measured 0.29–0.55 nats per dimension), and together they carry about d·λ."""
    lam, d = 0.5, 6
    spec = SweepSpec(latent_dim=d, hidden=(64,), epochs=12, betas=(4.0,), free_bits=(0.0, lam), iwae_k=0,
                     batch_size=64)
    without, with_fb = run_sweep(spec, tmp_path / "fb")[0]
    kl = with_fb.evaluation["kl_per_dim"]
    assert min(kl) > 0.5 * lam, kl
    assert 0.7 * d * lam < sum(kl) < 1.3 * d * lam, kl
    assert with_fb.evaluation["active_units"] == d and without.evaluation["active_units"] == 0
    assert without.evaluation["rate"] < 0.1
    # and during training: after the first few epochs, no dimension falls towards 0
    for rec in with_fb.checkpoint.history[4:]:
        assert min(rec["kl_per_dim"]) > 0.4 * lam


def test_sweep_is_cached_and_reloads(beta_sweep):
    spec, out, runs = beta_sweep
    again, trained = run_sweep(spec, out)
    assert not trained and [r.evaluation for r in again] == [r.evaluation for r in runs]
    spec2, loaded = load_sweep(out)
    assert spec2 == spec and [r.name for r in loaded] == [r.name for r in runs]
    assert loaded[0].checkpoint.history == runs[0].checkpoint.history


def test_a_changed_setting_retrains_only_that_run(tmp_path):
    spec = SweepSpec(latent_dim=2, hidden=(16,), epochs=1, betas=(1.0, 2.0), iwae_k=0)
    run_sweep(spec, tmp_path / "s")
    spec2 = SweepSpec(latent_dim=2, hidden=(16,), epochs=1, betas=(1.0, 2.0, 4.0), iwae_k=0)
    runs, trained = run_sweep(spec2, tmp_path / "s")
    assert [r.spec.objective.beta for r in trained] == [4.0] and len(runs) == 3


def test_a_stopped_sweep_keeps_only_complete_runs_and_resumes_the_rest(tmp_path):
    folder = tmp_path / "s"
    spec = SweepSpec(latent_dim=2, hidden=(16,), epochs=30, betas=(1.0, 2.0, 4.0), iwae_k=0)
    service = RunService(Workspace(tmp_path / "ws"), LocalExecutor(1))
    first, second, third = submit_sweep(service, spec, folder, (1, 8, 8))
    first.wait()
    while not second.history:  # the second run is training: stop it after its first epoch, and drop the third
        second.wait(0.02)
    service.stop(second)
    service.stop(third)
    second.wait(), third.wait()
    assert (first.status, second.status, third.status) == ("done", "stopped", "cancelled")
    assert second.saved is None  # a sweep caches no half-trained run
    assert [r.name for r in load_sweep(folder)[1]] == ["beta1_fb0_wu0"]
    runs, trained = run_sweep(spec, folder)
    assert [r.spec.objective.beta for r in trained] == [2.0, 4.0] and len(runs) == 3


def test_bad_sweep_folders(tmp_path):
    with pytest.raises(SweepError):
        load_sweep(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(SweepError):
        load_sweep(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"spec": {"latent_dim": 2}, "runs": [{"file": "../../etc/x"}]}))
    with pytest.raises(SweepError, match="cannot open x"):
        load_sweep(tmp_path)


def test_spec_validation():
    with pytest.raises(ConfigError):
        SweepSpec(betas=())
    with pytest.raises(ConfigError):
        SweepSpec(betas=tuple(range(1, 10)), free_bits=(0, 1, 2), warmups=(0, 1, 2))  # 81 runs > limit


def test_cli_sweep_json_lines(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1",
                 "--betas", "0.5,1", "--free-bits", "0,0.5", "--warmups", "0", "--iwae-k", "5", "--out", str(out),
                 "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 4 and all(KEYS <= set(line) for line in lines)
    assert [(line["beta"], line["free_bits"]) for line in lines] == [(0.5, 0), (0.5, 0.5), (1, 0), (1, 0.5)]
    assert len(list(out.glob("*.safetensors"))) == 4
    C.load(next(out.glob("*.safetensors")))


def test_autoregressive_sweep_runs(tmp_path):
    spec = SweepSpec(latent_dim=4, hidden=(16,), autoregressive=True, epochs=1, n_train=200, n_test=50, iwae_k=3)
    (run,), _ = run_sweep(spec, tmp_path / "ar")
    assert run.checkpoint.config.autoregressive and run.evaluation["iwae_nll"] is not None


def test_parse_values():
    from vae_core.sweep import parse_values
    assert parse_values("0.5, 1,4 ,1", "β") == (0.5, 1.0, 4.0)
    for bad, msg in (("", "at least one"), ("1, x", "not a number"), ("-1", "outside"), ("nan", "outside")):
        with pytest.raises(ConfigError, match=msg):
            parse_values(bad, "β")


def test_a_ppca_sweep_trains_one_linear_vae_per_noise_variance(tmp_path):
    spec = SweepSpec(architecture="linear", sigma2s=(0.05, 0.2), latent_dim=8, epochs=2, iwae_k=0, batch_size=256)
    assert spec.n_runs == 2
    runs, _ = run_sweep(spec, tmp_path / "ppca")
    assert [r.name for r in runs] == ["beta1_fb0_wu0_s20.05", "beta1_fb0_wu0_s20.2"]
    assert [r.evaluation["sigma2"] for r in runs] == pytest.approx([0.05, 0.2])
    assert [r.checkpoint.model.config.gaussian_sigma ** 2 for r in runs] == pytest.approx([0.05, 0.2])
    assert runs[0].evaluation["collapsed_distortion"] is None  # no Bernoulli line for a Gaussian likelihood
    for bad in (dict(architecture="linear"), dict(sigma2s=(0.1,))):
        with pytest.raises(ConfigError):
            SweepSpec(**bad)


def test_a_visitor_cannot_rewrite_another_visitors_sweep(tmp_path, digits):
    from vae_core import store
    from vae_core.sweep import OWNER, SweepError, sweep_owner
    service = RunService(store.Workspace(tmp_path), LocalExecutor())
    spec = SweepSpec(dataset="digits", latent_dim=2, epochs=1, betas=(1.0,), free_bits=(0.0,), warmups=(0.0,),
                     n_train=200, iwae_k=0)
    folder = tmp_path / "sweeps" / "lecture"
    for run in submit_sweep(service, spec, folder, digits.image_shape, owner="alice"):
        run.wait()
    assert sweep_owner(folder) == "alice" and (folder / OWNER).is_file()
    with pytest.raises(SweepError, match="another user"):
        submit_sweep(service, dataclasses.replace(spec, betas=(4.0,)), folder, digits.image_shape, owner="bob")
    assert submit_sweep(service, spec, folder, digits.image_shape, owner="alice") == []  # hers: reused
    assert submit_sweep(service, spec, folder, digits.image_shape, owner="cli") == []  # the server's owner may
