"""Figure builders (vae_core/plots.py), checked through their JSON without Streamlit."""
import json

import numpy as np
import pytest
import plotly.io as pio

from vae_core import plots
from vae_core.anomaly import roc


def _spec(fig):
    return json.loads(pio.to_json(fig))


def test_latent_scatter_is_one_webgl_trace_with_row_ids():
    xy = np.random.default_rng(0).normal(size=(10_000, 2))
    ids = np.arange(10_000) + 7
    fig = plots.latent_scatter(xy, ids, color=np.arange(10_000) % 10, labels=np.arange(10_000) % 10,
                               class_names=[str(i) for i in range(10)], categorical=True, prior=True,
                               ellipses=[(3, np.zeros(2), np.ones(2))])
    spec = _spec(fig)
    points = [t for t in spec["data"] if t["type"] == "scattergl"]
    assert len(points) == 1 and spec["data"][0]["type"] == "scattergl"
    assert len(points[0]["text"]) == 10_000 and points[0]["text"][:2] == ["0", "1"]
    assert list(fig.data[0].customdata[:2]) == [7, 8]
    assert "index" in points[0]["hovertemplate"] and "label" in points[0]["hovertemplate"]


def test_latent_scatter_continuous_colour_has_a_colorbar():
    fig = plots.latent_scatter(np.zeros((5, 2)), np.arange(5), color=np.arange(5.0), color_name="−ELBO")
    assert fig.data[0].marker.colorbar.title.text == "−ELBO"
    assert fig.data[0].marker.colorbar.title.side == "right"  # beside the bar: the toolbar sits above it


def test_loss_curves_have_train_and_test_parts():
    hist = [{"epoch": e, "train_elbo": 10 - e, "train_recon": 8, "train_kl": 2, "test_elbo": 11 - e,
             "test_recon": 9, "test_kl": 2} for e in (1, 2, 3)]
    fig = plots.loss_curves(hist)
    assert len(fig.data) == 6 and any("−ELBO" in t.name for t in fig.data)


def test_lattice_figure_with_density_overlay():
    axis = np.linspace(-2, 2, 5)
    pic = np.random.default_rng(0).random((5 * 9 - 1, 5 * 9 - 1))
    u = np.linspace(0, 4, 20)
    dens = np.random.default_rng(1).random((20, 20))
    fig = plots.lattice_figure(pic, axis, axis, cell=8, density=dens, density_u=u)
    types = [t.type for t in fig.data]
    assert types == ["image", "contour"] and fig.data[0].source.startswith("data:image/png;base64,")


def test_histogram_and_roc_figures():
    s = np.arange(100.0)
    fig = plots.score_histogram(s, 90.0, "−ELBO")
    assert "9 flagged" in fig.layout.annotations[0].text
    r = roc(s, s > 80)
    fig = plots.roc_figure({"−ELBO": r})
    assert "AUROC 1.000" in fig.data[0].name
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the axes, off the curves


def test_ellipse_and_prior_mass():
    e = plots.ellipse(np.array([1.0, 2.0]), np.array([0.5, 0.1]), 2.0)
    assert np.allclose(e[:, 0].max(), 2.0) and np.allclose(e[:, 1].min(), 1.8)
    assert plots.prior_mass_within(2.0) == pytest.approx(0.8647, abs=1e-4)


def test_covariance_ellipse_is_the_n_sigma_contour_at_any_angle():
    from vae_core.plots import covariance_ellipse
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2))
    cov = a @ a.T + 0.1 * np.eye(2)  # (2, 2), tilted
    ring = covariance_ellipse(np.array([1.0, -2.0]), cov, n_sigma=2.0)
    d = ring - np.array([1.0, -2.0])
    mahalanobis = np.einsum("pi,ij,pj->p", d, np.linalg.inv(cov), d)  # every point at 2σ: (x−c)ᵀ Σ⁻¹ (x−c) = 4
    assert np.allclose(mahalanobis, 4.0)
