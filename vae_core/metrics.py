"""Evaluation: ELBO parts on a whole set, per-image scores, IWAE NLL, active units. Nats per image."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .model import VAE
from .objectives import elbo_terms, iwae_bound, log_normal

ACTIVE_UNIT_THRESHOLD = 0.01


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A private random stream for one evaluation: the same numbers on every call, whatever other threads
    (other runs, other sessions) draw meanwhile, and no effect on anyone else's stream."""
    return torch.Generator(device=device).manual_seed(seed)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Dimensions u with Cov_x(E_q[z_u|x]) > threshold (Burda et al. 2015, sec. 5.2)."""
    if len(mu) < 2:
        return 0
    return int((mu.var(dim=0) > threshold).sum())


@torch.no_grad()
def per_sample_scores(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Per image: −ELBO, distortion (−log p(x|z)), KL, squared reconstruction error of the posterior mean,
    and the posterior means/log-variances. One seeded posterior sample per image."""
    model.eval()
    out: dict[str, list] = {k: [] for k in ("neg_elbo", "recon", "kl", "kl_per_dim", "sq_error", "mu", "logvar")}
    gen = generator(seed, x.device)
    for s in _batches(len(x), batch_size):
        xb, yb = x[s], None if y is None else y[s]
        terms = elbo_terms(model, xb, yb, gen)
        mean_image = torch.sigmoid(model.decode(terms.mu, yb, xb))  # (B, C, H, W) reconstruction at z = μ
        for key, value in (("neg_elbo", terms.neg_elbo), ("recon", terms.recon), ("kl", terms.kl),
                           ("kl_per_dim", terms.kl_per_dim), ("mu", terms.mu), ("logvar", terms.logvar),
                           ("sq_error", (mean_image - xb).pow(2).flatten(1).sum(1))):
            out[key].append(value)
    return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def evaluate_elbo(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
                  seed: int = 0) -> dict:
    """Means over the set: `elbo` is −ELBO = `recon` + `kl`, `kl_per_dim` sums to `kl`; plus active units."""
    model.eval()
    recon = kl_dim = 0.0
    mus = []
    gen = generator(seed, x.device)
    for s in _batches(len(x), batch_size):
        terms = elbo_terms(model, x[s], None if y is None else y[s], gen)
        recon = recon + terms.recon.sum()
        kl_dim = kl_dim + terms.kl_per_dim.sum(0)  # (d,)
        mus.append(terms.mu)
    n = len(x)
    kl_per_dim = (kl_dim / n).cpu().double()
    recon = float(recon) / n
    kl = float(kl_per_dim.sum())
    return {"elbo": recon + kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim.tolist(),
            "active_units": active_units(torch.cat(mus))}


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int = 1000, batch_size: int = 100,
             seed: int = 0, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Per-image −IWAE bound with k importance samples (Burda et al. 2015): an upper bound on −log p(x)
    that tightens as k grows. `progress` gets the fraction done."""
    model.eval()
    chunk = max(1, min(k, 20_000 // max(1, batch_size)))
    out = []
    gen = generator(seed, x.device)
    for s in _batches(len(x), batch_size):
        out.append(-iwae_bound(model, x[s], None if y is None else y[s], k=k, chunk=chunk, generator=gen))
        if progress:
            progress(s.stop / len(x))
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def mutual_information(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 500,
                       seed: int = 0) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z|x), in nats (He et al. 2019, "Lagging inference networks").

    I = E_x E_{q(z|x)}[log q(z|x) − log q(z)], with the aggregate posterior q(z) = (1/N) Σ_n q(z|x_n) over
    the N images given. One z_i ~ q(z|x_i) per image. Because log q(z_i) ≥ log q(z_i|x_i) − log N, every
    term is ≤ log N, so the estimate never exceeds log N.
    """
    model.eval()
    mus, logvars = [], []
    for s in _batches(len(x), batch_size):
        mu, logvar = model.encode(x[s], None if y is None else y[s])
        mus.append(mu)
        logvars.append(logvar)
    mu, logvar = torch.cat(mus).double(), torch.cat(logvars).double()  # (N, d)
    n = len(mu)
    eps = torch.randn(mu.shape, generator=generator(seed, x.device), device=mu.device, dtype=mu.dtype)  # (N, d)
    z = mu + torch.exp(0.5 * logvar) * eps  # (N, d), one draw per image
    total = 0.0
    rows = max(1, 4_000_000 // (n * mu.shape[1]))  # keeps the (rows, N, d) block near 32 MB
    for s in _batches(n, rows):
        log_q_all = log_normal(z[s, None, :], mu[None], logvar[None])  # (b, N): log q(z_i | x_n)
        log_q_agg = torch.logsumexp(log_q_all, dim=1) - math.log(n)  # (b,) log q(z_i)
        log_q_own = log_normal(z[s], mu[s], logvar[s])  # (b,) log q(z_i | x_i)
        total += float((log_q_own - log_q_agg).sum())
    return total / n


def collapse_metrics(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, iwae_k: int = 0,
                     progress: Callable[[float], None] | None = None) -> dict:
    """The collapse lab's numbers for a trained model on a test set, nats per image (Alemi et al. 2018):
    rate R = E KL(q(z|x) ‖ p(z)), distortion D = E[−log p(x|z)], −ELBO = R + D, KL per dimension, active
    units, I(x; z), and the IWAE NLL with `iwae_k` samples (None when 0). `progress` follows the IWAE part."""
    res = evaluate_elbo(model, x, y)
    out = {"rate": res["kl"], "distortion": res["recon"], "test_elbo": res["elbo"], "kl_per_dim": res["kl_per_dim"],
           "active_units": res["active_units"], "mutual_info": mutual_information(model, x, y),
           "iwae_k": iwae_k, "iwae_nll": None}
    if iwae_k > 0:
        out["iwae_nll"] = float(iwae_nll(model, x, y, k=iwae_k, progress=progress).mean())
    return out
