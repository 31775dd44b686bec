"""Encoders, decoders and the VAE (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114).

The model holds the networks only; the losses live in `objectives.py`. Decoders return logits: the
image mean is sigmoid(logits) for both likelihoods, BCE-with-logits uses them directly. The linear decoder
returns the mean itself (identity link); `VAE.mean_of` turns any decoder's output into the mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .device import one_thread
from .pixels import as_float


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


class LinearEncoder(nn.Module):
    """q(z|x) = N(Vx + c, diag e^logvar) with `logvar` a free vector that does not depend on x (Lucas et al. 2019,
    "Don't blame the ELBO!"). For p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) the exact posterior is
    N(M⁻¹Wᵀ(x − b), σ²M⁻¹) with M = WᵀW + σ²I: a mean linear in x and a covariance that is the same for every x.
    At the ELBO's optimum WᵀW is diagonal, so this family holds the exact posterior and the ELBO is tight there;
    a log-variance that depended on x would only add weights the optimum sets to zero."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.mean = nn.Linear(cfg.n_pixels, cfg.latent_dim)
        self.logvar = nn.Parameter(torch.zeros(cfg.latent_dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mu = self.mean(x.flatten(1))  # (B, d)
        return torch.cat([mu, self.logvar.expand_as(mu)], dim=1)  # (B, 2d)


class LinearDecoder(nn.Module):
    """The mean of p(x|z) is Wz + b itself (identity link, not a sigmoid): the pPCA generative model
    (Tipping & Bishop 1999). `VAE.mean_of` knows this."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.image_shape = cfg.image_shape
        self.linear = nn.Linear(cfg.latent_dim, cfg.n_pixels)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(z).view(len(z), *self.image_shape)  # (B, C, H, W) the mean Wz + b


NETWORKS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder),
            "linear": (LinearEncoder, LinearDecoder)}  # architecture → (encoder, decoder)


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

    @property
    def reach(self) -> int:
        """How many rows above (and columns either side) a pixel's logit can see: 3 for the 7×7 first layer
        plus 1 per 3×3 layer."""
        return sum(m.kernel_size[0] // 2 for m in (self.first, *self.layers))

    def condition(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The map of z (and y) added to every layer, (B, width, H, W)."""
        _, h, w = self.image_shape
        return self.cond(_cat(z, _one_hot(y, self.n_classes, len(z), z))).view(len(z), self.width, h, w)

    def forward(self, z: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.condition(z, y)  # (B, width, H, W)
        feat = F.relu(self.first(x) + cond)  # (B, width, H, W)
        for layer in self.layers:
            feat = F.relu(layer(feat) + cond)
        return self.out(feat)  # (B, C, H, W) logits of x_i given x_<i and z

    def pixel_logit(self, cond: torch.Tensor, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The logit (B, C) of pixel (i, j) given z's map `cond` (from `condition`) and the pixels of x (B, C, H, W)
        before it: `forward`'s numbers (up to rounding), but each layer runs only on the pixels the layers after it
        still need, `reach` rows above and columns either side shrinking by each layer's own reach (padding
        errors at a cut stay outside what is kept)."""
        w = self.image_shape[2]

        def window(r: int) -> tuple[slice, slice]:  # the pixels within r rows above and r columns either side
            return slice(max(0, i - r), i + 1), slice(max(0, j - r), min(w, j + r + 1))

        r = self.reach
        rows, cols = window(r)
        feat = x[:, :, rows, cols]  # (B, C, ≤r+1, ≤2r+1)
        for layer in (self.first, *self.layers):
            r -= layer.kernel_size[0] // 2
            keep_rows, keep_cols = window(r)
            out = layer(feat)[:, :, keep_rows.start - rows.start:,
                              keep_cols.start - cols.start:keep_cols.stop - cols.start]  # (B, width, ≤r+1, ≤2r+1)
            feat = F.relu(out + cond[:, :, keep_rows, keep_cols])
            rows, cols = keep_rows, keep_cols
        return self.out(feat)[:, :, 0, 0]  # r = 0: feat is pixel (i, j) alone, (B, width, 1, 1)


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
    """q(z|x) = N(μ(x), diag σ²(x)), p(z) = N(0, I), p(x|z) Bernoulli or Gaussian with mean `mean_of(logits)`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        enc, dec = NETWORKS[cfg.architecture]
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
        """(μ, log σ²) of q(z|x) for a batch of images, 8-bit or float (`pixels.as_float`)."""
        mu, logvar = self.encoder(as_float(x), y).chunk(2, dim=1)  # (B, d), (B, d)
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
            return torch.logit(self.generate(z, y, draw=False), eps=1e-6)
        return self.decoder(z, x, y)

    def mean_of(self, output: torch.Tensor) -> torch.Tensor:
        """E[x|z] from the decoder's output `decode(...)`: sigmoid(logits), or for the linear architecture the
        output itself (its mean Wz + b is not squashed, so it can leave [0, 1])."""
        return output if self.config.architecture == "linear" else torch.sigmoid(output)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The image a latent code stands for, in [0, 1]: E[x|z] = sigmoid(logits). An autoregressive decoder
        has no closed-form E[x|z]: its image is generated with the conditional mean fed forward (`generate`
        with draw=False), one readable image per code."""
        if self.config.autoregressive:
            return self.generate(z, y, draw=False)
        return self.mean_of(self.decode(z, y))

    def sample_images(self, z: torch.Tensor, y: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Images drawn from p(x|z): Bernoulli draws for an autoregressive decoder (pixel by pixel, `generate`;
        binary pixels fed back to a decoder trained on grey levels come out as specks, `decode_mean` is the
        readable view), the mean image otherwise (the usual way VAE samples are shown)."""
        if self.config.autoregressive:
            return self.generate(z, y, draw=True, generator=generator)
        return self.decode_mean(z, y)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """sigmoid of the decoder's logits at z = μ(x). For an autoregressive decoder this is teacher-forced:
        each pixel's probability given z and the input's own earlier pixels (one step ahead), which looks like
        x even when z carries nothing; `generate` from μ(x) shows what z alone gives."""
        x = as_float(x)  # (B, C, H, W) in [0, 1]
        mu, _ = self.encode(x, y)
        return self.mean_of(self.decode(mu, y, x))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None, draw: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, C, H, W) from z alone with an autoregressive decoder, pixel by pixel in raster order
        (van den Oord et al. 2016): pixel (i, j) gets its probability p given z and the pixels generated before
        it, then a Bernoulli draw from p (`draw`) or p itself, fed forward as the pixel (the conditional mean fed
        forward: a greedy image, readable but not E[x|z]). Each step runs the decoder only where pixel (i, j)
        needs it (`PixelCNNDecoder.pixel_logit`), on one intra-op thread: its tensors are too small to share, and
        with 2 threads on a busy 2-core CPU a step waits whenever the other thread is descheduled (50 images of
        28×28 there: 1.7 s on one thread, 6–36 s on two)."""
        if not self.config.autoregressive:
            raise ValueError("generate needs an autoregressive decoder; use decode_mean")
        c, h, w = self.config.image_shape
        cond = self.decoder.condition(z, y)  # (B, width, H, W)
        x = torch.zeros(len(z), c, h, w, device=z.device)  # (B, C, H, W)
        with one_thread():
            for i in range(h):
                for j in range(w):
                    p = torch.sigmoid(self.decoder.pixel_logit(cond, x, i, j))  # (B, C)
                    x[:, :, i, j] = torch.bernoulli(p, generator=generator) if draw else p
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None):
        x = as_float(x)  # (B, C, H, W) in [0, 1]
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar, generator)  # (B, d)
        return self.decode(z, y, x), mu, logvar
