"""Pure computations behind the app's pages: 2-D projections (PCA, t-SNE), interpolation (lerp, slerp),
Gaussian ellipses, density of the aggregate posterior, ROC helpers, the held-out-class split and the
latents table.
Numpy in, numpy out; no Streamlit, no plotting."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .data import Dataset


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
    from openTSNE import TSNE

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


# ---------------------------------------------------------------- interpolation

def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(1−t)·a + t·b for each t: returns (len(t), d)."""
    a, b, t = np.asarray(a, float), np.asarray(b, float), np.asarray(t, float)[:, None]
    return (1 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for VAEs): moves along the great circle between
    the directions of a and b while the norm goes linearly from |a| to |b|, so intermediate codes keep a
    typical norm under the Gaussian prior. Falls back to `lerp` for (anti)parallel or zero vectors."""
    a, b, t = np.asarray(a, float), np.asarray(b, float), np.asarray(t, float)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return lerp(a, b, t)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return lerp(a, b, t)
    tt = t[:, None]
    direction = (np.sin((1 - tt) * omega) * ua + np.sin(tt * omega) * ub) / np.sin(omega)
    return direction * ((1 - tt) * na + tt * nb)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str = "linear") -> np.ndarray:
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps")
    t = np.linspace(0.0, 1.0, steps)
    if method == "linear":
        return lerp(a, b, t)
    if method == "spherical":
        return slerp(a, b, t)
    raise ValueError(f"method must be 'linear' or 'spherical', got {method!r}")


# ---------------------------------------------------------------- geometry and densities

def ellipse(center: np.ndarray, sigma: np.ndarray, n_sigma: float = 1.0, points: int = 60) -> np.ndarray:
    """Outline (points+1, 2) of the axis-aligned ellipse centre ± n_sigma·σ (a diagonal-Gaussian posterior)."""
    theta = np.linspace(0, 2 * np.pi, points + 1)
    c, s = np.asarray(center, float), np.asarray(sigma, float) * n_sigma
    return np.stack([c[0] + s[0] * np.cos(theta), c[1] + s[1] * np.sin(theta)], axis=1)


def posterior_sigma(logvar: np.ndarray) -> np.ndarray:
    """σ = exp(½ log σ²) of a diagonal Gaussian posterior."""
    return np.exp(0.5 * np.asarray(logvar, float))


def prior_circles(radii=(1.0, 2.0, 3.0), points: int = 120) -> list[tuple[float, np.ndarray]]:
    """The standard normal prior's density contours in 2-D are circles; radius r holds 1−exp(−r²/2) of the mass."""
    return [(float(r), ellipse(np.zeros(2), np.ones(2), r, points)) for r in radii]


def prior_mass_within(radius: float) -> float:
    return float(1 - np.exp(-radius**2 / 2))


