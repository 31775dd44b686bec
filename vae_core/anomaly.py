"""Anomaly scoring: ROC curves and AUROC of a score, thresholds and the top of a ranking, the held-out-class
experiment's evaluation (a model trained without one class scores the whole test set; how well does the
score single out the unseen class?), scoring a second dataset against the test set with −ELBO and the
input-complexity-corrected score (Serrà et al. 2020), and an AUROC in plain words. Numpy in, numpy out."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .complexity import COMPRESSOR, compressed_nats
from .data import Dataset
from .metrics import per_sample_scores
from .model import VAE


def roc(scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """ROC curve and AUROC of `scores` (higher = more anomalous) for binary labels. Needs both classes.

    One point per distinct score, from the highest down (tied scores move together, so the curve steps
    diagonally through a tie); the AUROC is the trapezoid area under it, which equals the Mann–Whitney
    probability that a random anomaly outscores a random normal example, ties counting one half (the same
    number as scikit-learn's roc_auc_score; numpy keeps scikit-learn's 1.5 s import off the app's start)."""
    scores, y = np.asarray(scores, float), np.asarray(is_anomaly).astype(bool)
    if y.all() or not y.any():
        raise ValueError("the ROC needs both anomalies and normal examples in the test set")
    if not np.isfinite(scores).all():
        raise ValueError("some scores are NaN or infinite")
    order = np.argsort(-scores, kind="stable")  # (N,) highest score first
    ranked, hits = scores[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each run of equal scores
    tps = np.cumsum(hits)[ends]  # anomalies flagged at each threshold
    fps = ends + 1 - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {"fpr": fpr, "tpr": tpr, "thresholds": np.r_[np.inf, ranked[ends]], "auroc": auroc}


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


# ---------------------------------------------------------------- scoring a second dataset

RAW_SCORE = "−ELBO"  # the names of the two scores' curves, for legends
CORRECTED_SCORE = "−ELBO − L(x)"
SCORE_KEYS = {RAW_SCORE: "neg_elbo", CORRECTED_SCORE: "corrected"}  # curve name → per-image array's key


def _images(x, what: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`x` (N, C, H, W) as a tensor on `device` — 8-bit pixels as they are, anything else as float32 in [0, 1] —
    after checking its image shape and range."""
    x = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x))
    x = (x if x.dtype == torch.uint8 else x.to(torch.float32)).to(device)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        got = "×".join(map(str, x.shape[1:])) if x.ndim == 4 else f"an array of shape {tuple(x.shape)}"
        raise ValueError(f"the {what} are {got} (C×H×W) but the model takes {'×'.join(map(str, shape))} images")
    if len(x) == 0:
        raise ValueError(f"there are no {what}")
    if x.dtype != torch.uint8 and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"the {what} must have pixel values in [0, 1]")
    return x


def _labels(y, n: int, n_classes: int, what: str, device: torch.device) -> torch.Tensor | None:
    """Labels (n,) as int64 on `device`; required (and checked against the classes) for a conditional model."""
    if y is None:
        if n_classes:
            raise ValueError(f"the model is a conditional VAE ({n_classes} classes): it scores an image together "
                             f"with its label, and the {what} have no labels")
        return None
    y = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y)).to(device)
    if y.shape != (n,):
        raise ValueError(f"the {what} have {n} images but labels of shape {tuple(y.shape)}")
    if y.is_floating_point() and not bool((y == torch.round(y)).all()):
        raise ValueError(f"the labels of the {what} must be whole numbers")
    y = y.long()
    if n_classes and n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"the labels of the {what} run from {int(y.min())} to {int(y.max())}; the conditional "
                         f"model knows classes 0…{n_classes - 1}")
    return y


def score_new_data(model: VAE, x_test, x_new, *, y_test=None, y_new=None, test_scores: dict | None = None,
                   seed: int = 0, progress: Callable[[float], None] | None = None) -> dict:
    """Score the model's test images and a second set of "new" images (same (C, H, W); numpy or tensors in
    [0, 1]) and ask how well each score tells new from test (new = positive, higher = more anomalous).

    Two scores per image, in nats: −ELBO (`metrics.per_sample_scores`, one seeded posterior sample) and the
    input-complexity-corrected S(x) = −ELBO(x) − L(x) of Serrà et al. 2020 (ICLR), where L(x) is the length of
    the 8-bit image under `complexity.COMPRESSOR`. Likelihoods favour simple images (Nalisnick et al. 2019);
    subtracting L(x) removes that bias, leaving how many more nats the model needs for x than a generic codec.

    A conditional model (model.config.n_classes > 0) needs labels for both sets; labels are kept for the
    export either way. `test_scores`, a per_sample_scores result for (x_test, y_test) with the same seed,
    skips the test set's model pass. `progress` gets the fraction done (model passes, then compression).

    Returns {"test": per-set dict, "new": per-set dict, "curves": {RAW_SCORE: roc(), CORRECTED_SCORE: roc()},
    "auroc": {name: float}, "compressor": str, "n_test": int, "n_new": int}; each per-set dict holds
    "neg_elbo", "complexity_nats", "corrected", "mu" (N, d) and "labels" ((N,) int64 or None).
    """
    device = next(model.parameters()).device
    shape, n_classes = tuple(model.config.image_shape), model.config.n_classes
    xt = _images(x_test, "test images", shape, device)
    xn = _images(x_new, "new images", shape, device)
    yt = _labels(y_test, len(xt), n_classes, "test images", device)
    yn = _labels(y_new, len(xn), n_classes, "new images", device)
    if test_scores is not None and len(test_scores["neg_elbo"]) != len(xt):
        raise ValueError(f"test_scores hold {len(test_scores['neg_elbo'])} images, the test set {len(xt)}")

    # progress: one unit per image for each model pass still to do and each image to compress
    total = (0 if test_scores is not None else len(xt)) + len(xn) + len(xt) + len(xn)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress:
            progress(min(1.0, done[0] / total))

    def stage(n: int) -> Callable[[float], None] | None:  # a sub-task's fraction mapped onto the whole
        start = done[0]
        return (lambda f: progress(min(1.0, (start + f * n) / total))) if progress else None

    if progress:
        progress(0.0)
    use = lambda y: y if n_classes else None  # noqa: E731 — only a conditional model takes labels
    if test_scores is None:
        test_scores = per_sample_scores(model, xt, use(yt), seed=seed)
        advance(len(xt))
    new_scores = per_sample_scores(model, xn, use(yn), seed=seed)
    advance(len(xn))
    sets = {}
    for name, x, y, scores in (("test", xt, yt, test_scores), ("new", xn, yn, new_scores)):
        length = compressed_nats(x.cpu().numpy(), progress=stage(len(x)))  # (N,) L(x) in nats
        done[0] += len(x)
        neg_elbo = np.asarray(scores["neg_elbo"], dtype=np.float64)  # (N,)
        sets[name] = {"neg_elbo": neg_elbo, "complexity_nats": length, "corrected": neg_elbo - length,
                      "mu": np.asarray(scores["mu"]), "labels": None if y is None else y.cpu().numpy()}
    is_new = np.r_[np.zeros(len(xt), bool), np.ones(len(xn), bool)]  # (M + K,)
    curves = {name: roc(np.r_[sets["test"][key], sets["new"][key]], is_new) for name, key in SCORE_KEYS.items()}
    if progress:
        progress(1.0)
    return {"test": sets["test"], "new": sets["new"], "curves": curves,
            "auroc": {name: c["auroc"] for name, c in curves.items()}, "compressor": COMPRESSOR,
            "n_test": len(xt), "n_new": len(xn)}


def top_new_images(result: dict, k: int, score: str = "corrected") -> np.ndarray:
    """Indices of the k highest-scored new images of a `score_new_data` result, most anomalous first;
    `score` is "neg_elbo" or "corrected"."""
    if score not in SCORE_KEYS.values():
        raise ValueError(f"score must be one of {', '.join(SCORE_KEYS.values())}, got {score!r}")
    return top_k(result["new"][score], k)


# ---------------------------------------------------------------- AUROC in words

CHANCE_BAND = 0.05  # |AUROC − 0.5| ≤ this reads as chance: a few hundred images leave about that much noise
FAIR_AUROC = 0.7  # 0.55…0.7 weak, 0.7…0.9 fair, ≥ 0.9 good (the usual rule of thumb for diagnostic tests)
GOOD_AUROC = 0.9


def explain_auroc(auroc: float, unseen: str = "the unseen class",
                  seen: str = "the classes it was trained on") -> str:
    """One plain-words sentence on what an AUROC of "`unseen` vs. `seen`" (higher score = unseen) means.

    Bands: below 0.5 − CHANCE_BAND the score ranks the unseen images as MORE likely (Nalisnick et al. 2019);
    within CHANCE_BAND of 0.5, chance; then weak (< FAIR_AUROC), fair (< GOOD_AUROC) and good. Above chance
    the sentence uses AUROC's reading as a probability: that a random unseen image outscores a random seen one."""
    a = float(auroc)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"an AUROC lies in [0, 1], got {auroc!r}")
    if a < 0.5 - CHANCE_BAND:
        return (f"AUROC {a:.2f}: the model gives {unseen} HIGHER likelihood than {seen}: below chance, a known "
                f"failure of likelihood scores (Nalisnick et al. 2019, 'Do deep generative models know what they "
                f"don't know?').")
    if a <= 0.5 + CHANCE_BAND:
        return (f"AUROC {a:.2f}: no better than chance: the score does not tell {unseen} from {seen} "
                f"(a coin flip would do as well).")
    how = "weakly" if a < FAIR_AUROC else "fairly well" if a < GOOD_AUROC else "well"
    return (f"AUROC {a:.2f}: the score singles out {unseen} {how}: a randomly chosen image from {unseen} outscores "
            f"one from {seen} {a:.0%} of the time.")
