"""Frozen, hashable configurations. They key caches and are stored inside every checkpoint.

A model's configuration is checked against the limits below before anything is built or allocated (a checkpoint's
few bytes of JSON can ask for anything): image sides and channels as a dataset may have them (`pixels`), the number
and width of layers, its weights (`weight_count`) and one image's activations (`activation_values`), both computed
from the configuration alone. Pages decode many codes in batches of `decode_batch` codes."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .pixels import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE

ARCHITECTURES = ("mlp", "conv", "linear")  # linear: the linear-Gaussian VAE, whose optimum is pPCA (ppca.py)
LIKELIHOODS = ("bernoulli", "gaussian")
MAX_LATENT_DIM = 64
MAX_LAYERS = 8  # MLP hidden layers, conv layers (each halves the side: 8 take MAX_SIDE = 256 to 1), PixelCNN layers
MAX_WIDTH = 8192  # units or channels of one layer
MAX_WEIGHTS = 100_000_000  # values in a model's state dict: 400 MB of float32, within a checkpoint's 512 MiB
MAX_ACTIVATION_BYTES = 128 << 20  # one image through the encoder and the decoder, every layer's output (float32)
DECODE_BATCH_BYTES = 256 << 20  # the activations of one batch when a page decodes many codes (`decode_batch`)


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind."""


def dataclass_from_dict(cls, data: Any):
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has unknown fields: {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from None


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}…{high}, got {value!r}")


