"""Everything the pages compute more than once, cached for the server process and bounded: checkpoints (by path
and modification time), datasets (the library's process-wide cache, shared with the runs), and per-model
results keyed by a model key that changes whenever the weights can (encodings, pictures, projections,
estimates), and the collapse lab's sweeps and their figures (keyed by the manifest's modification time)."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from .. import checkpoint as ckpt_io
from .. import lab_plots, pictures, store
from ..data import Dataset, available_builtin
from ..decoding import cell_to_latent, density_2d, overview
from ..device import default_device
from ..estimates import Estimate, iwae_seconds, run_seconds
from ..metrics import per_sample_scores
from ..model import VAE
from ..projection import pca
from ..runs import RunSpec
from ..sweep import load_sweep


@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    return default_device()


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_checkpoint_file(path: str, mtime_ns: int) -> ckpt_io.Checkpoint:
    """A checkpoint file, cached by path and modification time (a re-saved file is reloaded)."""
    return ckpt_io.load(path, device=device())


def dataset(ref: store.DataRef, download: bool = False) -> Dataset:
    """The dataset `ref` points to, on the app's device (cached by the library for the whole process, so the
    pages and the runs share one copy). Never downloads unless asked; failures are not cached."""
    with st.spinner("Loading the dataset…"):
        return store.load(ref, device(), download=download)


@st.cache_resource(show_spinner=False, ttl=30)
def builtin_available() -> dict[str, bool]:
    return available_builtin()


@st.cache_resource(show_spinner=False, max_entries=256)
def parameter_count(cfg) -> int:
    """The number of weights of VAE(cfg), counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(cfg).parameters())


@st.cache_resource(show_spinner="Timing a few training steps…", max_entries=64)
def run_estimate(spec: RunSpec) -> Estimate:
    """How long `spec` will take here, measured from a probe (`estimates.run_seconds`); cached per spec."""
    return run_seconds(spec, store.load(spec.data, device()))


@st.cache_resource(show_spinner="Timing the IWAE bound on a few images…", max_entries=64)
def iwae_estimate(model_key: str, _model: VAE, _x: torch.Tensor, _y, k: int) -> float:
    return iwae_seconds(_model, _x, _y, k)


# ---------------------------------------------------------------- per-model results

@st.cache_resource(show_spinner="Encoding the test set…", max_entries=8)
def test_scores(model_key: str, _am) -> dict[str, np.ndarray]:
    """Per test image: posterior mean/log-variance, −ELBO, reconstruction term, KL, squared error."""
    return per_sample_scores(_am.model, _am.data.x_test, _am.labels_for_model)


@st.cache_resource(show_spinner="Drawing the overview…", max_entries=8)
def overview_png(model_key: str, _am) -> bytes:
    """The overview picture of the active model (`decoding.overview`) as PNG bytes; without test images, its
    decoder side only."""
    if _am.data is None:
        return pictures.png_bytes(overview(_am.model, None))
    mu = test_scores(model_key, _am)["mu"]
    labels = None if _am.data.y_test is None else _am.data.y_test.cpu().numpy()
    return pictures.png_bytes(overview(_am.model, mu, labels, _am.data.class_names))


@st.cache_resource(show_spinner=False, max_entries=8)
def checkpoint_bytes(model_key: str, _ckpt: ckpt_io.Checkpoint) -> bytes:
    return ckpt_io.to_bytes(_ckpt)


@st.cache_resource(show_spinner=False, max_entries=16)
def pca_of(model_key: str, _mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pca(_mu, 2)


@st.cache_resource(show_spinner=False, max_entries=32)
def lattice_density(model_key: str, dims: tuple[int, int], axis: tuple[float, ...], _mu: np.ndarray,
                    per_cell: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(fractional cell coordinates u, density of the encoded test means on the lattice's u × u grid): the
    aggregate posterior's overlay for the decoder grid. Cached per model, dims and lattice axis."""
    axis_arr = np.asarray(axis, float)
    mu = np.asarray(_mu, float)
    pts = mu[:, list(dims)] if mu.shape[1] > 1 else np.hstack([mu, np.zeros_like(mu)])
    u = np.linspace(0, len(axis_arr) - 1, per_cell * len(axis_arr))
    lat = cell_to_latent(u, axis_arr)
    return u, density_2d(pts, lat, lat)


@torch.no_grad()
def reconstruct(am, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, reconstructions from the posterior mean) of test images `idx`, both (n, C, H, W) numpy."""
    idx = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=am.data.x_test.device)
    x = am.data.x_test[idx]
    y = None if am.labels_for_model is None else am.labels_for_model[idx]
    return x.cpu().numpy(), am.model.eval().reconstruct(x, y).cpu().numpy()


@torch.no_grad()
def decode(am, z: np.ndarray, label: int | None = None) -> np.ndarray:
    """Decoded images (n, C, H, W) of latent codes z (n, d)."""
    zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.float32, device=device())
    y = None
    if am.config.n_classes:
        y = torch.full((len(zt),), int(label or 0), device=device(), dtype=torch.int64)
    return am.model.eval().decode_mean(zt, y).cpu().numpy()


# ---------------------------------------------------------------- the collapse lab's sweeps

@st.cache_resource(show_spinner="Loading the sweep…", max_entries=8)
def sweep(folder: str, mtime_ns: int):
    """(spec, finished runs) of a sweep folder, reloaded whenever its manifest changes (a run finished)."""
    return load_sweep(folder, device=device())


@st.cache_resource(show_spinner=False, max_entries=32)
def sweep_figures(folder: str, mtime_ns: int, _evals: list[dict]):
    """The R–D plane and the KL heatmap of one sweep, built once per manifest version."""
    return lab_plots.rd_plane(_evals), lab_plots.kl_heatmap(_evals)


@st.cache_resource(show_spinner=False, max_entries=128)
def kl_timeline(path: str, mtime_ns: int, _history: list[dict], free_bits: float):
    return lab_plots.kl_timeline(_history, free_bits)


@st.cache_resource(show_spinner=False, max_entries=64)
def run_pictures(path: str, mtime_ns: int, _model: VAE, _x: torch.Tensor, n: int = 8, scale: int = 1):
    """PNG bytes of (inputs over reconstructions, prior samples) of one sweep run; cached per checkpoint file,
    so a rerun sends the same bytes without decoding anything."""
    gen = torch.Generator(device=_x.device).manual_seed(0)
    with torch.no_grad():
        model = _model.eval()
        x = _x[:n]
        recon = model.reconstruct(x)  # (n, C, H, W)
        z = torch.randn(n, model.latent_dim, generator=gen, device=_x.device)  # (n, d)
        samples = model.sample_images(z, generator=gen)  # (n, C, H, W)
    pair = np.stack([x.cpu().numpy(), recon.cpu().numpy()])  # (2, n, C, H, W)
    return (pictures.png_bytes(pictures.tile(pair), scale),
            pictures.png_bytes(pictures.tile(samples.cpu().numpy()[None]), scale))


@st.cache_resource(show_spinner=False, max_entries=64)
def run_means(path: str, mtime_ns: int, _model: VAE, _x: torch.Tensor) -> np.ndarray:
    """Posterior means (N, d) of a sweep run on the test images, for the 2-D latent scatters."""
    with torch.no_grad():
        mu, _ = _model.eval().encode(_x)
    return mu.cpu().numpy()
