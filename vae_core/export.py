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