def check_number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the VAE: image shape (C, H, W), latent size, networks and likelihood p(x|z)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 2
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)  # MLP widths, encoder order; the decoder mirrors them
    channels: tuple[int, ...] = (32, 64)  # conv widths, each a stride-2 layer
    likelihood: str = "bernoulli"
    gaussian_sigma: float | None = None  # None: one learned σ for all pixels
    n_classes: int = 0  # > 0 makes a conditional VAE (encoder and decoder see the one-hot label)
    autoregressive: bool = False  # decoder: a PixelCNN conditioned on z instead of `architecture`'s
    ar_channels: int = 16  # PixelCNN width
    ar_layers: int = 3  # PixelCNN 3×3 masked layers after the 7×7 first one

    def __post_init__(self) -> None:
        if len(self.image_shape) != 3:
            raise ConfigError(f"image_shape must be (C, H, W), got {self.image_shape!r}")
        for name, v, high in zip(("channels", "height", "width"), self.image_shape, (MAX_CHANNELS, MAX_SIDE, MAX_SIDE)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise ConfigError(f"image_shape {tuple(self.image_shape)!r}: the image {name} must be 1…{high} "
                                  f"(what a dataset may have), got {v!r}")
        check_int("latent_dim", self.latent_dim, 1, MAX_LATENT_DIM)
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not self.hidden or not self.channels:
            raise ConfigError("hidden and channels need at least one layer each")
        for name, layers in (("hidden", self.hidden), ("channels", self.channels)):
            if len(layers) > MAX_LAYERS:
                raise ConfigError(f"{name} has {len(layers):,} layers; at most {MAX_LAYERS} are supported")
        for w in (*self.hidden, *self.channels):
            check_int("layer width", w, 1, MAX_WIDTH)
        if self.gaussian_sigma is not None:
            check_number("gaussian_sigma", self.gaussian_sigma, 1e-4, 10.0)
        check_int("n_classes", self.n_classes, 0, MAX_CLASSES)
        check_int("ar_channels", self.ar_channels, 1, 512)
        check_int("ar_layers", self.ar_layers, 0, MAX_LAYERS)
        if not isinstance(self.autoregressive, bool):
            raise ConfigError(f"autoregressive must be true or false, got {self.autoregressive!r}")
        if self.architecture == "linear":
            if self.likelihood != "gaussian" or self.gaussian_sigma is None:
                raise ConfigError("the linear architecture is the linear-Gaussian VAE: it needs the Gaussian "
                                  "likelihood with a fixed gaussian_sigma (σ = √σ²)")
            if self.autoregressive:
                raise ConfigError("the linear architecture has a linear decoder: it cannot be autoregressive")
            if self.n_classes:
                raise ConfigError("the linear architecture is unconditional: n_classes must be 0")
        if self.autoregressive and (self.image_shape[0] != 1 or self.likelihood != "bernoulli"):
            raise ConfigError("the autoregressive decoder supports one-channel images with the Bernoulli likelihood")
        weights, values = weight_count(self), activation_values(self)
        if weights > MAX_WEIGHTS:
            raise ConfigError(f"this model would have {weights:,} weights; the limit is {MAX_WEIGHTS:,} (use fewer "
                              "or narrower layers, or smaller images)")
        if 4 * values > MAX_ACTIVATION_BYTES:
            raise ConfigError(f"one image through this model takes {4 * values / 2**20:,.0f} MiB of activations; "
                              f"the limit is {MAX_ACTIVATION_BYTES >> 20} MiB (use fewer channels or smaller images)")

    @property
    def n_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return dataclass_from_dict(cls, data)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv_sides(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(H, W) of the conv encoder's padded input, then after each stride-2 layer (model.ConvEncoder)."""
    step = 2 ** len(cfg.channels)
    _, h, w = cfg.image_shape
    h, w = -(-h // step) * step, -(-w // step) * step
    return [(h >> i, w >> i) for i in range(len(cfg.channels) + 1)]


def weight_count(cfg: ModelConfig) -> int:
    """The values in the state dict of `model.VAE(cfg)` (parameters and buffers: what its checkpoint holds),
    counted from the configuration without building the model."""
    c, h, w = cfg.image_shape
    d, k, p = cfg.latent_dim, cfg.n_classes, cfg.n_pixels
    if cfg.architecture == "mlp":
        widths = [p + k, *cfg.hidden]
        encoder = sum(_linear(a, b) for a, b in zip(widths, widths[1:])) + _linear(cfg.hidden[-1], 2 * d)
        widths = [d + k, *reversed(cfg.hidden)]
        decoder = sum(_linear(a, b) for a, b in zip(widths, widths[1:])) + _linear(cfg.hidden[0], p)
    elif cfg.architecture == "conv":
        sides = _conv_sides(cfg)
        convs = sum(16 * a * b + b for a, b in zip([c, *cfg.channels[:-1]], cfg.channels))
        start = cfg.channels[-1] * math.prod(sides[-1])
        encoder = convs + _linear(start + k, 2 * d)
        widths = [*reversed(cfg.channels), c]
        decoder = _linear(d + k, start) + sum(16 * a * b + b for a, b in zip(widths, widths[1:]))
    else:
        encoder, decoder = _linear(p, d) + d, _linear(d, p)
    if cfg.autoregressive:  # PixelCNN: each masked convolution also holds its mask, as large as its weight
        a = cfg.ar_channels
        decoder = _linear(d + k, a * h * w) + 2 * 49 * c * a + a + cfg.ar_layers * (2 * 9 * a * a + a) + a * c + c
    return encoder + decoder + (cfg.likelihood == "gaussian")


def activation_values(cfg: ModelConfig) -> int:
    """An upper bound on the float values one image occupies going through the encoder and the decoder without
    gradients: the input and every layer's output (ReLUs are not in place), all counted as if held at once."""
    c, h, w = cfg.image_shape
    d, k, p = cfg.latent_dim, cfg.n_classes, cfg.n_pixels
    if cfg.architecture == "mlp":
        encoder = p + k + 2 * sum(cfg.hidden) + 2 * d
        decoder = d + k + 2 * sum(cfg.hidden) + p
    elif cfg.architecture == "conv":
        sides = _conv_sides(cfg)
        maps = sum(ch * math.prod(s) for ch, s in zip(cfg.channels, sides[1:]))  # each layer's output map
        encoder = c * math.prod(sides[0]) + 2 * maps + k + 2 * d
        decoder = d + k + 2 * maps + c * math.prod(sides[0])
    else:
        encoder, decoder = p + 2 * d, d + p
    if cfg.autoregressive:  # z's map, then per layer its output, the sum with the map and the ReLU
        decoder = d + k + cfg.ar_channels * h * w * (1 + 3 * (cfg.ar_layers + 1)) + 2 * p
    return encoder + decoder + 3 * p  # the input as floats, the mean image, a reconstruction's target


def decode_batch(cfg: ModelConfig) -> int:
    """How many codes a page decodes at once: their activations stay within DECODE_BATCH_BYTES."""
    return max(1, DECODE_BATCH_BYTES // (4 * activation_values(cfg)))


KL_SCHEDULES = ("linear", "cyclical")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Training objective: the weight β on the rate term and the standard cures for posterior collapse (see
    `objectives.py` for each formula and its paper).

    - `warmup_epochs`: linear KL warm-up (schedule "linear"; 0: none).
    - `kl_schedule="cyclical"`: cyclical annealing, `cycles` cycles, each ramping over its first `ramp` share.
    - `free_bits`: a floor λ on each latent dimension's batch-mean KL (hard free bits).
    - `kl_target`: soft free bits: the KL weight adapts (up to β) to keep the rate near this many nats.
    - `capacity`: capacity annealing, D + γ|KL − C(t)| with C growing to `capacity` nats over `capacity_epochs`
      (0: the whole run); β is not used then.
    - `aggressive`: aggressive encoder training until I(x;z) stops improving (an optimisation procedure, not a
      change of objective; combines with any of the above).
    The KL-weight cures (schedules, soft target) and the capacity objective exclude each other."""

    beta: float = 1.0
    free_bits: float = 0.0
    warmup_epochs: float = 0.0
    kl_schedule: str = "linear"
    cycles: int = 4
    ramp: float = 0.5
    kl_target: float = 0.0
    capacity: float = 0.0
    capacity_epochs: float = 0.0
    gamma: float = 100.0
    aggressive: bool = False

    def __post_init__(self) -> None:
        check_number("beta", self.beta, 0.0, 1000.0)
        check_number("free_bits", self.free_bits, 0.0, 100.0)
        check_number("warmup_epochs", self.warmup_epochs, 0.0, 10000.0)
        if self.kl_schedule not in KL_SCHEDULES:
            raise ConfigError(f"kl_schedule must be one of {KL_SCHEDULES}, got {self.kl_schedule!r}")
        check_int("cycles", self.cycles, 1, 1000)
        check_number("ramp", self.ramp, 0.01, 1.0)
        check_number("kl_target", self.kl_target, 0.0, 10000.0)
        check_number("capacity", self.capacity, 0.0, 10000.0)
        check_number("capacity_epochs", self.capacity_epochs, 0.0, 10000.0)
        check_number("gamma", self.gamma, 0.0, 100000.0)
        if not isinstance(self.aggressive, bool):
            raise ConfigError(f"aggressive must be true or false, got {self.aggressive!r}")
        if self.kl_schedule == "cyclical" and self.warmup_epochs > 0:
            raise ConfigError("a run has one KL schedule: linear warm-up or cyclical annealing, not both")
        weight_cures = [name for name, on in (("a warm-up", self.warmup_epochs > 0),
                                              ("cyclical annealing", self.kl_schedule == "cyclical"),
                                              ("free bits", self.free_bits > 0),
                                              ("a soft KL target", self.kl_target > 0)) if on]
        if self.capacity > 0 and weight_cures:
            raise ConfigError(f"capacity annealing replaces the KL weight, so it cannot be combined with "
                              f"{' or '.join(weight_cures)}")
        if self.kl_target > 0 and len(weight_cures) > 1:
            raise ConfigError("a soft KL target sets the KL weight itself: use it without a warm-up, cyclical "
                              "annealing or free bits")

    @property
    def is_plain(self) -> bool:
        """No cure for collapse is on: β alone weights the rate term, all through training."""
        return not (self.free_bits > 0 or self.warmup_epochs > 0 or self.kl_schedule == "cyclical"
                    or self.kl_target > 0 or self.capacity > 0 or self.aggressive)

    @property
    def label(self) -> str:
        """A short name for this objective, e.g. "β=1, cyclical ×4" or "capacity 25 nats, γ=100"."""
        parts = [f"capacity {self.capacity:g} nats, γ={self.gamma:g}" if self.capacity > 0 else f"β={self.beta:g}"]
        if self.free_bits > 0:
            parts.append(f"λ={self.free_bits:g}")
        if self.warmup_epochs > 0:
            parts.append(f"warm-up {self.warmup_epochs:g}")
        if self.kl_schedule == "cyclical":
            parts.append(f"cyclical ×{self.cycles} (ramp {self.ramp:g})")
        if self.kl_target > 0:
            parts.append(f"soft target {self.kl_target:g} nats")
        if self.aggressive:
            parts.append("aggressive")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ObjectiveConfig":
        return dataclass_from_dict(cls, data)


MAX_EPOCHS = 1000


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: Adam with a constant learning rate, shuffled mini-batches, a seed.

    Batch 384 at lr 3e-3 keeps a CPU's matrix units busier than smaller batches (bench/train_speed: 15 % less
    time per epoch than batch 256) and reaches at least the test ELBO of batch 256 at lr 2e-3 in the same
    60 s of training (258.3 vs 258.7 nats); batch 512 lost 1.3 nats there (bench/quality)."""

    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 384
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_number("lr", self.lr, 1e-7, 100.0)
        check_int("batch_size", self.batch_size, 1, 65536)
        check_int("seed", self.seed, 0, 2**32 - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, data)


FIRST_RUN_STEPS = 700  # optimiser steps a first run gets at least (see recommended_training)
BATCH_CHOICES = (32, 64, 128, 256, 384)


def recommended_training(n_train: int) -> TrainConfig:
    """Batch size and epochs that fit a dataset's size: about 20 or more batches per epoch (the largest batch
    in BATCH_CHOICES up to n_train / 20) and at least FIRST_RUN_STEPS optimiser steps (10–100 epochs).

    A fixed batch and epoch count does not: on the 8×8 digits (1,438 training images) batch 384 for 10 epochs
    is 40 steps and ends with the posterior collapsed (test KL 0.00, 0 of 2 active units, −ELBO 27.1 for
    seeds 0–2), while batch 64 for 30 epochs (690 steps, ≈ 2 s) keeps both units active at −ELBO 24.4–24.8.
    The encoder lags the decoder early in training, and a short run ends before it catches up (He et al. 2019)."""
    n_train = max(1, int(n_train))
    batch = max([b for b in BATCH_CHOICES if b <= n_train / 20] or [BATCH_CHOICES[0]])
    batch = min(batch, n_train)
    steps_per_epoch = -(-n_train // batch)
    epochs = min(100, max(10, -(-FIRST_RUN_STEPS // steps_per_epoch)))
    epochs = min(100, -(-epochs // 5) * 5)  # a round number
    return TrainConfig(epochs=epochs, batch_size=batch)


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def tutorial_preset(image_shape=(1, 28, 28), latent_dim: int = 2, epochs: int = 20) -> Preset:
    """The recipe of the seed tutorial (pytorch/examples vae): MLP 784-400-d, BCE summed over pixels,
    Adam 1e-3, batch 128."""
    return Preset(
        model=ModelConfig(image_shape=tuple(image_shape), latent_dim=latent_dim, hidden=(400,)),
        train=TrainConfig(epochs=epochs, lr=1e-3, batch_size=128),
    )
