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


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order (van den Oord et al. 2016,
    PixelCNN). Mask 'A' also hides the centre (first layer); mask 'B' lets a feature see its own position."""

    def __init__(self, c_in: int, c_out: int, kernel: int, mask_type: str):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)  # (out, in, k, k)
        centre = kernel // 2
        mask[:, :, centre, centre + (mask_type == "B"):] = 0
        mask[:, :, centre + 1:, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNNDecoder(nn.Module):
    """p(x|z) = Π_i p(x_i | x_<i, z): masked convolutions over the image plus a map of z added to every
    layer (as in PixelVAE, Gulrajani et al. 2017). Strong enough to model x without z — the classic setting
    for posterior collapse (Chen et al. 2017, Variational Lossy Autoencoder)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        self.n_classes, self.image_shape, self.width = cfg.n_classes, cfg.image_shape, cfg.ar_channels
        self.cond = nn.Linear(cfg.latent_dim + cfg.n_classes, cfg.ar_channels * h * w)
        self.first = MaskedConv2d(c, cfg.ar_channels, 7, "A")
        self.layers = nn.ModuleList(MaskedConv2d(cfg.ar_channels, cfg.ar_channels, 3, "B")
                                    for _ in range(cfg.ar_layers))
        self.out = nn.Conv2d(cfg.ar_channels, c, 1)

    def forward(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _, h, w = self.image_shape
        cond = self.cond(_cat(z, _one_hot(y, self.n_classes, len(z), z))).view(len(z), self.width, h, w)
        feat = F.relu(self.first(x) + cond)  # (B, width, H, W)
        for layer in self.layers:
            feat = F.relu(layer(feat) + cond)
        return self.out(feat)  # (B, C, H, W) logits of x_i given x_<i and z


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every linear and convolution layer's weights and biases from a generator seeded with `seed`, with
    PyTorch's default scheme (weights Kaiming-uniform with a = √5, biases U(−1/√fan_in, 1/√fan_in)). The same
    seed gives the same model in any thread, whatever else uses torch's global generator meanwhile."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                weight = torch.empty(module.weight.shape)  # drawn on the CPU: the same numbers on any device
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
                module.weight.copy_(weight)
                if module.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    module.bias.copy_(torch.empty(module.bias.shape).uniform_(-bound, bound, generator=gen))
    return model


class VAE(nn.Module):
    """q(z|x) = N(μ(x), diag σ²(x)), p(z) = N(0, I), p(x|z) Bernoulli or Gaussian with mean sigmoid(logits)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        enc, dec = (MLPEncoder, MLPDecoder) if cfg.architecture == "mlp" else (ConvEncoder, ConvDecoder)
        self.encoder = enc(cfg)
        self.decoder = PixelCNNDecoder(cfg) if cfg.autoregressive else dec(cfg)
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
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ ⊙ ε with ε ~ N(0, I): the reparameterisation trick. ε comes from `generator` when given
        (runs in parallel threads stay reproducible), else from torch's global generator."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # (B, d)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of p(x|z), (B, C, H, W). An autoregressive decoder also needs the image x it scores
        (teacher forcing); without x it generates one (see `decode_mean`)."""
        if not self.config.autoregressive:
            return self.decoder(z, y)
        if x is None:
            return torch.logit(self._generate(z, y, sample=False), eps=1e-6)
        return self.decoder(z, x, y)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The image a latent code stands for, in [0, 1]: E[x|z] = sigmoid(logits). For an autoregressive
        decoder, pixels are generated in raster order, each set to its probability given the earlier ones."""
        if self.config.autoregressive:
            return self._generate(z, y, sample=False)
        return torch.sigmoid(self.decode(z, y))

    def sample_images(self, z: torch.Tensor, y: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Images drawn from p(x|z): Bernoulli draws for an autoregressive decoder (pixel by pixel),
        the mean image otherwise (the usual way VAE samples are shown)."""
        if self.config.autoregressive:
            return self._generate(z, y, sample=True, generator=generator)
        return self.decode_mean(z, y)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """sigmoid of the decoder's logits at z = μ(x); for an autoregressive decoder, each pixel's
        probability given the true earlier pixels (one-step-ahead prediction)."""
        mu, _ = self.encode(x, y)
        return torch.sigmoid(self.decode(mu, y, x))

    @torch.no_grad()
    def _generate(self, z: torch.Tensor, y: torch.Tensor | None, sample: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        c, h, w = self.config.image_shape
        x = torch.zeros(len(z), c, h, w, device=z.device)  # (B, C, H, W)
        for i in range(h):
            for j in range(w):
                p = torch.sigmoid(self.decoder(z, x, y)[:, :, i, j])  # (B, C)
                x[:, :, i, j] = torch.bernoulli(p, generator=generator) if sample else p
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar, generator)  # (B, d)
        return self.decode(z, y, x), mu, logvar
