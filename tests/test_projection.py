"""2-D maps of the latent codes (vae_core/projection.py)."""
import numpy as np
import pytest

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


def test_tsne_small_is_2d():
    x = np.random.default_rng(0).normal(size=(60, 3))
    assert P.tsne(x, perplexity=10).shape == (60, 2)
    assert P.subsample(10, 20).tolist() == list(range(10)) and len(P.subsample(1000, 50)) == 50


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


# ---------------------------------------------------------------- UMAP (one fit shared: numba's first call JITs)

def _blobs(n_per: int = 150, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per)
    centres = np.zeros((2, d))
    centres[1, 0] = 20.0  # two unit Gaussians 20 standard deviations apart
    return centres[labels] + rng.normal(size=(2 * n_per, d)), labels


@pytest.fixture(scope="module")
def umap_fit():
    x, labels = _blobs()
    seen = []
    return x, labels, P.umap(x, seed=3, progress=seen.append), seen


def test_umap_is_2d_float64_and_reports_progress(umap_fit):
    x, _, emb, seen = umap_fit
    assert emb.shape == (len(x), 2) and emb.dtype == np.float64 and np.isfinite(emb).all()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert P.UMAP_GRAPH_SHARE in seen  # the hook after the neighbour graph fired


def test_umap_is_reproducible_with_a_seed(umap_fit):
    x, _, emb, _ = umap_fit
    assert np.array_equal(P.umap(x, seed=3), emb)


def test_umap_keeps_two_blobs_apart(umap_fit):
    _, labels, emb, _ = umap_fit
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).all()
    between = np.linalg.norm(emb[labels == 0].mean(0) - emb[labels == 1].mean(0))
    within = max(emb[labels == k].std(0).max() for k in (0, 1))
    assert between > 3 * within


def test_umap_small_inputs_one_dimension_and_errors():
    x = np.random.default_rng(0).normal(size=(8, 1))
    assert P.umap(x).shape == (8, 2)  # 1-D codes, n_neighbors 15 clipped to 7
    with pytest.raises(ValueError, match="N ≥ 5"):
        P.umap(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        P.umap(np.full((10, 2), np.nan))
