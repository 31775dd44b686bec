"""Decoding the latent space: the lattice over two latent dimensions (Kingma & Welling 2014, fig. 4), the
aggregate posterior's density over it, paths between codes (linear and spherical), prior samples, and the
overview picture of a model, and the collapse lab's pictures of a sweep run (from z alone for a PixelCNN decoder).
Numpy out (tensors for the run pictures), images in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch

from . import pictures
from .config import decode_batch
from .model import VAE
from .pixels import as_float
from .projection import pca, subsample


def lattice_axis(n: int, spacing: str = "quantile", span: float = 3.0, coverage: float = 0.95) -> np.ndarray:
    """`n` latent values along one axis: prior quantiles Φ⁻¹(p) for p evenly spread over the central
    `coverage` mass (equal prior mass per cell), or a linear range [−span, span]."""
    if n < 1:
        raise ValueError("the grid needs at least one point per side")
    if spacing == "quantile":
        tail = (1 - coverage) / 2
        p = torch.linspace(tail, 1 - tail, n, dtype=torch.float64)
        return torch.special.ndtri(p).numpy()
    if spacing == "linear":
        return np.linspace(-span, span, n)
    raise ValueError(f"spacing must be 'quantile' or 'linear', got {spacing!r}")


def lattice_value(u: np.ndarray, n: int, spacing: str = "quantile", span: float = 3.0,
                  coverage: float = 0.95) -> np.ndarray:
    """The latent value at fractional cell index `u` (cell k's centre is u = k) of the axis `lattice_axis(n, …)`
    draws: between cell centres the spacing is followed (linear in the quantile p for prior quantiles), so a click
    anywhere on a lattice picture decodes the point that lies there. `lattice_value(arange(n), n) == lattice_axis(n)`."""
    u = np.asarray(u, dtype=np.float64)
    if n == 1:
        return np.full_like(u, lattice_axis(1, spacing, span, coverage)[0])
    if spacing == "quantile":
        tail = (1 - coverage) / 2
        p = np.clip(tail + u * (1 - 2 * tail) / (n - 1), 1e-6, 1 - 1e-6)
        return torch.special.ndtri(torch.as_tensor(p)).numpy()
    if spacing == "linear":
        return -span + u * 2 * span / (n - 1)
    raise ValueError(f"spacing must be 'quantile' or 'linear', got {spacing!r}")


def decode_lattice(model: VAE, axis_x: np.ndarray, axis_y: np.ndarray, dims: tuple[int, int] = (0, 1),
                   reference: np.ndarray | None = None, label: int | None = None, dtype=np.float32) -> np.ndarray:
    """Decode z = reference with z[dims] set to every (x, y) pair. Returns (len(y), len(x), C, H, W), row 0
    at the largest y so that the picture reads like a plot (y up); float32 in [0, 1], or 8-bit pixels
    (`pictures.to_uint8`) for `dtype` uint8. Decoded in batches (`decode_codes`)."""
    d = model.latent_dim
    ref = np.zeros(d) if reference is None else np.asarray(reference, dtype=np.float64)
    ys = np.asarray(axis_y)[::-1]
    z = np.tile(ref, (len(ys) * len(axis_x), 1))  # (n_y·n_x, d)
    gx, gy = np.meshgrid(axis_x, ys)  # (n_y, n_x) each
    z[:, dims[0]] = gx.ravel()
    if d > 1:
        z[:, dims[1]] = gy.ravel()
    images = decode_codes(model, z, label, dtype)  # (n_y·n_x, C, H, W)
    return images.reshape(len(ys), len(axis_x), *images.shape[1:])


@torch.no_grad()
def overview(model: VAE, mu: np.ndarray | None, labels: np.ndarray | None = None, class_names=None,
             max_points: int = 10_000, seed: int = 0) -> np.ndarray:
    """The app's first picture of a model, RGB uint8 (H, W, 3). For a 2-D latent: the encoded test means μ(x)
    beside the decoder's mean images on a 16×16 lattice over the same square, so a class's cloud on the
    left decodes to that class's images on the right. Otherwise: a PCA map of μ(x) beside prior samples.
    Without test images (`mu` None) only the decoder's side is drawn, over the prior's central ±3 square."""
    side = 8 if model.config.autoregressive else 16  # an autoregressive decoder draws pixel by pixel
    ids = None if mu is None else subsample(len(mu), max_points, seed)
    classes = None if labels is None or ids is None else np.asarray(labels)[ids]
    given = "" if not model.config.n_classes else f", y = {class_names[0] if class_names else 0}"
    if model.latent_dim == 2:
        xy = None if mu is None else np.asarray(mu, float)[ids]  # (n, 2)
        limit = 3.0 if xy is None else pictures.square_limit(xy)
        axis = pictures.cell_centres(limit, side)
        decoded = decode_lattice(model, axis, axis, dtype=np.uint8)  # (side, side, C, H, W)
        return pictures.overview_figure(xy, classes, class_names, decoded, limit,
                                        left_title="Encoder: test images at their mean mu(x)",
                                        right_title=f"Decoder: E[x|z{given}] on the same square" if xy is not None
                                        else f"Decoder: E[x|z{given}] over the prior's central square")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(side * side, model.latent_dim, generator=gen).numpy()  # (side², d)
    images = decode_codes(model, z, 0, np.uint8)  # (side², C, H, W)
    xy, ratio = (None, (0.0, 0.0)) if mu is None else pca(np.asarray(mu, float)[ids], 2)  # (n, 2)
    return pictures.overview_figure(xy, classes, class_names, images.reshape(side, side, *images.shape[1:]),
                                    3.0 if xy is None else pictures.square_limit(xy),
                                    left_title=f"Encoder: PCA of the means mu(x), d = {model.latent_dim}",
                                    right_title=f"Decoder: samples z ~ N(0, I){given}",
                                    axis_names=(f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})"), raw_latent=False)


def latent_still(mu: np.ndarray, labels: np.ndarray | None = None, class_names=None, max_points: int = 10_000,
                 size: int = 440) -> np.ndarray:
    """A still picture of the Latent page's first map, RGB uint8 (H, W, 3): the posterior means of (a seeded
    subsample of) the test set, raw for a 2-D latent, else on their two principal axes; coloured by class."""
    ids = subsample(len(mu), max_points)  # the page's default points shown
    classes = None if labels is None else np.asarray(labels)[ids]
    mu = np.asarray(mu, float)
    if mu.shape[1] == 2:
        xy = mu[ids]  # (n, 2)
        return pictures.map_picture(xy, classes, class_names, pictures.square_limit(xy), size=size,
                                    title=f"{len(ids):,} test images at their mean mu(x)")
    coords, ratio = pca(mu, 2)  # (N, 2): the projection of all means, as the page computes it
    xy = coords[ids]
    return pictures.map_picture(xy, classes, class_names, pictures.square_limit(xy), size=size, raw_latent=False,
                                title=f"PCA of {len(ids):,} means mu(x), d = {mu.shape[1]}",
                                axis_names=(f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})"))


# ---------------------------------------------------------------- the aggregate posterior over the lattice

def density_2d(points: np.ndarray, xs: np.ndarray, ys: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """Gaussian kernel density estimate of 2-D `points` evaluated on the grid xs × ys: (len(ys), len(xs)).
    Bandwidth: Scott's rule per axis when not given. The Gaussian kernel is separable, so the whole grid is
    one matrix product of the per-axis kernels: (ny, N) @ (N, nx)."""
    p = np.asarray(points, float)
    if len(p) == 0:
        return np.zeros((len(ys), len(xs)))
    if bandwidth is None:
        sd = p.std(axis=0)
        bw = np.maximum(sd * len(p) ** (-1 / 6), 1e-3)
    else:
        bw = np.array([bandwidth, bandwidth], float)
    kx = np.exp(-0.5 * ((np.asarray(xs, float)[None, :] - p[:, 0:1]) / bw[0]) ** 2)  # (N, nx)
    ky = np.exp(-0.5 * ((np.asarray(ys, float)[None, :] - p[:, 1:2]) / bw[1]) ** 2)  # (N, ny)
    norm = 1.0 / (2 * np.pi * bw[0] * bw[1] * len(p))
    return (ky.T @ kx) * norm


def cell_to_latent(u: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Map fractional cell indices (0 … n−1) of a lattice to latent values by interpolating its axis."""
    return np.interp(u, np.arange(len(axis)), axis)


