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


def test_loss_curves_give_the_kl_its_own_panel_per_dimension_on_demand_and_the_active_units():
    hist = [{"epoch": e, "train_elbo": 1700 - e, "train_recon": 1695 - e, "train_kl": 5, "test_elbo": 1701 - e,
             "test_recon": 1696 - e, "test_kl": 5, "kl_per_dim": [4.0, 1.0, 0.0], "active_units": 2}
            for e in (1, 2, 3)]
    fig = plots.loss_curves(hist)
    axis = {t.name: t.yaxis for t in fig.data}
    assert axis["test −ELBO"] == axis["test reconstruction −log p(x|z)"] == axis["train −ELBO"] == "y"
    assert axis["test KL(q(z|x) ‖ p(z))"] == axis["train KL(q(z|x) ‖ p(z))"] == "y2"  # its own axis: 5 nats shows
    assert axis["active units"] == "y3" and list(fig.data[-1].y) == [2, 2, 2]
    assert fig.layout.yaxis2.title.text == "KL [nats]" and fig.layout.yaxis3.range == (-0.3, 3.3)
    assert len(fig.data) == 7 and fig.layout.xaxis3.title.text == "epoch"
    per_dim = plots.loss_curves(hist, per_dim=True)
    dims = [t for t in per_dim.data if t.name == "KL of each dimension"]
    assert [t.hovertemplate.split(",")[0] for t in dims] == ["z0", "z1", "z2"] and {t.yaxis for t in dims} == {"y2"}
    assert [t.showlegend for t in dims] == [True, False, False] and list(dims[2].y) == [0.0, 0.0, 0.0]


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


def test_class_names_reach_plotly_as_text_never_as_markup():
    evil = '<a href="http://127.0.0.1:9/">log in</a><b>x'
    fig = plots.count_bars([(evil, 3), ("plain", 1)])
    assert all("<a" not in y and "<b>" not in y for y in fig.data[0].y)
    assert "&lt;a href=" in fig.data[0].y[-1]  # shown as written: Plotly turns the entities back into the characters
    assert plots.class_label([evil], 0) == plots.chart_text(evil) and plots.class_label(None, 3) == "3"
