"""Everything the pages compute more than once, cached for the server process and bounded: checkpoints (by path
and modification time), datasets (the library's process-wide cache, shared with the runs), and per-model
results keyed by a model key that changes whenever the weights can (encodings, pictures, projections,
estimates), and the collapse lab's sweeps and their figures (keyed by the manifest's modification time)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import streamlit as st
import torch

from .. import checkpoint as ckpt_io
from .. import demo, lab_plots, latent_map, pictures, ppca, rd_plane, replay, replay_plots, store
from ..data import DataError, Dataset
from ..locations import available_builtin
from ..decoding import cell_to_latent, decode_codes, density_2d, overview, run_picture_rows
from ..device import default_device
from ..estimates import Estimate, iwae_seconds, run_seconds, score_new_data_seconds
from ..metrics import per_sample_scores, posterior_means
from ..model import VAE
from ..projection import subsample
from ..runs import RunSpec
from ..single_image import background_level
from . import map_view
from ..sweep import SweepSpec, load_sweep, probe_estimates


@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    return default_device()


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_checkpoint_file(path: str, mtime_ns: int) -> ckpt_io.Checkpoint:
    """A checkpoint file, cached by path and modification time (a re-saved file is reloaded)."""
    return ckpt_io.load(path, device=device())


@st.cache_resource(show_spinner=False, max_entries=256)
def file_digest(path: str, mtime_ns: int) -> str:
    """SHA-256 of a checkpoint file, per version of it: its weights' identity (the map cache's key)."""
    return latent_map.model_digest(path)


@st.cache_resource(show_spinner=False, max_entries=256)
def checkpoint_header(path: str, mtime_ns: int) -> tuple[dict, tuple]:
    """(dataset record, image shape) of a checkpoint file, read from its header alone."""
    meta = ckpt_io.peek(path)
    return meta.get("dataset") or {}, tuple(meta["model_config"]["image_shape"])


def dataset(ref: store.DataRef, download: bool = False) -> Dataset:
    """The dataset `ref` points to, on the app's device (cached by the library for the whole process, so the
    pages and the runs share one copy). Never downloads unless asked; failures are not cached."""
    if store.is_loaded(ref, device()):  # (a spinner costs a page a few ms, and its rerun is often one of twenty)
        return store.load(ref, device())
    with st.spinner("Loading the dataset…"):
        return store.load(ref, device(), download=download)


@st.cache_resource(show_spinner=False, ttl=30)
def builtin_available() -> dict[str, bool]:
    return available_builtin()


@st.cache_resource(show_spinner="Timing a few training steps…", max_entries=256)
def run_estimate(spec: RunSpec) -> Estimate:
    """How long `spec` will take here, measured from a probe (`estimates.run_seconds`); cached per spec."""
    return run_seconds(spec, store.load(spec.data, device()))


@st.cache_resource(show_spinner="Timing a few training steps…", max_entries=64)
def sweep_estimates(spec: SweepSpec, image_shape: tuple) -> dict[str, Estimate]:
    """{run name: probe estimate} of a sweep's runs (`sweep.probe_estimates`); cached per sweep."""
    return probe_estimates(spec, image_shape, store.load(spec.data_ref(), device()))


@st.cache_resource(show_spinner="Timing the IWAE bound on a few images…", max_entries=64)
def iwae_estimate(model_key: str, _model: VAE, _x: torch.Tensor, _y, k: int) -> float:
    return iwae_seconds(_model, _x, _y, k)


# ---------------------------------------------------------------- the latent map of a whole dataset

_MAPS_LOCK = threading.Lock()
_ENCODINGS: OrderedDict[str, latent_map.Encodings] = OrderedDict()  # model key → every image encoded (a few)
_VIEWS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # (model key, view) → (rows, coords)


def map_cache(am) -> latent_map.MapCache:
    """The workspace's cache of this model's map of its dataset (`latent_map.MapCache`)."""
    return latent_map.MapCache(store.Workspace().maps_dir, am.digest, latent_map.dataset_id(am.data))


def _remember(table: OrderedDict, key, value, limit: int):
    with _MAPS_LOCK:
        table[key] = value
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)
    return value


def encodings(am) -> latent_map.Encodings | None:
    """Every image of the model's dataset encoded: from this process's memory, else the workspace's cache, else
    None (then `jobs.encode_job` makes them)."""
    with _MAPS_LOCK:
        if am.key in _ENCODINGS:
            _ENCODINGS.move_to_end(am.key)
            return _ENCODINGS[am.key]
    enc = map_cache(am).encodings()
    return None if enc is None else _remember(_ENCODINGS, am.key, enc, 4)


def keep_encodings(am, enc: latent_map.Encodings) -> latent_map.Encodings:
    return _remember(_ENCODINGS, am.key, enc, 4)


