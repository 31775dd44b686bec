"""Encoders, decoders and the VAE (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114).

The model holds the networks only; the losses live in `objectives.py`. Decoders return logits: the
image mean is sigmoid(logits) for both likelihoods, BCE-with-logits uses them directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers)


def _one_hot(y: torch.Tensor | None, n_classes: int, batch: int, like: torch.Tensor) -> torch.Tensor | None:
    if n_classes == 0:
        return None
    if y is None:
        raise ValueError("this is a conditional VAE: pass the labels y")
    return F.one_hot(y.long(), n_classes).to(like.dtype).reshape(batch, n_classes)


def _cat(h: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
    return h if onehot is None else torch.cat([h, onehot], dim=1)


class MLPEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_classes = cfg.n_classes
        self.body = _mlp([cfg.n_pixels + cfg.n_classes, *cfg.hidden])
        self.head = nn.Linear(cfg.hidden[-1], 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.flatten(1)  # (B, C*H*W)
        h = self.body(_cat(flat, _one_hot(y, self.n_classes, len(x), flat)))  # (B, hidden[-1])
        return self.head(h)  # (B, 2d)


class MLPDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_classes, self.image_shape = cfg.n_classes, cfg.image_shape
        widths = list(reversed(cfg.hidden))
        self.body = _mlp([cfg.latent_dim + cfg.n_classes, *widths])
        self.head = nn.Linear(widths[-1], cfg.n_pixels)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(_cat(z, _one_hot(y, self.n_classes, len(z), z)))  # (B, hidden[0])
        return self.head(h).view(len(z), *self.image_shape)  # (B, C, H, W) logits


def _padded_size(size: int, n_layers: int) -> int:
    step = 2**n_layers
    return math.ceil(size / step) * step


class ConvEncoder(nn.Module):
    """Stride-2 4×4 convolutions, each halving H and W; the input is zero-padded to a multiple of 2^L."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        n = len(cfg.channels)
        self.n_classes = cfg.n_classes
        self.pad_h, self.pad_w = _padded_size(h, n) - h, _padded_size(w, n) - w
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *cfg.channels[:-1]], cfg.channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        flat = cfg.channels[-1] * _padded_size(h, n) // 2**n * _padded_size(w, n) // 2**n
        self.head = nn.Linear(flat + cfg.n_classes, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pad(x, (0, self.pad_w, 0, self.pad_h))  # (B, C, H', W')
        h = self.body(x).flatten(1)  # (B, channels[-1] * H'/2^L * W'/2^L)
        return self.head(_cat(h, _one_hot(y, self.n_classes, len(x), h)))  # (B, 2d)


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: a linear map to a small feature map, then stride-2 transposed convs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        n = len(cfg.channels)
        self.n_classes, self.image_shape = cfg.n_classes, cfg.image_shape
        self.start = (cfg.channels[-1], _padded_size(h, n) // 2**n, _padded_size(w, n) // 2**n)
        self.fc = nn.Linear(cfg.latent_dim + cfg.n_classes, math.prod(self.start))
        widths = list(reversed(cfg.channels))
        layers: list[nn.Module] = [nn.ReLU()]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(widths[-1], c, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(_cat(z, _one_hot(y, self.n_classes, len(z), z))).view(len(z), *self.start)
        out = self.body(h)  # (B, C, H', W')
        _, height, width = self.image_shape
        return out[:, :, :height, :width]  # (B, C, H, W) logits


class VAE(nn.Module):
    """q(z|x) = N(μ(x), diag σ²(x)), p(z) = N(0, I), p(x|z) Bernoulli or Gaussian with mean sigmoid(logits)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        enc, dec = (MLPEncoder, MLPDecoder) if cfg.architecture == "mlp" else (ConvEncoder, ConvDecoder)
        self.encoder, self.decoder = enc(cfg), dec(cfg)
        if cfg.likelihood == "gaussian":
            if cfg.gaussian_sigma is None:  # one learned σ for all pixels (Rybkin et al. 2021, σ-VAE)
                self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))
            else:
                self.register_buffer("log_sigma", torch.tensor(math.log(cfg.gaussian_sigma)))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, y).chunk(2, dim=1)  # (B, d), (B, d)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε with ε ~ N(0, I): the reparameterisation trick."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z, y)  # (B, C, H, W) logits

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The image a latent code stands for: E[x|z] = sigmoid(logits), in [0, 1]."""
        return torch.sigmoid(self.decode(z, y))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar)  # (B, d)
        return self.decode(z, y), mu, logvar
