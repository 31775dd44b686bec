"""2-D maps of the latent codes: PCA, t-SNE and UMAP (and the seeded subsample they run on). Numpy in, numpy
out, with a progress callback for the slow ones; no Streamlit, no plotting."""
from __future__ import annotations

import re
import warnings
from typing import Callable

import numpy as np


# ---------------------------------------------------------------- projections

def pca_axes(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top principal axes of the rows of `x` (N, D) (centred SVD): (mean (D,), axes (k, D) orthonormal rows,
    explained variance ratio (k,)), k = n_components; a 1-D latent's missing axes are zero rows. The sign of each
    axis is fixed so that its largest loading is positive, making the picture reproducible."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA needs an (N ≥ 2, D) array, got shape {x.shape}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(n_components, vt.shape[0])
    axes = vt[:k]  # (k, D)
    signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    total = float((s**2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    if k < n_components:  # a 1-D latent: zero axes, so callers always get n_components coordinates
        axes = np.vstack([axes, np.zeros((n_components - k, x.shape[1]))])
        ratio = np.concatenate([ratio, np.zeros(n_components - k)])
    return mean, axes, ratio


def pca(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of `x` (N, D) on their top principal axes (`pca_axes`): (coords (N, k), explained
    variance ratio (k,))."""
    mean, axes, ratio = pca_axes(x, n_components)
    return (np.asarray(x, dtype=np.float64) - mean) @ axes.T, ratio


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` of `n` rows, seeded (all rows when n ≤ max_points)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


TSNE_EXAGGERATION_ITERS = 250
TSNE_ITERS = 300


def tsne(x: np.ndarray, *, perplexity: float = 30.0, seed: int = 0,
         progress: Callable[[float], None] | None = None) -> np.ndarray:
    """t-SNE to 2-D (van der Maaten & Hinton 2008) with openTSNE's FFT-accelerated gradients (Linderman et al.
    2019, FIt-SNE): exact neighbours, PCA initialisation, 250 early-exaggeration + 300 iterations on a coarser
    interpolation grid — about 2.5× faster than scikit-learn's default Barnes-Hut run at a KL within ~3 % of
    it (bench/tsne.py). Perplexity is clipped below N/3. `progress` gets the fraction done."""
    from openTSNE import TSNE  # imported on first use: keeps the app's start fast

    x = np.asarray(x, dtype=np.float32)
    if len(x) < 5:
        raise ValueError("t-SNE needs at least 5 points")
    if x.shape[1] == 1:
        x = np.hstack([x, np.zeros_like(x)])
    perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3)))
    total = TSNE_EXAGGERATION_ITERS + TSNE_ITERS
    done = [0]

    def tick(*_):
        done[0] += 25
        if progress:
            progress(0.1 + 0.9 * min(1.0, done[0] / total))

    if progress:
        progress(0.0)
    model = TSNE(n_components=2, perplexity=perplexity, initialization="pca", neighbors="exact",
                 early_exaggeration_iter=TSNE_EXAGGERATION_ITERS, n_iter=TSNE_ITERS, ints_in_interval=2,
                 n_jobs=-1, random_state=seed, callbacks=tick, callbacks_every_iters=25)
    return np.asarray(model.fit(x), dtype=np.float64)  # (N, 2)


UMAP_MIN_POINTS = 5
UMAP_KNN_SHARE = 0.1  # of the progress bar: the exact k-nearest neighbours …
UMAP_GRAPH_SHARE = 0.15  # … then the fuzzy graph; the spectral start and the epochs share the rest


def umap(x: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
         progress: Callable[[float], None] | None = None) -> np.ndarray:
    """UMAP to 2-D (McInnes, Healy & Melville 2018) with umap-learn's defaults otherwise: a fuzzy graph of each
    point's n_neighbors nearest (itself included), a spectral start and 500 epochs of stochastic layout (200
    above 10,000 points). n_neighbors is clipped to N − 1; a 1-D code gets a zero second column.

    The neighbours are exact, found with scikit-learn and handed to umap-learn as `precomputed_knn`: its own
    exact path (below 4,096 points) calls a Python metric per pair, 2.4 s for 1,000 points and quadratic, and
    above that it uses approximate NN-descent. Seeded: the same x and seed give the same map, because a
    random_state makes umap-learn's layout run on one thread (n_jobs=1) — slower than its parallel mode, but
    reproducible. `progress` gets the fraction done: 0, UMAP_KNN_SHARE after the neighbours, UMAP_GRAPH_SHARE
    after the graph, then per epoch (read from umap-learn's tqdm bar through `tqdm_kwds`, which does not touch
    the computation), and 1."""

    # imported on first use: umap-learn loads numba and pynndescent, seconds the app's start must not wait for
    import umap as umap_learn
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < UMAP_MIN_POINTS or x.shape[1] < 1:
        raise ValueError(f"UMAP needs an (N ≥ {UMAP_MIN_POINTS}, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("UMAP needs finite codes; some are NaN or infinite")
    if x.shape[1] == 1:
        x = np.hstack([x, np.zeros_like(x)])
    n_neighbors = int(max(2, min(n_neighbors, len(x) - 1)))

    def report(fraction: float) -> None:
        if progress:
            progress(min(1.0, max(0.0, fraction)))

    class Epochs:  # the "file" umap-learn's epoch bar writes "n/total" to
        def write(self, text: str) -> None:
            found = re.findall(r"(\d+)/(\d+)", text)
            if found:
                n, total = map(int, found[-1])
                report(UMAP_GRAPH_SHARE + (1 - UMAP_GRAPH_SHARE) * n / max(1, total))

        def flush(self) -> None:
            pass

    class ReportingUMAP(umap_learn.UMAP):
        def _fit_embed_data(self, *args, **kwargs):  # umap-learn's hook for subclasses, called after the graph
            report(UMAP_GRAPH_SHARE)
            return super()._fit_embed_data(*args, **kwargs)

    report(0.0)
    dist, idx = NearestNeighbors(n_neighbors=n_neighbors - 1).fit(x).kneighbors()  # (N, k − 1), self left out
    knn_idx = np.hstack([np.arange(len(x))[:, None], idx]).astype(np.int32)  # (N, k): umap-learn wants self first
    knn_dist = np.hstack([np.zeros((len(x), 1)), dist]).astype(np.float32)  # (N, k)
    report(UMAP_KNN_SHARE)
    tqdm_kwds = {"disable": False, "file": Epochs(), "bar_format": "{n}/{total}", "mininterval": 0.2}
    reducer = ReportingUMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                            n_jobs=1, precomputed_knn=(knn_idx, knn_dist),
                            tqdm_kwds=tqdm_kwds if progress else None)
    with warnings.catch_warnings():
        # without a search index umap-learn cannot `transform` new points (not needed here); and a graph in
        # several pieces (well-separated clusters) is laid out piece by piece by umap-learn, so scikit-learn's
        # spectral warning about it is noise
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        warnings.filterwarnings("ignore", message="Graph is not fully connected", category=UserWarning)
        emb = np.asarray(reducer.fit_transform(x), dtype=np.float64)  # (N, 2)
    report(1.0)
    return emb