# ---------------------------------------------------------------- paths between codes

def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(1−t)·a + t·b for each t: returns (len(t), d)."""
    a, b, t = np.asarray(a, float), np.asarray(b, float), np.asarray(t, float)[:, None]
    return (1 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for VAEs): moves along the great circle between
    the directions of a and b while the norm goes linearly from |a| to |b|, so intermediate codes keep a
    typical norm under the Gaussian prior. Falls back to `lerp` for (anti)parallel or zero vectors."""
    a, b, t = np.asarray(a, float), np.asarray(b, float), np.asarray(t, float)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return lerp(a, b, t)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return lerp(a, b, t)
    tt = t[:, None]
    direction = (np.sin((1 - tt) * omega) * ua + np.sin(tt * omega) * ub) / np.sin(omega)
    return direction * ((1 - tt) * na + tt * nb)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str = "linear") -> np.ndarray:
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 steps")
    t = np.linspace(0.0, 1.0, steps)
    if method == "linear":
        return lerp(a, b, t)
    if method == "spherical":
        return slerp(a, b, t)
    raise ValueError(f"method must be 'linear' or 'spherical', got {method!r}")


def one_per_class(y: np.ndarray | None, n: int, limit: int = 10) -> np.ndarray:
    """Indices of the first image of each class, in class order (the first `limit` classes present); without
    labels, of the first min(limit, n) of the `n` images."""
    if y is None:
        return np.arange(min(limit, n))
    _, first = np.unique(np.asarray(y), return_index=True)  # (classes,) first index of each, classes sorted
    return first[:limit]


