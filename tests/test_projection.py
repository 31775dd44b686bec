"""Pure computations behind the app (vae_core/projection.py)."""
import numpy as np
import pytest
import torch

from vae_core import projection as P


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ np.diag([5, 3, 1, 0.5, 0.1])
    coords, ratio = P.pca(x, 2)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    for j in range(2):  # equal up to the sign of each axis
        assert np.allclose(np.abs(coords[:, j]), np.abs(ref[:, j]))
    assert np.allclose(ratio, s[:2] ** 2 / (s**2).sum())
    assert ratio[0] > ratio[1]


def test_pca_of_one_dimension_pads_to_two_columns():
    coords, ratio = P.pca(np.arange(10.0)[:, None], 2)
    assert coords.shape == (10, 2) and np.all(coords[:, 1] == 0) and ratio[0] == pytest.approx(1.0)


def test_slerp_endpoints_and_norm():
    a, b = np.array([3.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    path = P.slerp(a, b, np.linspace(0, 1, 11))
    assert np.allclose(path[0], a) and np.allclose(path[-1], b)
    norms = np.linalg.norm(path, axis=1)
    assert np.allclose(norms, np.linspace(3, 2, 11))  # the norm moves linearly, never dips to the centre
    lin = P.lerp(a, b, np.linspace(0, 1, 11))
    assert np.linalg.norm(lin, axis=1).min() < norms.min()


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = np.array([1.0, 1.0])
    assert np.allclose(P.slerp(a, 2 * a, np.array([0.5])), [[1.5, 1.5]])
    assert np.allclose(P.slerp(np.zeros(2), a, np.array([0.5])), [[0.5, 0.5]])


def test_interpolate_validates():
    with pytest.raises(ValueError):
        P.interpolate(np.zeros(2), np.ones(2), 1)
    with pytest.raises(ValueError):
        P.interpolate(np.zeros(2), np.ones(2), 5, "cubic")
    assert P.interpolate(np.zeros(2), np.ones(2), 5, "spherical").shape == (5, 2)


def test_roc_of_a_perfect_score_is_one_and_of_a_reversed_score_zero():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert P.roc(s, y)["auroc"] == 1.0
    assert P.roc(-s, y)["auroc"] == 0.0
    r = P.roc(np.random.default_rng(0).random(2000), np.arange(2000) % 2)
    assert abs(r["auroc"] - 0.5) < 0.05 and r["fpr"][0] == 0 and r["tpr"][-1] == 1


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        P.roc(np.ones(3), np.ones(3))


def test_held_out_split_removes_the_class_from_training_only(digits):
    train, is_out = P.held_out_split(digits, 3)
    assert not bool((train.y_train == 3).any())
    assert len(train.x_test) == len(digits.x_test)
    assert np.array_equal(is_out, (digits.y_test == 3).numpy())


def test_threshold_flags_and_top_k_are_sorted_by_score():
    s = np.array([1.0, 5.0, 3.0, 4.0])
    assert P.threshold_flags(s, 2.5).tolist() == [1, 3, 2]
    assert P.top_k(s, 2).tolist() == [1, 3]


def test_density_integrates_to_about_one():
    pts = np.random.default_rng(0).normal(size=(500, 2))
    g = np.linspace(-5, 5, 101)
    dens = P.density_2d(pts, g, g)
    assert dens.shape == (101, 101)
    assert abs(dens.sum() * (g[1] - g[0]) ** 2 - 1) < 0.02


def test_ellipse_and_prior_mass():
    e = P.ellipse(np.array([1.0, 2.0]), np.array([0.5, 0.1]), 2.0)
    assert np.allclose(e[:, 0].max(), 2.0) and np.allclose(e[:, 1].min(), 1.8)
    assert P.prior_mass_within(2.0) == pytest.approx(0.8647, abs=1e-4)


def test_tsne_small_is_2d():
    x = np.random.default_rng(0).normal(size=(60, 3))
    assert P.tsne(x, perplexity=10).shape == (60, 2)
    assert P.subsample(10, 20).tolist() == list(range(10)) and len(P.subsample(1000, 50)) == 50


def test_held_out_experiment_gives_an_auroc(digits):
    torch.manual_seed(0)
    res = P.held_out_experiment(digits, 0, epochs=2, latent_dim=2, hidden=(32,))
    for r in res["curves"].values():
        assert 0.0 <= r["auroc"] <= 1.0
    assert res["n_out"] == int((digits.y_test == 0).sum())


def test_tsne_keeps_clusters_apart_and_reports_progress():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    labels = np.repeat(np.arange(3), 100)
    x = centres[labels] + rng.normal(size=(300, 8))
    seen = []
    emb = P.tsne(x, perplexity=20, progress=seen.append)
    assert emb.shape == (300, 2) and np.isfinite(emb).all()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    # every point's nearest neighbour in the embedding comes from its own cluster
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.99
