"""t-SNE of encoded Fashion-MNIST test images (d = 16): our path vs scikit-learn's default TSNE, same run.

    python -m bench.tsne [--json] [--sizes 2000,5000,10000]
"""
from __future__ import annotations

import time

import numpy as np
import torch

from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import load_dataset
from vae_core.model import VAE
from vae_core.projection import tsne
from vae_core.train import fit

from .common import emit, log, parser


def encoded_test_set(latent_dim: int = 16) -> np.ndarray:
    """Posterior means of the 10k test images under a d = 16 VAE trained briefly (3 epochs, seeded)."""
    data = load_dataset("fashion-mnist")
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=latent_dim))
    fit(model, data, ObjectiveConfig(), TrainConfig(epochs=3))
    with torch.no_grad():
        mu, _ = model.eval().encode(data.x_test)
    return mu.numpy()


def sklearn_default(x: np.ndarray) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, random_state=0).fit_transform(x)


def trust(x: np.ndarray, emb: np.ndarray) -> float:
    """Trustworthiness (Venna & Kaski 2001) with 10 neighbours: 1 = every 2-D neighbour is a true neighbour."""
    from sklearn.manifold import trustworthiness

    return round(float(trustworthiness(x, emb, n_neighbors=10)), 4)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="2000,5000,10000")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    log("encoding the test set with a d = 16 VAE …")
    mu = encoded_test_set()
    rows = {}
    for n in sizes:
        x = mu[np.random.default_rng(0).permutation(len(mu))[:n]]
        log(f"{n} points: ours …")
        t0 = time.perf_counter()
        ours = tsne(x)
        ours_s = time.perf_counter() - t0
        log(f"{n} points: scikit-learn default …")
        t0 = time.perf_counter()
        theirs = sklearn_default(x)
        sk_s = time.perf_counter() - t0
        rows[str(n)] = {"ours_s": round(ours_s, 2), "sklearn_s": round(sk_s, 2), "speedup": round(sk_s / ours_s, 2),
                        "ours_trustworthiness": trust(x, ours), "sklearn_trustworthiness": trust(x, theirs)}
    largest = rows[str(max(sizes))]
    emit({"n": max(sizes), "ours_s": largest["ours_s"], "sklearn_s": largest["sklearn_s"],
          "speedup": largest["speedup"], "scaling": rows}, args.json)


if __name__ == "__main__":
    main()
