"""What the app lets a user download as a table: latent codes with their labels and scores."""
from __future__ import annotations

import numpy as np
import pandas as pd


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
