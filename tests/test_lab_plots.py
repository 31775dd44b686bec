import numpy as np

from vae_core.lab_plots import kl_heatmap, kl_timeline, rd_plane

EVALS = [dict(beta=b, free_bits=fb, warmup=0, rate=r, distortion=d, test_elbo=r + d, active_units=au,
              kl_per_dim=[r / 2, r / 2])
         for b, fb, r, d, au in [(4, 0, 1.0, 40.0, 1), (0.5, 0, 9.0, 20.0, 2), (1, 0, 5.0, 25.0, 2),
                                 (4, 0.5, 2.0, 33.0, 2)]]


def test_rd_plane_joins_beta_runs_in_order_and_draws_iso_elbo_lines():
    fig = rd_plane(EVALS)
    runs = [t for t in fig.data if t.mode == "lines+markers+text"]
    assert len(runs) == 2  # λ = 0 family and λ = 0.5 family
    fam0 = next(t for t in runs if t.name == "β-VAE")
    assert {t.name for t in runs} == {"β-VAE", "λ=0.5"}
    assert list(fam0.x) == [9.0, 5.0, 1.0] and list(fam0.y) == [20.0, 25.0, 40.0]  # β = 0.5, 1, 4
    assert "β=0.5" in fam0.hovertext[0] and "rate 9.00" in fam0.hovertext[0]
    iso = [t for t in fig.data if t.mode == "lines"]
    assert len(iso) == 5
    for t in iso:  # every point of an iso line has the same R + D
        assert np.isclose(t.x[0] + t.y[0], t.x[1] + t.y[1])


def test_kl_heatmap_is_runs_by_dimensions():
    fig = kl_heatmap(EVALS)
    assert np.array(fig.data[0].z).shape == (4, 2) and fig.data[0].z[1][0] == 4.5


def test_kl_timeline_one_line_per_dimension_and_lambda():
    hist = [{"epoch": e, "kl_per_dim": [1.0 / e, 0.5]} for e in (1, 2, 3)]
    fig = kl_timeline(hist, free_bits=0.5)
    assert len(fig.data) == 2 and list(fig.data[0].y) == [1.0, 0.5, 1 / 3]
    assert any(s.type == "line" for s in fig.layout.shapes)


def test_ppca_spectrum_marks_each_noise_variance_with_its_active_count():
    from vae_core.lab_plots import ppca_spectrum
    lam = np.array([0.5, 0.3, 0.15, 0.08, 0.01])
    fig = ppca_spectrum(lam[::-1], [0.05, 0.2], latent_dim=4)  # any order in; the 4 largest shown, largest first
    assert list(fig.data[0].y) == [0.5, 0.3, 0.15, 0.08]
    assert [a.text for a in fig.layout.annotations] == ["σ² = 0.05: 4 active", "σ² = 0.2: 2 active"]
