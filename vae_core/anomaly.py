"""Anomaly scoring: ROC curves and AUROC of a score, thresholds and the top of a ranking, and the held-out-class
experiment's evaluation (a model trained without one class scores the whole test set; how well does the
score single out the unseen class?). Numpy in, numpy out."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .data import Dataset
from .metrics import per_sample_scores
from .model import VAE


def roc(scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """ROC curve and AUROC of `scores` (higher = more anomalous) for binary labels. Needs both classes."""
    scores, y = np.asarray(scores, float), np.asarray(is_anomaly).astype(bool)
    if y.all() or not y.any():
        raise ValueError("the ROC needs both anomalies and normal examples in the test set")
    if not np.isfinite(scores).all():
        raise ValueError("some scores are NaN or infinite")
    fpr, tpr, thresholds = roc_curve(y, scores)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": float(roc_auc_score(y, scores))}


def threshold_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the images whose score is above `threshold`, most anomalous first."""
    scores = np.asarray(scores, float)
    idx = np.flatnonzero(scores > threshold)
    return idx[np.argsort(-scores[idx], kind="stable")]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(scores, float)
    k = max(0, min(k, len(scores)))
    return np.argsort(-scores, kind="stable")[:k]


def held_out_evaluation(model: VAE, data: Dataset, held_out: int) -> dict:
    """Score every test image of `data` with `model` (trained without class `held_out`) and compute the ROC
    of "is the held-out class" for −ELBO and for the reconstruction term."""
    is_out = (data.y_test == held_out).cpu().numpy()  # (M,)
    y = data.y_test if model.config.n_classes else None
    scores = per_sample_scores(model, data.x_test, y)
    curves = {"−ELBO": roc(scores["neg_elbo"], is_out), "reconstruction": roc(scores["recon"], is_out)}
    return {"curves": curves, "held_out": int(held_out), "n_out": int(is_out.sum()), "n_train": len(data.x_train),
            "scores": scores["neg_elbo"],
            "is_out": is_out, "test_elbo": float(np.mean(scores["neg_elbo"])),
            "auroc": {name: c["auroc"] for name, c in curves.items()}}
