"""2-D maps of the latent codes: PCA and t-SNE (and the seeded subsample they run on). Numpy in, numpy out,
with a progress callback for the slow one; no Streamlit, no plotting."""
from __future__ import annotations

from typing import Callable

import numpy as np


# ---------------------------------------------------------------- projections

def pca(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of `x` (N, D) on their top principal axes (centred SVD).

    Returns (coords (N, k), explained variance ratio (k,)); k = min(n_components, D). The sign of each axis is
    fixed so that its largest loading is positive, making the picture reproducible."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA needs an (N ≥ 2, D) array, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, vt.shape[0])
    axes = vt[:k]  # (k, D)
    signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    total = float((s**2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    coords = centred @ axes.T
    if k < n_components:  # a 1-D latent: pad with zeros so callers always get two columns
        coords = np.hstack([coords, np.zeros((len(x), n_components - k))])
        ratio = np.concatenate([ratio, np.zeros(n_components - k)])
    return coords, ratio


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
