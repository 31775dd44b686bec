"""Evaluation: ELBO parts on a whole set, per-image scores, IWAE NLL, active units, the rate's split into I(x;z) and
the marginal KL, and the distortion of a decoder ignoring z. Nats per image."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .model import VAE
from .objectives import LOG_2PI, elbo_terms, iwae_bound, log_normal
from .pixels import as_float

ACTIVE_UNIT_THRESHOLD = 0.01
IWAE_ROWS = 20_000  # images × samples in one pass of the IWAE bound: bounds its memory


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A private random stream for one evaluation: the same numbers on every call, whatever other threads
    (other runs, other sessions) draw meanwhile, and no effect on anyone else's stream."""
    return torch.Generator(device=device).manual_seed(seed)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Dimensions u with Cov_x(E_q[z_u|x]) > threshold (Burda et al. 2015, sec. 5.2)."""
    return int((mean_variance(mu) > threshold).sum())


def mean_variance(mu: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_u|x]) of each dimension u over the images (d,): the activity statistic of Burda et al. 2015
    (zeros for fewer than two images)."""
    return mu.var(dim=0) if len(mu) >= 2 else torch.zeros(mu.shape[1:], device=mu.device)


@torch.no_grad()
def per_sample_scores(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
                      seed: int = 0, progress: Callable[[float], None] | None = None) -> dict[str, np.ndarray]:
    """Per image: −ELBO, distortion (−log p(x|z)), KL, squared reconstruction error of the posterior mean,
    and the posterior means/log-variances. One seeded posterior sample per image. `progress` gets the fraction
    done after each batch (and may raise to stop)."""
    model.eval()
    out: dict[str, list] = {k: [] for k in ("neg_elbo", "recon", "kl", "kl_per_dim", "sq_error", "mu", "logvar")}
    gen = generator(seed, x.device)
    for s in _batches(len(x), batch_size):
        xb, yb = as_float(x[s]), None if y is None else y[s]  # (B, C, H, W) in [0, 1]
        terms = elbo_terms(model, xb, yb, gen)
        mean_image = model.mean_of(model.decode(terms.mu, yb, xb))  # (B, C, H, W) reconstruction at z = μ
        for key, value in (("neg_elbo", terms.neg_elbo), ("recon", terms.recon), ("kl", terms.kl),
                           ("kl_per_dim", terms.kl_per_dim), ("mu", terms.mu), ("logvar", terms.logvar),
                           ("sq_error", (mean_image - xb).pow(2).flatten(1).sum(1))):
            out[key].append(value)
        if progress:
            progress(s.stop / len(x))
    return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000) -> np.ndarray:
    """μ(x) (N, d) of q(z|x) for images x (8-bit or float), in batches."""
    model.eval()
    return torch.cat([model.encode(x[s], None if y is None else y[s])[0] for s in _batches(len(x), batch_size)]
                     ).cpu().numpy()