@torch.no_grad()
def run_picture_rows(model: VAE, x_test: torch.Tensor, y_test: torch.Tensor | None = None,
                     draws: int = 3) -> dict[str, torch.Tensor]:
    """The rows of a sweep run's pictures, one column per test image (`one_per_class`), each (rows, n, C, H, W):
    "recon": the inputs (top row) over what the code gives. A plain decoder: the mean image at z = μ(x). An
    autoregressive one (PixelCNN; van den Oord et al. 2016, as in Gulrajani et al. 2017): images generated from z
    alone with the conditional mean fed forward (`VAE.generate`), at z = μ(x), then at `draws` draws z ~ q(z|x), so
    the viewer sees what z pins down and what it leaves to the decoder (Chen et al. 2017).
    "teacher_forced", autoregressive only: `VAE.reconstruct`, the decoder seeing the input's earlier pixels.
    "samples": from z ~ N(0, I), the decoder's mean image (for a PixelCNN, the conditional mean fed forward).
    An autoregressive run's images from z all come from one batched `VAE.generate` call."""
    labels = None if y_test is None else y_test.cpu().numpy()
    idx = torch.as_tensor(one_per_class(labels, len(x_test)), device=x_test.device)  # (n,)
    gen = torch.Generator(device=x_test.device).manual_seed(0)
    model = model.eval()
    x = as_float(x_test[idx])  # (n, C, H, W) in [0, 1]
    n = len(x)
    z_prior = torch.randn(n, model.latent_dim, generator=gen, device=x.device)  # (n, d)
    if model.config.autoregressive:
        mu, logvar = model.encode(x)  # (n, d), (n, d)
        z_post = model.reparameterize(mu.repeat_interleave(draws, dim=0), logvar.repeat_interleave(draws, dim=0),
                                      gen)  # (n·draws, d), the draws of each input together
        images = model.generate(torch.cat([mu, z_post, z_prior]), draw=False)  # (n + n·draws + n, C, H, W)
        from_post = images[n:-n].view(n, draws, *x.shape[1:]).transpose(0, 1)  # (draws, n, C, H, W)
        rows = {"recon": torch.cat([x[None], images[None, :n], from_post]),  # (2 + draws, n, C, H, W)
                "teacher_forced": model.reconstruct(x)[None],  # (1, n, C, H, W)
                "samples": images[None, -n:]}  # (1, n, C, H, W)
    else:
        rows = {"recon": torch.stack([x, model.reconstruct(x)]),  # (2, n, C, H, W)
                "samples": model.decode_mean(z_prior)[None]}  # (1, n, C, H, W)
    return rows


@torch.no_grad()
def decode_codes(model: VAE, z: np.ndarray, label: int | None = None, dtype=np.float32) -> np.ndarray:
    """The decoder's images E[x|z] (n, C, H, W) of latent codes z (n, d) — of class `label` for a conditional model
    (0 when not given) — float32 in [0, 1], or 8-bit pixels (`pictures.to_uint8`) for `dtype` uint8. Decoded
    `config.decode_batch` codes at a time, so the activations stay within a fixed budget whatever the model."""
    device = next(model.parameters()).device
    z = np.atleast_2d(z)
    out = np.empty((len(z), *model.config.image_shape), dtype=dtype)
    step = decode_batch(model.config)
    for start in range(0, len(z), step):
        zt = torch.as_tensor(z[start:start + step], dtype=torch.float32, device=device)  # (b, d)
        y = (torch.full((len(zt),), int(label or 0), device=device, dtype=torch.int64) if model.config.n_classes
             else None)
        images = model.eval().decode_mean(zt, y).cpu().numpy()  # (b, C, H, W)
        out[start:start + len(zt)] = pictures.to_uint8(images) if out.dtype == np.uint8 else images
    return out