def view_coords(am, enc: latent_map.Encodings, view: latent_map.View) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, coords) of one 2-D view: raw and PCA are made here at once; t-SNE and UMAP come from memory or the
    workspace (else None: they are jobs, `jobs.view_job`)."""
    key = (am.key, view)
    with _MAPS_LOCK:
        if key in _VIEWS:
            _VIEWS.move_to_end(key)
            return _VIEWS[key]
    found = map_cache(am).view(view) if view.slow else latent_map.project(enc, view)
    return None if found is None else _remember(_VIEWS, key, found, 16)


def keep_view(am, view: latent_map.View, found: tuple[np.ndarray, np.ndarray]):
    return _remember(_VIEWS, (am.key, view), found, 16)


@st.cache_resource(show_spinner=False, max_entries=32)
def _colouring(ident: tuple, colour_by: str, class_names, pair_keys, _enc, _rows, _pair) -> tuple[bytes, dict]:
    if colour_by == "delta":
        first, second = _pair
        return latent_map.colouring(first, "delta", _rows, class_names, other=second)
    return latent_map.colouring(_enc, colour_by, _rows, class_names)


def map_colouring(ident: tuple, colour_by: str, enc: latent_map.Encodings, rows: np.ndarray, class_names,
                  pair: tuple | None = None) -> tuple[dict, dict]:
    """(how the browser gets a map's colours, its legend) for the map `ident` (model key, view, split) of `rows`:
    made once per map and colouring. `pair` (first model's key, second's, their encodings) for the −ELBO
    difference, which both maps show alike."""
    pair_keys = None if pair is None else pair[:2]
    payload, legend = _colouring(ident, colour_by, tuple(class_names or ()), pair_keys, enc, rows,
                                 None if pair is None else pair[2:])
    return map_view.blob(("colours", ident, colour_by, pair_keys), lambda: payload), legend


@st.cache_resource(show_spinner=False, max_entries=4)
def _sources(digest: str) -> tuple[str, ...] | None:
    arrays, _ = store.Workspace().load_arrays(digest)
    if arrays.n_test is None:  # a dataset stored before format 2: its rows are shuffled into the split here
        return None
    if arrays.names is not None:
        return arrays.names
    return None if arrays.source_index is None else tuple(f"#{i}" for i in arrays.source_index)


def sources(am) -> tuple[str, ...] | None:
    """Where each row of the model's dataset came from (training rows first): an image folder's file names, or
    positions in an array file; None for built-in data."""
    if am.data is None or am.data.hash is None:
        return None
    try:
        return _sources(am.data.hash)
    except DataError:
        return None


def map_csv(am, enc: latent_map.Encodings, rows: np.ndarray, row_sources) -> bytes:
    """The CSV of `rows` (`export.map_table`), built when the user clicks."""
    from ..export import map_table  # (pandas is imported on first use: keeps the app's start fast)

    return map_table(enc, rows, am.data.class_names, row_sources).to_csv(index=False).encode()


@st.cache_resource(show_spinner=False, max_entries=16)
def pca_plane(model_key: str, _enc: latent_map.Encodings) -> latent_map.PCAPlane:
    """The PCA view's projection of the posterior means, both ways (`latent_map.PCAPlane`)."""
    return latent_map.PCAPlane(_enc.mu)


# ---------------------------------------------------------------- per-model results

@st.cache_resource(show_spinner="Encoding the test set…", max_entries=8)
def test_scores(model_key: str, _am) -> dict[str, np.ndarray]:
    """Per test image: posterior mean/log-variance, −ELBO, reconstruction term, KL, squared error — the test rows of
    the Latent page's map when it is cached (the same seeded numbers: `latent_map.encode`), else computed."""
    enc = encodings(_am)
    if enc is not None:
        test = enc.rows("test")
        return {key: getattr(enc, key)[test] for key in ("mu", "logvar", *latent_map.SCORES)}
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


def reconstruct(am, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, reconstructions at z = μ(x)) of test images `idx`, both (n, C, H, W) in [0, 1]."""
    return latent_map.reconstructions(am.model, am.data, len(am.data.x_train) + np.asarray(idx, dtype=np.int64))


def decode(am, z: np.ndarray, label: int | None = None) -> np.ndarray:
    """The decoder's images (n, C, H, W) of latent codes z (n, d)."""
    return decode_codes(am.model, z, label)


# ---------------------------------------------------------------- the collapse lab's sweeps

@st.cache_resource(show_spinner="Loading the sweep…", max_entries=8)
def sweep(folder: str, mtime_ns: int):
    """(spec, finished runs) of a sweep folder, reloaded whenever its manifest changes (a run finished)."""
    return load_sweep(folder, device=device())


@st.cache_resource(show_spinner=False, max_entries=32)
def sweep_figures(folder: str, mtime_ns: int, _evals: list[dict], n_test: int, collapsed: float | None):
    """The R–D plane (with the collapsed-decoder line at `collapsed`, when given), the KL heatmap and the ELBO
    surgery bars (log N ceiling for `n_test` images) of one sweep, built once per manifest version."""
    return (rd_plane.rd_plane(_evals, collapsed), lab_plots.kl_heatmap(_evals),
            lab_plots.elbo_surgery_bars(_evals, n_test))


@st.cache_resource(show_spinner=False, max_entries=128)
def kl_timeline(path: str, mtime_ns: int, _history: list[dict], free_bits: float):
    return lab_plots.kl_timeline(_history, free_bits)


@st.cache_resource(show_spinner="Generating the pictures of each run…", max_entries=64)
def run_pictures(path: str, mtime_ns: int, _model: VAE, _x: torch.Tensor, _y: torch.Tensor | None = None,
                 draws: int = 3, scale: int = 1) -> dict[str, bytes]:
    """PNG bytes of one sweep run's pictures (`decoding.run_picture_rows`), cached per checkpoint file, so a rerun
    sends the same bytes without decoding anything."""
    rows = run_picture_rows(_model, _x, _y, draws)
    return {name: pictures.png_bytes(pictures.tile(r.cpu().numpy()), scale) for name, r in rows.items()}


@st.cache_resource(show_spinner=False, max_entries=64)
def run_means(path: str, mtime_ns: int, _model: VAE, _x: torch.Tensor) -> np.ndarray:
    """Posterior means (N, d) of a sweep run on the test images, for the 2-D latent scatters."""
    return posterior_means(_model, _x)


# ---------------------------------------------------------------- a second dataset to score (Anomalies page)

@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def stored_images(digest: str):
    """(images and labels, original file name) of a user's dataset in the workspace, all of it (no split),
    checked against its hash once per process."""
    return store.Workspace().load_arrays(digest)


@st.cache_resource(show_spinner="Timing the scoring on a few images…", max_entries=64)
def new_data_estimate(model_key: str, dataset_id: str, _model: VAE, _x_new, _y_new, n_test: int) -> float:
    """`estimates.score_new_data_seconds`, cached per model and dataset."""
    return score_new_data_seconds(_model, _x_new, _y_new, n_test)


# ---------------------------------------------------------------- one image from outside the test set (Latent space)

@st.cache_resource(show_spinner=False, max_entries=16)
def test_background(model_key: str, _am) -> float:
    """The test images' background grey level (median of their border pixels, `single_image.background_level`):
    below 0.5, bright objects on a dark background."""
    x = _am.data.x_test
    return background_level(x[torch.as_tensor(subsample(len(x), 2000), device=x.device)].cpu().numpy())


# ---------------------------------------------------------------- a second dataset to score: its export

@st.cache_resource(show_spinner=False, max_entries=4)
def new_data_csv(result_key: str, _result: dict) -> bytes:
    """The CSV export (`export.new_data_scores_table`) of one model's scores of one second dataset (seeded, so
    the same for the same key), built once."""
    from ..export import new_data_scores_table  # (pandas is imported on first use: keeps the app's start fast)

    return new_data_scores_table(_result).to_csv(index=False).encode()


@st.cache_resource(show_spinner=False, max_entries=16)
def replay_of(path: str, mtime_ns: int):
    """The training replay saved at `path` (None when unreadable), and its figure."""
    try:
        recorded = replay.load(path)
    except replay.ReplayError:
        return None, None
    return recorded, replay_plots.replay_figure(recorded)


@st.cache_resource(show_spinner="Drawing the GIF…", max_entries=4)
def replay_gif(path: str, mtime_ns: int) -> bytes:
    return replay_plots.replay_gif(replay.load(path))


@st.cache_resource(show_spinner=False, max_entries=4)
def covariance_eigenvalues(name: str, _x: torch.Tensor) -> np.ndarray:
    """`ppca.covariance_eigenvalues` of the training images, for the pPCA panel."""
    return ppca.covariance_eigenvalues(_x)


# ---------------------------------------------------------------- the collapse demo (app_pages/6_Collapse_demo.py)

@st.cache_resource(show_spinner="Loading the demo's runs…", max_entries=8)
def demo_pair(key: str, folder: str, mtime_ns: int):
    """The demo `key`'s two runs read from `folder` (`demo.load_pair`), reloaded when its manifest changes."""
    return demo.load_pair(demo.demo_for(key), folder)


@st.cache_resource(show_spinner=False, max_entries=512)
def demo_frame(path: str, mtime_ns: int, epoch: int, lim: float, kl_max: float, free_bits: float, font: int,
               _replay, height: int = 640) -> object:
    """One run's figure at one epoch (`demo.epoch_figure`), built once per replay file, epoch and axes: scrubbing
    back and forth re-sends built figures."""
    return demo.epoch_figure(_replay, epoch, lim, kl_max, free_bits, font=font, height=height)


@st.cache_resource(show_spinner=False, max_entries=16)
def demo_rd(folder: str, mtime_ns: int, font: int, _pair) -> object:
    """The demo's rate–distortion plane (`demo.rd_figure`)."""
    return demo.rd_figure(_pair, font=font)
