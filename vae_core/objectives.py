"""Objectives, separate from the networks. Everything is in nats per image.

ELBO (Kingma & Welling 2014): log p(x) ≥ E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)).
We minimise −ELBO = distortion + rate, with distortion = −E_q[log p(x|z)] (one sample of z) and
rate = Σ_j KL_j in closed form. β-VAE, free bits and warm-up reweight the rate term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ObjectiveConfig
from .model import VAE
from .pixels import as_float

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per dimension = ½(μ² + σ² − log σ² − 1) (Kingma & Welling 2014, app. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)  # (B, d)


def log_likelihood(model: VAE, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) summed over pixels, per image, in nats.

    Bernoulli: −BCE(x, sigmoid(logits)). For grey values in (0, 1) this is the usual VAE objective but not a
    normalised density of grey levels. Gaussian: N(x; mean, σ²) per pixel, a true density, with mean =
    `model.mean_of(logits)` (sigmoid(logits); the linear decoder's output itself).
    """
    if model.config.likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")  # (B, C, H, W)
        return -nll.flatten(1).sum(1)  # (B,)
    log_sigma = model.log_sigma
    sq = ((x - model.mean_of(logits)) / log_sigma.exp()).pow(2)  # (B, C, H, W)
    return -(0.5 * sq + log_sigma + 0.5 * LOG_2PI).flatten(1).sum(1)  # (B,)


@dataclass
class ElboTerms:
    """Per-image parts of the ELBO with one posterior sample."""

    recon: torch.Tensor  # (B,) distortion −log p(x|z), nats
    kl_per_dim: torch.Tensor  # (B, d) closed-form KL per latent dimension, nats
    mu: torch.Tensor  # (B, d) posterior means
    logvar: torch.Tensor | None = None  # (B, d) posterior log-variances

    @property
    def kl(self) -> torch.Tensor:
        return self.kl_per_dim.sum(1)  # (B,)

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl  # (B,)