@torch.no_grad()
def evaluate_elbo(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
                  seed: int = 0) -> dict:
    """Means over the set: `elbo` is −ELBO = `recon` + `kl`, `kl_per_dim` sums to `kl`; plus active units and each
    dimension's Cov_x(E_q[z_u|x]) (`mean_var_per_dim`, which units are active)."""
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
    variance = mean_variance(torch.cat(mus))  # (d,)
    return {"elbo": recon + kl, "recon": recon, "kl": kl, "kl_per_dim": kl_per_dim.tolist(),
            "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum()),
            "mean_var_per_dim": variance.cpu().double().tolist()}


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int = 1000, batch_size: int = 100,
             seed: int = 0, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Per-image −IWAE bound with k importance samples (Burda et al. 2015): an upper bound on −log p(x)
    that tightens as k grows. `progress` gets the fraction done."""
    model.eval()
    chunk = max(1, min(k, IWAE_ROWS // max(1, batch_size)))
    out = []
    gen = generator(seed, x.device)
    for s in _batches(len(x), batch_size):
        out.append(-iwae_bound(model, x[s], None if y is None else y[s], k=k, chunk=chunk, generator=gen))
        if progress:
            progress(s.stop / len(x))
    return torch.cat(out).cpu().numpy()


@torch.no_grad()
def elbo_surgery(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 500,
                 seed: int = 0) -> tuple[float, float]:
    """(I(x; z), KL(q(z) ‖ p(z))) in nats, the two parts of the rate (Hoffman & Johnson 2016, "ELBO surgery"):
    E_x KL(q(z|x) ‖ p(z)) = I(x; z) + KL(q(z) ‖ p(z)), under q(x, z) = p_data(x) q(z|x) with the aggregate
    posterior q(z) = (1/N) Σ_n q(z|x_n) over the N images given.

    Monte Carlo with one z_i ~ q(z|x_i) per image, shared by both parts (He et al. 2019 for I):
    I ≈ mean_i [log q(z_i|x_i) − log q(z_i)] and KL(q(z) ‖ p(z)) ≈ mean_i [log q(z_i) − log p(z_i)], so their sum
    is the Monte Carlo estimate of the rate, mean_i [log q(z_i|x_i) − log p(z_i)]. Because
    log q(z_i) ≥ log q(z_i|x_i) − log N, every term of I is ≤ log N, so its estimate never exceeds log N.
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
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    # log q(z_i | x_n) for every pair as two matrix products: with w = 1/σ², Σ_d (z − μ)²w = z²·w − 2z·(μw) + μ²·w
    inv_var = torch.exp(-logvar)  # (N, d)
    const = -0.5 * (mu.shape[1] * LOG_2PI + logvar.sum(1) + (mu.pow(2) * inv_var).sum(1))  # (N,)
    mutual_info = marginal_kl = 0.0
    rows = max(1, 4_000_000 // n)  # keeps the (rows, N) block near 32 MB
    for s in _batches(n, rows):
        quad = z[s].pow(2) @ inv_var.T - 2 * z[s] @ (mu * inv_var).T  # (b, N)
        log_q_all = const[None] - 0.5 * quad  # (b, N): log q(z_i | x_n)
        log_q_agg = torch.logsumexp(log_q_all, dim=1) - math.log(n)  # (b,) log q(z_i)
        log_q_own = log_normal(z[s], mu[s], logvar[s])  # (b,) log q(z_i | x_i)
        log_prior = log_normal(z[s], zero, zero)  # (b,) log p(z_i), p = N(0, I)
        mutual_info += float((log_q_own - log_q_agg).sum())
        marginal_kl += float((log_q_agg - log_prior).sum())
    return mutual_info / n, marginal_kl / n


def mutual_information(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 500,
                       seed: int = 0) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z|x), in nats (He et al. 2019, "Lagging inference networks"): the first
    part of `elbo_surgery`, at most log N."""
    return elbo_surgery(model, x, y, batch_size=batch_size, seed=seed)[0]


def collapsed_decoder_distortion(x_train: torch.Tensor, x_test: torch.Tensor, clip: float = 1e-6) -> float:
    """The distortion, in nats per test image, that a factorised Bernoulli decoder ignoring z reaches at best: where a
    fully collapsed VAE (R = 0) lands on the rate–distortion plane. (Alemi et al. 2018 put the R = 0 end at D = H,
    the data entropy, which only a decoder modelling the images perfectly without z reaches.)

    A decoder that ignores z outputs one factorised Bernoulli p(x) = Π_i Ber(x_i; p_i) for every image; its
    maximum-likelihood p_i on the training set is the mean pixel p̄_i (also for grey values, as the cross-entropy
    −x log p − (1 − x) log(1 − p) is minimal at p = mean x). Its distortion is the test mean of
    Σ_i BCE(x_i, p̄_i); p̄ is clipped to [clip, 1 − clip] so that a pixel never lit in training costs a finite
    amount when lit in a test image. (With p̄ taken from the test set itself this would be Σ_i H(x̄_i), the
    lowest any z-free factorised decoder can score there.) A decoder that models pixels jointly without z, such as
    a PixelCNN, can go below it.
    """
    total = sum(as_float(x_train[s]).double().sum(0) for s in _batches(len(x_train), 4096))  # (C, H, W)
    p = (total / len(x_train)).clamp(clip, 1 - clip)  # (C, H, W) p̄, the per-pixel training mean
    bce = 0.0
    for s in _batches(len(x_test), 4096):
        x = as_float(x_test[s]).double()  # (B, C, H, W)
        bce = bce + float((-(x * p.log() + (1 - x) * torch.log1p(-p))).flatten(1).sum(1).sum())
    return bce / len(x_test)


def collapse_metrics(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *, iwae_k: int = 0,
                     progress: Callable[[float], None] | None = None) -> dict:
    """The collapse lab's numbers for a trained model on a test set, nats per image (Alemi et al. 2018):
    rate R = E KL(q(z|x) ‖ p(z)), distortion D = E[−log p(x|z)], −ELBO = R + D, KL per dimension, active
    units, the rate's split into I(x; z) and the marginal KL(q(z) ‖ p(z)) (`elbo_surgery`), and the IWAE NLL
    with `iwae_k` samples (None when 0). `progress` follows the IWAE part."""
    res = evaluate_elbo(model, x, y)
    mutual_info, marginal_kl = elbo_surgery(model, x, y)
    out = {"rate": res["kl"], "distortion": res["recon"], "test_elbo": res["elbo"], "kl_per_dim": res["kl_per_dim"],
           "active_units": res["active_units"], "mean_var_per_dim": res["mean_var_per_dim"],
           "mutual_info": mutual_info, "marginal_kl": marginal_kl,
           "iwae_k": iwae_k, "iwae_nll": None}
    if iwae_k > 0:
        out["iwae_nll"] = float(iwae_nll(model, x, y, k=iwae_k, progress=progress).mean())
    return out
