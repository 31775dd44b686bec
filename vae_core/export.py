"""What the app lets a user download: latent codes with their labels and scores as a table, and images as a zip
of PNG files."""
from __future__ import annotations

import io
import zipfile
from typing import Callable

import numpy as np
import pandas as pd

from .latent_map import Encodings, dataset_images
from .pictures import png_bytes
from .pixels import as_float


def latents_table(mu: np.ndarray, ids: np.ndarray | None = None, labels: np.ndarray | None = None,
                  extra: dict[str, np.ndarray] | None = None, selected: np.ndarray | None = None):
    """A pandas DataFrame: index, label, z0…z(d−1), extra score columns, and a 'selected' flag."""
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


def new_data_scores_table(result: dict):
    """A pandas DataFrame of an `anomaly.score_new_data` result, one row per image, test images first: source
    ('test' / 'new'), index within its set, label (when either set has labels; empty where a set has none),
    neg_elbo, complexity_nats (L(x)) and corrected (= neg_elbo − complexity_nats), all in nats."""
    parts = []
    has_labels = any(result[s]["labels"] is not None for s in ("test", "new"))
    for source in ("test", "new"):
        part = result[source]
        n = len(part["neg_elbo"])
        frame = pd.DataFrame({"source": [source] * n, "index": np.arange(n)})
        if has_labels:
            labels = part["labels"]
            frame["label"] = pd.array([None] * n if labels is None else np.asarray(labels), dtype="Int64")
        for key in ("neg_elbo", "complexity_nats", "corrected"):
            frame[key] = np.asarray(part[key], dtype=np.float64)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def map_table(enc: Encodings, rows: np.ndarray, class_names=None, sources=None):
    """A pandas DataFrame, one line per dataset row of `rows`: row, split, index within its split, the image's
    source (its file name, or its position in the file it came from, when known), label and class name, z0…z(d−1)
    (posterior means), log σ² of each dimension, and the scores (nats)."""
    rows = np.asarray(rows, dtype=np.int64)
    test = enc.is_test(rows)
    frame = pd.DataFrame({"row": rows, "split": np.where(test, "test", "train"),
                          "index_in_split": np.where(test, rows - enc.n_train, rows)})
    if sources is not None:
        frame["source"] = [sources[r] for r in rows]
    if enc.labels is not None:
        labels = enc.labels[rows]
        frame["label"] = labels
        if class_names:
            frame["class"] = [str(class_names[k]) if k < len(class_names) else str(k) for k in labels]
    for j in range(enc.latent_dim):
        frame[f"z{j}"] = enc.mu[rows, j]
    for j in range(enc.latent_dim):
        frame[f"logvar{j}"] = enc.logvar[rows, j]
    for key in ("neg_elbo", "recon", "kl", "sq_error"):
        frame[key] = enc.scores(key)[rows]
    return frame


def images_zip(data, rows: np.ndarray, *, progress: Callable[[float], None] | None = None,
               names: list[str] | None = None) -> bytes:
    """The images of dataset rows as PNG files in a .zip (stored, not deflated: PNG is compressed already), named
    `row-<row>[-<class>].png`, or `names`."""
    rows = np.asarray(rows, dtype=np.int64)
    class_names = data.class_names
    labels = None if data.y_train is None else np.concatenate([data.y_train.cpu().numpy(), data.y_test.cpu().numpy()])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for start in range(0, len(rows), 500):
            part = rows[start:start + 500]
            images = as_float(dataset_images(data, part))  # (k, C, H, W) in [0, 1]
            for i, (row, img) in enumerate(zip(part, images)):
                if names is not None:
                    name = names[start + i]
                else:
                    label = "" if labels is None else f"-{class_names[labels[row]] if class_names else labels[row]}"
                    name = f"row-{row}{label}.png".replace("/", "_")
                picture = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
                z.writestr(name, png_bytes(picture))
            if progress:
                progress(min(1.0, (start + len(part)) / max(1, len(rows))))
    return buf.getvalue()