def elbo_terms(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> ElboTerms:
    """The ELBO's parts per image with one posterior sample z ~ q(z|x) drawn from `generator`; x may be 8-bit."""
    x = as_float(x)  # (B, C, H, W) in [0, 1]
    logits, mu, logvar = model(x, y, generator)
    return ElboTerms(recon=-log_likelihood(model, x, logits), kl_per_dim=gaussian_kl_per_dim(mu, logvar), mu=mu,
                     logvar=logvar)


@dataclass
class Loss:
    """Batch means: `total` is what the optimiser minimises; the rest are the true ELBO parts."""

    total: torch.Tensor  # scalar
    recon: torch.Tensor  # scalar, nats per image
    kl: torch.Tensor  # scalar, nats per image
    kl_per_dim: torch.Tensor  # (d,), nats per image

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl


def _parts(terms: ElboTerms) -> tuple[torch.Tensor, torch.Tensor]:
    return terms.recon.mean(), terms.kl_per_dim.mean(0)  # scalar, (d,)


def elbo(terms: ElboTerms) -> Loss:
    """The plain negative ELBO."""
    return beta_elbo(terms, 1.0)


def beta_elbo(terms: ElboTerms, beta: float) -> Loss:
    """recon + β·KL (Higgins et al. 2017, β-VAE). β = 1 is the ELBO."""
    recon, kl_dim = _parts(terms)
    kl = kl_dim.sum()
    return Loss(total=recon + beta * kl, recon=recon, kl=kl, kl_per_dim=kl_dim)


def free_bits_elbo(terms: ElboTerms, free_bits: float, beta: float = 1.0) -> Loss:
    """recon + β·Σ_j max(λ, E_batch[KL_j]) (Kingma et al. 2016, IAF paper, eq. 15).

    The floor is per latent dimension on the batch-mean KL: a dimension whose KL is under λ nats gets no
    gradient from the rate term, so the optimiser has no reason to push it further towards the prior.
    """
    recon, kl_dim = _parts(terms)
    floored = torch.clamp(kl_dim, min=free_bits)  # (d,)
    return Loss(total=recon + beta * floored.sum(), recon=recon, kl=kl_dim.sum(), kl_per_dim=kl_dim)


def kl_warmup_weight(epoch_progress: float, warmup_epochs: float) -> float:
    """Linear KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): weight t/N for t < N epochs, then 1."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, max(0.0, epoch_progress / warmup_epochs))


def cyclical_weight(epoch_progress: float, total_epochs: float, cycles: int, ramp: float) -> float:
    """Cyclical annealing (Fu et al. 2019, eq. 4 with a linear ramp): the run's T epochs are cut into M cycles of
    T/M epochs; within each, the weight grows linearly from 0 to 1 over the first R share and then stays at 1:
    β_t = τ/R for τ < R, else 1, with τ = (t mod T/M)/(T/M) the position in the current cycle."""
    position = max(0.0, epoch_progress) / (total_epochs / cycles)  # cycles so far
    into = max(0.0, position - math.floor(position + 1e-9))  # τ in [0, 1); exact cycle starts give 0
    return min(1.0, into / ramp)


def capacity_at(cfg: ObjectiveConfig, epoch_progress: float, total_epochs: float) -> float:
    """Capacity annealing's target rate C(t) (Burgess et al. 2018, "Understanding disentangling in β-VAE"): grows
    linearly from 0 to C_max over `capacity_epochs` (0: the whole run), then stays at C_max; in nats."""
    span = cfg.capacity_epochs or total_epochs
    return cfg.capacity * min(1.0, max(0.0, epoch_progress / span))


def kl_weight(cfg: ObjectiveConfig, epoch_progress: float, total_epochs: float) -> float:
    """The scheduled weight on the rate term after `epoch_progress` of `total_epochs` epochs: β times the linear
    warm-up or the cyclical factor (the soft KL target then scales it, see `TrainingObjective`)."""
    if cfg.kl_schedule == "cyclical":
        return cfg.beta * cyclical_weight(epoch_progress, total_epochs, cfg.cycles, cfg.ramp)
    return cfg.beta * kl_warmup_weight(epoch_progress, cfg.warmup_epochs)


def capacity_elbo(terms: ElboTerms, capacity: float, gamma: float) -> Loss:
    """recon + γ·|KL − C| (Burgess et al. 2018, eq. 8): the rate is pulled towards the capacity C from both sides,
    so the code must carry about C nats, whatever the decoder could do without it."""
    recon, kl_dim = _parts(terms)
    kl = kl_dim.sum()
    return Loss(total=recon + gamma * (kl - capacity).abs(), recon=recon, kl=kl, kl_per_dim=kl_dim)


class TrainingObjective:
    """One run's objective, step by step: the single place where the rate term's weight, the free-bits floor,
    the capacity target and the soft KL target are applied.

    Soft free bits (Chen et al. 2017, "Variational Lossy Autoencoder", app. C; Kingma et al. 2016 discuss the
    hard version): instead of a hard floor, a multiplier on the KL weight falls by a factor (1 + ε) after every
    step whose batch rate is under the target and rises by it (to at most 1) when above, so the optimiser is
    steered to keep the rate near the target while the objective stays the (weighted) ELBO."""

    SOFT_STEP = 0.05  # ε: ±5 % of the weight per step
    SOFT_MIN = 1e-3  # the smallest multiplier

    def __init__(self, cfg: ObjectiveConfig, total_epochs: float):
        self.cfg, self.total_epochs = cfg, total_epochs
        self.soft = 1.0  # the soft target's multiplier on the KL weight

    def weight(self, epoch_progress: float) -> float:
        """The weight on the rate term now (0 for the capacity objective, which does not use one)."""
        if self.cfg.capacity > 0:
            return 0.0
        return kl_weight(self.cfg, epoch_progress, self.total_epochs) * self.soft

    def capacity(self, epoch_progress: float) -> float | None:
        return capacity_at(self.cfg, epoch_progress, self.total_epochs) if self.cfg.capacity > 0 else None

    def loss(self, terms: ElboTerms, epoch_progress: float, adapt: bool = True) -> Loss:
        """The loss to minimise; `adapt=False` leaves the soft target's multiplier as it is (for extra steps, such
        as aggressive encoder training's, that should not count as training steps)."""
        if self.cfg.capacity > 0:
            return capacity_elbo(terms, self.capacity(epoch_progress), self.cfg.gamma)
        weight = self.weight(epoch_progress)
        loss = free_bits_elbo(terms, self.cfg.free_bits, weight) if self.cfg.free_bits > 0 else \
            beta_elbo(terms, weight)
        if adapt and self.cfg.kl_target > 0:  # adapt after the step's loss is formed: the next step sees the new weight
            rate = float(loss.kl.detach())  # one host sync per step, only for this cure
            factor = 1.0 + self.SOFT_STEP
            self.soft = min(1.0, self.soft * factor) if rate > self.cfg.kl_target else \
                max(self.SOFT_MIN, self.soft / factor)
        return loss


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag e^logvar) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 100,
               chunk: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """IWAE bound log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x) (Burda et al. 2015), per image, in nats.

    It is ≥ the ELBO in expectation and grows with k towards log p(x). The k samples are drawn `chunk`
    at a time so memory stays at B × chunk decoded images.
    """
    x = as_float(x)  # (B, C, H, W) in [0, 1]
    mu, logvar = model.encode(x, y)  # (B, d)
    b, d = mu.shape
    log_w = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn(n, b, d, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (n, B, d)
        y_rep = None if y is None else y.repeat(n)
        x_rep = x.repeat(n, 1, 1, 1)  # (n·B, C, H, W)
        logits = model.decode(z.reshape(n * b, d), y_rep, x_rep)  # (n·B, C, H, W)
        log_px_z = log_likelihood(model, x_rep, logits).view(n, b)  # (n, B)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (n, B)
        log_qz = log_normal(z, mu, logvar)  # (n, B)
        log_w.append(log_px_z + log_pz - log_qz)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)  # (B,)
