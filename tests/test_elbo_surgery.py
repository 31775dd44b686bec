"""ELBO surgery (Hoffman & Johnson 2016) and the collapsed-decoder line of the collapse lab, on small data."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core import store
from vae_core.config import ModelConfig
from vae_core.executors import LocalExecutor
from vae_core.lab_plots import elbo_surgery_bars, run_label
from vae_core.rd_plane import labels, rd_plane
from vae_core.metrics import (collapse_metrics, collapsed_decoder_distortion, elbo_surgery, evaluate_elbo,
                              mutual_information)
from vae_core.objectives import log_normal
from vae_core.runs import RunService
from vae_core.store import Workspace
from vae_core.sweep import MANIFEST, SweepSpec, collapsed_distortion, load_sweep, submit_sweep

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "sweeps" / "digits-d16"


@pytest.fixture(scope="module")
def sweep(digits, tmp_path_factory):
    """A small sweep on digits through the sweep machinery: an 8-D code at β = 1, and at β = 1000, where the KL
    term wins and the posterior is the prior."""
    spec = SweepSpec(latent_dim=8, hidden=(64,), epochs=60, betas=(1.0, 1000.0), iwae_k=0, batch_size=64)
    folder = tmp_path_factory.mktemp("sweep")
    service = RunService(Workspace(folder.parent / "sweep-workspace"), LocalExecutor(1))
    for run in submit_sweep(service, spec, folder, digits.image_shape):
        run.wait()
    return spec, folder, load_sweep(folder)[1]


@pytest.fixture(scope="module")
def model(sweep):
    """The β = 1 run's model (measured: rate 2.85 nats, I(x;z) 2.4–2.6, marginal KL 0.28–0.37 over seeds 0–4)."""
    return sweep[2][0].checkpoint.model.eval()


def _mc_kl_standard_error(model, x, seed=123) -> float:
    """Standard error of the one-draw-per-image Monte Carlo mean of log q(z|x) − log p(z), from draws of our own."""
    with torch.no_grad():
        mu, logvar = model.encode(x)
    mu, logvar = mu.double(), logvar.double()  # (N, d)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (N, d)
    z = mu + (0.5 * logvar).exp() * eps  # (N, d)
    terms = log_normal(z, mu, logvar) - log_normal(z, torch.zeros(()), torch.zeros(()))  # (N,)
    return float(terms.std() / math.sqrt(len(terms)))


def test_mutual_information_plus_marginal_kl_is_the_rate(model, digits):
    """E_x KL(q(z|x) ‖ p(z)) = I(x;z) + KL(q(z) ‖ p(z)). The two estimates share their draws, so their sum is a
    Monte Carlo estimate of the closed-form rate: within 4 standard errors for every seed (measured over seeds
    0–4: differences −0.16…+0.14 nats, standard error 0.10), and closer on average (+0.02)."""
    x = digits.x_test
    rate = evaluate_elbo(model, x)["kl"]
    se = _mc_kl_standard_error(model, x)
    sums = []
    for seed in range(5):
        mi, marginal = elbo_surgery(model, x, seed=seed)
        assert abs(mi + marginal - rate) < 4 * se, (seed, mi, marginal, rate, se)
        assert marginal >= 0 and 0 < mi <= math.log(len(x))
        sums.append(mi + marginal)
    assert abs(np.mean(sums) - rate) < 4 * se / math.sqrt(len(sums))
    assert mutual_information(model, x, seed=3) == elbo_surgery(model, x, seed=3)[0]


def test_mutual_information_never_exceeds_log_n(model, digits):
    for n in (5, 40):
        mi, marginal = elbo_surgery(model, digits.x_test[:n])
        assert mi <= math.log(n) + 1e-9 and marginal >= 0


def test_collapse_metrics_report_both_parts(model, digits):
    ev = collapse_metrics(model, digits.x_test)
    assert (ev["mutual_info"], ev["marginal_kl"]) == elbo_surgery(model, digits.x_test)


def test_collapsed_decoder_distortion_is_the_cross_entropy_against_the_training_mean(digits):
    x_train, x_test = digits.x_train.numpy().astype(np.float64), digits.x_test.numpy().astype(np.float64)
    p = np.clip(x_train.mean(axis=0), 1e-6, 1 - 1e-6)  # (1, 8, 8)
    bce = -(x_test * np.log(p) + (1 - x_test) * np.log(1 - p))  # (M, 1, 8, 8)
    expected = bce.reshape(len(x_test), -1).sum(axis=1).mean()
    got = collapsed_decoder_distortion(digits.x_train, digits.x_test)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(27.0156, abs=1e-4)  # digits, 1438 training and 359 test images
    # the test set's own mean would score its per-pixel entropy Σ_i H(x̄_i), the least of any z-free decoder
    q = np.clip(x_test.mean(axis=0), 1e-12, 1 - 1e-12)
    assert -(q * np.log(q) + (1 - q) * np.log(1 - q)).sum() <= got
    # a pixel never lit in training but lit in a test image costs a finite amount
    x_dark = torch.zeros(4, 1, 2, 2)
    assert np.isfinite(collapsed_decoder_distortion(x_dark, torch.ones(1, 1, 2, 2)))