def density_2d(points: np.ndarray, xs: np.ndarray, ys: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """Gaussian kernel density estimate of 2-D `points` evaluated on the grid xs × ys: (len(ys), len(xs)).
    Bandwidth: Scott's rule per axis when not given. The Gaussian kernel is separable, so the whole grid is
    one matrix product of the per-axis kernels: (ny, N) @ (N, nx)."""
    p = np.asarray(points, float)
    if len(p) == 0:
        return np.zeros((len(ys), len(xs)))
    if bandwidth is None:
        sd = p.std(axis=0)
        bw = np.maximum(sd * len(p) ** (-1 / 6), 1e-3)
    else:
        bw = np.array([bandwidth, bandwidth], float)
    kx = np.exp(-0.5 * ((np.asarray(xs, float)[None, :] - p[:, 0:1]) / bw[0]) ** 2)  # (N, nx)
    ky = np.exp(-0.5 * ((np.asarray(ys, float)[None, :] - p[:, 1:2]) / bw[1]) ** 2)  # (N, ny)
    norm = 1.0 / (2 * np.pi * bw[0] * bw[1] * len(p))
    return (ky.T @ kx) * norm


def cell_to_latent(u: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Map fractional cell indices (0 … n−1) of a lattice to latent values by interpolating its axis."""
    return np.interp(u, np.arange(len(axis)), axis)


# ---------------------------------------------------------------- anomaly detection

def roc(scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """ROC curve and AUROC of `scores` (higher = more anomalous) for binary labels. Needs both classes."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, y = np.asarray(scores, float), np.asarray(is_anomaly).astype(bool)
    if y.all() or not y.any():
        raise ValueError("the ROC needs both anomalies and normal examples in the test set")
    if not np.isfinite(scores).all():
        raise ValueError("some scores are NaN or infinite")
    fpr, tpr, thresholds = roc_curve(y, scores)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": float(roc_auc_score(y, scores))}


def held_out_split(data: Dataset, held_out: int) -> tuple[Dataset, np.ndarray]:
    """The dataset with every training image of class `held_out` removed (the test set is kept whole), and the
    boolean test mask 'is of the held-out class' — the anomaly labels."""
    if data.y_train is None or data.y_test is None:
        raise ValueError("the held-out-class experiment needs a labelled dataset")
    keep = data.y_train != held_out
    if bool(keep.all()):
        raise ValueError(f"class {held_out} does not occur in the training set")
    is_out = (data.y_test == held_out).cpu().numpy()
    if not is_out.any():
        raise ValueError(f"class {held_out} does not occur in the test set")
    train = Dataset(f"{data.name} without class {held_out}", data.x_train[keep], data.y_train[keep],
                    data.x_test, data.y_test, data.class_names)
    return train, is_out


def threshold_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the images whose score is above `threshold`, most anomalous first."""
    scores = np.asarray(scores, float)
    idx = np.flatnonzero(scores > threshold)
    return idx[np.argsort(-scores[idx], kind="stable")]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(scores, float)
    k = max(0, min(k, len(scores)))
    return np.argsort(-scores, kind="stable")[:k]


# ---------------------------------------------------------------- tables

def latents_table(mu: np.ndarray, ids: np.ndarray | None = None, labels: np.ndarray | None = None,
                  extra: dict[str, np.ndarray] | None = None, selected: np.ndarray | None = None):
    """A pandas DataFrame: index, label, z0…z(d−1), extra score columns, and a 'selected' flag."""
    import pandas as pd

    mu = np.asarray(mu)
    ids = np.arange(len(mu)) if ids is None else np.asarray(ids)
    frame = pd.DataFrame({"index": ids})
    if labels is not None:
        frame["label"] = np.asarray(labels)
    for j in range(mu.shape[1]):
        frame[f"z{j}"] = mu[:, j]
    for name, values in (extra or {}).items():
        frame[name] = np.asarray(values)
    if selected is not None:
        frame["selected"] = np.isin(ids, np.asarray(selected))
    return frame


ProgressFn = Callable[[float], None]


def held_out_experiment(data: Dataset, held_out: int, epochs: int, latent_dim: int = 2, *, seed: int = 0,
                        hidden=(256, 128), batch_size: int = 128,
                        progress: Callable[[float, str], None] | None = None) -> dict:
    """Train a small MLP VAE without class `held_out`, score the whole test set with it, and compute the ROC
    of 'is the held-out class' for −ELBO and for the reconstruction term. Returns curves and AUROCs."""
    from .config import ModelConfig, ObjectiveConfig, TrainConfig
    from .metrics import per_sample_scores
    from .model import VAE
    from .train import fit

    train_data, is_out = held_out_split(data, held_out)
    torch_seed = int(seed)
    import torch

    torch.manual_seed(torch_seed)
    model = VAE(ModelConfig(image_shape=data.image_shape, latent_dim=int(latent_dim), hidden=tuple(hidden)))
    done = {"epochs": 0}

    def on_step(step, steps, loss):
        if progress and (step % 5 == 0 or step == steps - 1):
            frac = (done["epochs"] + (step + 1) / steps) / epochs
            progress(min(1.0, 0.95 * frac), f"training without class {held_out}: epoch {done['epochs'] + 1}/{epochs}")

    def on_epoch(record, _model):
        done["epochs"] += 1

    result = fit(model, train_data, ObjectiveConfig(), TrainConfig(epochs=int(epochs), batch_size=batch_size,
                                                                    seed=torch_seed),
                 on_step=on_step, on_epoch=on_epoch)
    if progress:
        progress(0.97, "scoring the test set…")
    scores = per_sample_scores(model, data.x_test)
    curves = {"−ELBO": roc(scores["neg_elbo"], is_out), "reconstruction": roc(scores["recon"], is_out)}
    if progress:
        progress(1.0, "done")
    return {"curves": curves, "held_out": int(held_out), "n_out": int(is_out.sum()), "epochs_done": done["epochs"],
            "n_train": len(train_data.x_train), "scores": scores["neg_elbo"], "is_out": is_out,
            "test_elbo": float(np.mean(scores["neg_elbo"])),
            "warning": result.stop_reason if result.diverged else None}