def test_the_collapsed_decoder_line_is_where_a_huge_beta_run_lands(sweep):
    """A run at β = 1000 carries no information (R ≈ 0) and its decoder learns the mean image: its test distortion
    sits on the line, 27.02 nats on digits. Measured over sweep seeds 0–3: 0.056–0.062 nats above it after 60
    epochs (0.19–0.25 after 20: the decoder unlearns its response to the uninformative z only slowly)."""
    spec, _, (_, run) = sweep
    ev = run.evaluation
    line = collapsed_distortion(spec, store.load(spec.data_ref(), "cpu"))
    assert ev["collapsed_distortion"] == pytest.approx(line, rel=1e-12)
    assert ev["rate"] < 1e-3 and abs(ev["mutual_info"]) < 1e-2 and abs(ev["marginal_kl"]) < 1e-2  # MC noise
    assert abs(ev["distortion"] - line) < 0.15, (ev["distortion"], line)


def test_the_line_is_written_into_every_manifest_entry(sweep):
    _, folder, _ = sweep
    entries = json.loads((folder / MANIFEST).read_text())["runs"]
    assert entries and all(isinstance(e["collapsed_distortion"], float) for e in entries)
    assert all({"mutual_info", "marginal_kl"} <= set(e) for e in entries)


def test_a_gaussian_sweep_has_no_line(digits, monkeypatch):
    spec = SweepSpec(latent_dim=2, hidden=(16,), epochs=1)
    gaussian = ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,), likelihood="gaussian")
    monkeypatch.setattr(SweepSpec, "model_config", lambda self, image_shape: gaussian)
    assert collapsed_distortion(spec, digits) is None


EVALS = [dict(beta=b, free_bits=0.0, warmup=0.0, rate=r, distortion=d, test_elbo=r + d, active_units=1,
              kl_per_dim=[r], mutual_info=i, marginal_kl=m)
         for b, r, d, i, m in [(0.5, 6.0, 20.0, 4.5, 1.4), (4.0, 0.0, 27.0, 0.0, 0.0)]]


def dashed_line(spec: dict) -> float | None:
    """The D of the R–D plane's dashed line (the decoder ignoring z), if drawn."""
    lines = [layer for layer in spec["layer"] if layer.get("mark", {}).get("strokeDash") == [6, 4]]
    return lines[0]["data"]["values"][0]["D"] if lines else None


def test_rd_plane_draws_the_collapsed_decoder_line():
    spec = rd_plane(EVALS, collapsed_distortion=31.5)
    assert dashed_line(spec) == 31.5
    assert any("decoder ignoring z: D = 31.50" == text for text, *_ in labels(spec))
    assert spec["encoding"]["y"]["scale"]["domain"][1] > 31.5  # the line is inside the plot even above every run
    assert dashed_line(rd_plane(EVALS)) is None
    far = rd_plane(EVALS, collapsed_distortion=400.0)  # runs keep their scale; the line is named at the edge
    assert dashed_line(far) is None and far["encoding"]["y"]["scale"]["domain"][1] < 40
    assert any("D = 400.00, above the plot" in text for text, *_ in labels(far))
    assert dashed_line(rd_plane(EVALS, collapsed_distortion=400.0, stretch=True)) == 400.0  # the demo's plane


def test_surgery_bars_stack_the_two_parts_and_draw_log_n():
    fig = elbo_surgery_bars(EVALS, n_images=359)
    mi, marginal = [t for t in fig.data if t.type == "bar"]
    assert fig.layout.barmode == "relative"
    assert list(mi.x) == [4.5, 0.0] and list(marginal.x) == [1.4, 0.0]
    assert list(mi.y) == list(marginal.y) == [run_label(e) for e in EVALS]
    (rate,) = [t for t in fig.data if t.type == "scatter"]
    assert list(rate.x) == [6.0, 0.0]
    (ceiling,) = fig.layout.shapes
    assert ceiling.x0 == ceiling.x1 == pytest.approx(math.log(359))


def test_old_manifests_without_the_new_fields_still_load_and_draw(tmp_path):
    """Sweeps evaluated before the split and the line (a manifest without their fields, as users' older sweeps
    have): they load, the bars show I(x;z) alone, and the line can still be computed from the sweep's data."""
    folder = tmp_path / "old"
    shutil.copytree(SHIPPED, folder)
    manifest = json.loads((folder / "sweep.json").read_text())
    for entry in manifest["runs"]:
        for new_field in ("marginal_kl", "collapsed_distortion", "objective"):
            entry.pop(new_field, None)
    (folder / "sweep.json").write_text(json.dumps(manifest))
    spec, runs = load_sweep(folder)
    evals = [r.evaluation for r in runs]
    assert len(evals) == 20 and not any("marginal_kl" in e or "collapsed_distortion" in e for e in evals)
    bars = elbo_surgery_bars(evals, n_images=runs[0].checkpoint.dataset["n_test"])
    mi, marginal = [t for t in bars.data if t.type == "bar"]
    assert all(v is not None for v in mi.x) and all(v is None for v in marginal.x)
    line = collapsed_distortion(spec, store.load(spec.data_ref(), "cpu"))
    assert dashed_line(rd_plane(evals, collapsed_distortion=line)) == line
