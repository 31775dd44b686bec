"""Streamlit glue shared by the app's pages — the ONLY library module that imports streamlit.

It owns the session-state keys, the cached loaders (checkpoints keyed by path and modification time,
datasets by name), the cached per-model computations (keyed by a model key that changes whenever the
weights can change), the background jobs with progress bars, the sidebar and the error guard. Every page
can run on its own: without the shell's sidebar, `active()` falls back to the default shipped model.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

from . import checkpoint as ckpt_io
from . import pictures
from . import projection as P
from .config import ConfigError
from .data import BUILTIN, DataError, Dataset, available_builtin, load_array_file, load_dataset, split_arrays
from .decoding import overview
from .device import pick_device
from .metrics import iwae_nll, per_sample_scores
from .model import VAE

# ---------------------------------------------------------------- session-state keys
SELECT_KEY = "vae_model_select"  # the sidebar's selectbox: the active model id
PENDING_KEY = "vae_pending_active"  # a model id to activate on the next run (set after training/upload)
SESSION_MODELS = "vae_session_models"  # {model id: SessionModel}: trained or uploaded in this browser session
UPLOAD_KEY = "vae_model_upload"
TRAIN_RUN = "vae_train_run"  # the Train page's current/last run
STOP_FLAG = "vae_stop_requested"
HELD_OUT = "vae_held_out_results"  # {(model key, class, epochs…): result}

MAX_PARAMETERS = 100_000_000  # weights of a model trained from the browser (400 MB, ×4 with gradients and Adam)

DATASET_LABELS = {"digits": "digits (8×8, offline)", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass
class SessionModel:
    label: str
    ckpt: ckpt_io.Checkpoint
    data: Dataset | None = None  # kept for models trained on an uploaded file
    source: str = "trained"
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class ActiveModel:
    id: str  # what the selectbox holds
    key: str  # changes whenever the weights may change: keys every per-model cache
    label: str
    source: str  # shipped | trained | uploaded
    ckpt: ckpt_io.Checkpoint
    data: Dataset | None
    data_error: str | None

    @property
    def model(self):
        return self.ckpt.model

    @property
    def config(self):
        return self.ckpt.config

    @property
    def dataset_name(self) -> str:
        return str(self.ckpt.dataset.get("name", "unknown"))

    @property
    def file_stem(self) -> str:
        """The dataset name made safe for a download's file name."""
        try:
            return ckpt_io.safe_name(self.dataset_name.replace("upload:", ""))
        except ckpt_io.CheckpointError:
            return "vae"

    @property
    def labels_for_model(self):
        """Labels to pass to the model (only a conditional VAE takes them)."""
        if self.config.n_classes and self.data is not None:
            return self.data.y_test
        return None


# ---------------------------------------------------------------- errors

_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>$&~]|:(?=//))")  # tags, links, emphasis, code, formulas, URLs
_MARKDOWN_BLOCK = re.compile(r"^(\s*)([#>+\-]|\d+[.)])")  # a heading, quote or list marker at the start


def plain(text) -> str:
    """User-controlled text (file names, labels, dataset names from a checkpoint's metadata, messages that
    quote them) made safe to put inside st.markdown / st.error / st.caption: the Markdown, HTML and
    Streamlit-directive characters (and the colon of a URL's "://") are backslash-escaped, so the text shows
    literally and is never parsed as a tag, link, image, emphasis, colour directive or formula. Newlines become
    spaces."""
    text = _MARKDOWN_INLINE.sub(r"\\\1", " ".join(str(text).split()))
    return _MARKDOWN_BLOCK.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


@contextlib.contextmanager
def guard(what: str):
    """Turn any error inside the block into an st.error that says what failed and what to do. Streamlit's
    own control flow (rerun/stop) derives from BaseException and passes through."""
    try:
        yield
    except (DataError, ckpt_io.CheckpointError, ConfigError) as err:
        st.error(f"Could not {what}: {plain(err)}")
    except ValueError as err:
        st.error(f"Could not {what}: {plain(err)}. Change the settings above and try again.")
    except MemoryError:
        st.error(f"Could not {what}: out of memory. Use fewer points, a smaller grid or a smaller model.")
    except Exception as err:  # noqa: BLE001 — the page must never show a traceback
        st.error(f"Could not {what} ({type(err).__name__}: {plain(err)}). Reload the page; if it happens again, "
                 "pick another model in the sidebar or retrain it.")


# ---------------------------------------------------------------- cached resources

@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    try:
        return pick_device(os.environ.get("VAE_DEVICE", "auto"))
    except ValueError:
        return torch.device("cpu")


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_checkpoint_file(path: str, mtime_ns: int) -> ckpt_io.Checkpoint:
    """A checkpoint file, cached by path and modification time (a re-saved file is reloaded)."""
    return ckpt_io.load(path, device=device())


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def get_dataset(name: str, download: bool = False) -> Dataset:
    """A built-in dataset on the app's device. Never downloads unless asked; failures are not cached."""
    return load_dataset(name, device(), download=download, timeout=30)


@st.cache_resource(show_spinner=False, ttl=30)
def builtin_available() -> dict[str, bool]:
    return available_builtin()


def parameter_count(cfg) -> int:
    """The number of weights of VAE(cfg), counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(cfg).parameters())


def dataset_from_upload(raw: bytes, filename: str, device_=None) -> Dataset:
    """An uploaded .npz/.npy/.csv as a Dataset with a fixed 80/20 split. Raises DataError."""
    arrays = load_array_file(raw, filename)
    if len(arrays.x) < 10:
        raise DataError(f"{filename} holds {len(arrays.x)} images; at least 10 are needed to train and test")
    names = None
    if arrays.y is not None:
        names = [str(i) for i in range(int(arrays.y.max()) + 1)]
    return split_arrays(f"upload:{Path(filename).name}", arrays.x, arrays.y, device=device_ or device(),
                        class_names=names)


# ---------------------------------------------------------------- the model registry

def checkpoint_files() -> list[Path]:
    folder = ckpt_io.CHECKPOINT_DIR
    return sorted(p for p in folder.glob(f"*{ckpt_io.SUFFIX}") if p.is_file() and not p.name.startswith("."))


def session_models() -> dict[str, SessionModel]:
    return st.session_state.setdefault(SESSION_MODELS, {})


def model_options() -> dict[str, str]:
    """{model id: label} for the selector: files in checkpoints/, then this session's models."""
    options = {f"file:{p.name}": f"file · {p.stem}" for p in checkpoint_files()}
    for mid, entry in session_models().items():
        options[mid] = ("this session · " if entry.source == "trained" else "uploaded · ") + entry.label
    return options


def default_model_id() -> str | None:
    """Fashion-MNIST's shipped model when its data is found locally, else digits, else any file."""
    files = {p.name for p in checkpoint_files()}
    if "fashion-mnist-2d.safetensors" in files and builtin_available().get("fashion-mnist"):
        return "file:fashion-mnist-2d.safetensors"
    if "digits-2d.safetensors" in files:
        return "file:digits-2d.safetensors"
    options = model_options()
    return next(iter(options), None)


def register_session_model(entry: SessionModel, activate: bool = True) -> str:
    mid = f"{entry.source}:{entry.key}"
    session_models()[mid] = entry
    if activate:
        st.session_state[PENDING_KEY] = mid
    return mid


def data_for(ckpt: ckpt_io.Checkpoint, attached: Dataset | None) -> tuple[Dataset | None, str | None]:
    """The dataset a model was trained on, or why it is not available (never downloads)."""
    name = str(ckpt.dataset.get("name", ""))
    data, error = attached, None
    if data is None:
        if name in BUILTIN:
            try:
                data = get_dataset(name)
            except DataError as err:
                return None, str(err)
        elif name.startswith("upload:"):
            return None, (f"this model was trained on an uploaded file ({name[7:]}), which is not in this session. "
                          "Upload it on the Train page and train there, or pick another model.")
        else:
            return None, f"this model's dataset {name!r} is not a built-in dataset; pick another model."
    if tuple(data.image_shape) != tuple(ckpt.config.image_shape):
        return None, (f"the dataset's images are {data.image_shape} but the model expects "
                      f"{tuple(ckpt.config.image_shape)}")
    if ckpt.config.n_classes and data.y_test is None:
        return None, "this conditional model needs labels, and its dataset has none"
    return data, error


def active() -> ActiveModel | None:
    """The model chosen in the sidebar (or the default one when a page runs alone)."""
    options = model_options()
    mid = st.session_state.get(PENDING_KEY) or st.session_state.get(SELECT_KEY)
    if mid not in options:
        mid = default_model_id()
    if mid is None:
        return None
    if mid.startswith("file:"):
        path = ckpt_io.CHECKPOINT_DIR / mid[5:]
        mtime = path.stat().st_mtime_ns
        ckpt = load_checkpoint_file(str(path), mtime)
        data, error = data_for(ckpt, None)
        return ActiveModel(mid, f"{mid}:{mtime}", options[mid], "shipped", ckpt, data, error)
    entry = session_models()[mid]
    data, error = data_for(entry.ckpt, entry.data)
    return ActiveModel(mid, entry.key, entry.label, entry.source, entry.ckpt, data, error)


def require_model(need_data: bool = True) -> ActiveModel:
    """The active model, or st.error + stop when there is none (or its data is missing)."""
    try:
        am = active()
    except ckpt_io.CheckpointError as err:
        st.error(f"The selected model cannot be loaded: {plain(err)}. Pick another one in the sidebar.")
        st.stop()
    if am is None:
        st.error("No model yet: train one on the **Train** page or upload a .safetensors file in the sidebar.")
        st.stop()
    if need_data and am.data is None:
        st.error(f"The test images for **{plain(am.label)}** are not available: {plain(am.data_error)}")
        st.stop()
    return am


# ---------------------------------------------------------------- cached per-model computations

@st.cache_resource(show_spinner="Encoding the test set…", max_entries=8)
def test_scores(model_key: str, _am: ActiveModel) -> dict[str, np.ndarray]:
    """Per test image: posterior mean/log-variance, −ELBO, reconstruction term, KL, squared error."""
    return per_sample_scores(_am.model, _am.data.x_test, _am.labels_for_model)


@st.cache_resource(show_spinner="Drawing the overview…", max_entries=8)
def overview_png(model_key: str, _am: ActiveModel) -> bytes:
    """The overview picture of the active model (`decoding.overview`) as PNG bytes; cached per model."""
    mu = test_scores(model_key, _am)["mu"]
    labels = None if _am.data.y_test is None else _am.data.y_test.cpu().numpy()
    return pictures.png_bytes(overview(_am.model, mu, labels, _am.data.class_names))


@st.cache_resource(show_spinner=False, max_entries=8)
def checkpoint_bytes(model_key: str, _ckpt: ckpt_io.Checkpoint) -> bytes:
    return ckpt_io.to_bytes(_ckpt)


@st.cache_resource(show_spinner=False, max_entries=16)
def pca_of(model_key: str, _mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return P.pca(_mu, 2)


@st.cache_resource(show_spinner=False, max_entries=32)
def lattice_density(model_key: str, dims: tuple[int, int], axis: tuple[float, ...], _mu: np.ndarray,
                    per_cell: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(fractional cell coordinates u, density of the encoded test means on the lattice's u × u grid): the
    aggregate posterior's overlay for the decoder grid. Cached per model, dims and lattice axis."""
    axis_arr = np.asarray(axis, float)
    mu = np.asarray(_mu, float)
    pts = mu[:, list(dims)] if mu.shape[1] > 1 else np.hstack([mu, np.zeros_like(mu)])
    u = np.linspace(0, len(axis_arr) - 1, per_cell * len(axis_arr))
    lat = P.cell_to_latent(u, axis_arr)
    return u, P.density_2d(pts, lat, lat)


@torch.no_grad()
def reconstruct(am: ActiveModel, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, reconstructions from the posterior mean) of test images `idx`, both (n, C, H, W) numpy."""
    idx = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=am.data.x_test.device)
    x = am.data.x_test[idx]
    y = None if am.labels_for_model is None else am.labels_for_model[idx]
    return x.cpu().numpy(), am.model.eval().reconstruct(x, y).cpu().numpy()


@torch.no_grad()
def decode(am: ActiveModel, z: np.ndarray, label: int | None = None) -> np.ndarray:
    """Decoded images (n, C, H, W) of latent codes z (n, d)."""
    zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.float32, device=device())
    y = None
    if am.config.n_classes:
        y = torch.full((len(zt),), int(label or 0), device=device(), dtype=torch.int64)
    return am.model.eval().decode_mean(zt, y).cpu().numpy()


# ---------------------------------------------------------------- background jobs with a progress bar

class Job:
    def __init__(self):
        self.fraction = 0.0
        self.started = time.monotonic()
        self.future: Future | None = None


@st.cache_resource(show_spinner=False)
def _jobs() -> tuple[ThreadPoolExecutor, dict, threading.Lock]:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae-job"), {}, threading.Lock()


def run_job(key: tuple, fn: Callable[[Job], Any], label: str, expected_seconds: float | None = None) -> Any:
    """Run `fn(job)` once per `key` in a worker thread and show a progress bar until it is done. A rerun
    (e.g. the user moved a widget) re-attaches to the running job instead of starting it again; the result
    stays cached for the process. `fn` may set `job.fraction`; else the bar follows `expected_seconds`."""
    pool, jobs, lock = _jobs()
    with lock:
        job = jobs.get(key)
        if job is None or (job.future.done() and job.future.exception() is not None):
            job = Job()
            job.future = pool.submit(fn, job)
            jobs[key] = job
    if not job.future.done():
        bar = st.progress(0.0, text=label)
        while not job.future.done():
            elapsed = time.monotonic() - job.started
            frac = job.fraction
            if frac <= 0 and expected_seconds:
                frac = min(0.95, elapsed / expected_seconds)
            bar.progress(min(1.0, frac), text=f"{label} ({elapsed:.0f} s)")
            time.sleep(0.2)
        bar.empty()
    return job.future.result()


def tsne_of(model_key: str, mu: np.ndarray, max_points: int, perplexity: float, seed: int = 0):
    """(row ids, 2-D t-SNE coordinates) of at most `max_points` seeded rows of `mu`; cached."""
    ids = P.subsample(len(mu), max_points, seed)
    coords = run_job(("tsne", model_key, max_points, perplexity, seed),
                     lambda job: P.tsne(mu[ids], perplexity=perplexity, seed=seed,
                                        progress=lambda f: setattr(job, "fraction", f)),
                     f"t-SNE of {len(ids):,} points")
    return ids, coords


def iwae_of(model_key: str, am: ActiveModel, k: int) -> np.ndarray:
    def work(job: Job):
        def progress(f):
            job.fraction = f
        return iwae_nll(am.model, am.data.x_test, am.labels_for_model, k=k, batch_size=100, progress=progress)
    return run_job(("iwae", model_key, k), work, f"IWAE NLL with k = {k} on {len(am.data.x_test):,} test images")


# ---------------------------------------------------------------- the sidebar

def _fmt(v) -> str:
    try:
        return f"{float(v):.2f}"
    except (TypeError, ValueError):
        return "—"


def file_upload(container, label: str, key: str, **kwargs):
    """`container.file_uploader` without `type=`: with it, Streamlit re-checks the extension on the server and,
    for a file that got past the browser's filter (a crafted request; AppTest), raises from inside its widget
    machinery before any of our code runs — a traceback instead of a message. The label names the accepted
    types; the library checks every file's name and content and says what is wrong."""
    return container.file_uploader(label, key=key, **kwargs)


def _handle_upload() -> None:
    file = st.session_state.get(UPLOAD_KEY)
    if file is None:
        return
    if Path(file.name).suffix.lower() != ckpt_io.SUFFIX:
        st.session_state["vae_upload_error"] = (f"{file.name} cannot be used: only {ckpt_io.SUFFIX} checkpoints are "
                                                "read (never pickles such as .pt, .pth or .ckpt)")
        return
    blob = file.getvalue()
    digest = hashlib.sha256(blob).hexdigest()[:16]
    mid = f"uploaded:{digest}"
    if mid in session_models():
        return
    try:
        ckpt = ckpt_io.from_bytes(blob, file.name, device=device())
    except ckpt_io.CheckpointError as err:
        st.session_state["vae_upload_error"] = f"{file.name} cannot be used: {err}"
        return
    st.session_state.pop("vae_upload_error", None)
    entry = SessionModel(label=Path(file.name).stem, ckpt=ckpt, source="uploaded", key=f"up-{digest}")
    session_models()[mid] = entry
    st.session_state[SELECT_KEY] = mid  # the upload callback runs before the selectbox is drawn


def sidebar() -> ActiveModel | None:
    """The shell's sidebar: model selector, upload, the active model's facts, device, download."""
    pending = st.session_state.pop(PENDING_KEY, None)
    options = model_options()
    if pending in options:
        st.session_state[SELECT_KEY] = pending
    if st.session_state.get(SELECT_KEY) not in options:
        st.session_state[SELECT_KEY] = default_model_id()
    sb = st.sidebar
    sb.markdown("### Active model")
    if options:
        sb.selectbox("Model", list(options), format_func=lambda m: options.get(m, m), key=SELECT_KEY,
                     help="file: in checkpoints/ (shipped or saved) · this session: trained here · uploaded: from your computer.")
    file_upload(sb, "Upload a model (.safetensors)", UPLOAD_KEY, on_change=_handle_upload,
                help="A checkpoint saved by this app or `python -m vae_core train`. Only weights and JSON are "
                     "read (no pickle).")
    if st.session_state.get("vae_upload_error"):
        sb.error(plain(st.session_state["vae_upload_error"]) + " Upload a .safetensors file written by this app.")
    try:
        am = active()
    except ckpt_io.CheckpointError as err:
        sb.error(f"This model cannot be loaded: {plain(err)}. Pick another one.")
        return None
    if am is None:
        sb.info("No model yet: train one on the Train page or upload one.")
        sb.caption(f"Device: `{device()}`")
        return None
    cfg = am.config
    lines = [f"**Dataset:** {plain(am.dataset_name)}",
             f"**Latent size:** {cfg.latent_dim} · {cfg.architecture.upper()} · {cfg.likelihood}"
             + (f" · CVAE ({cfg.n_classes} classes)" if cfg.n_classes else "")]
    sb.markdown("  \n".join(lines))
    if am.ckpt.history:
        last = am.ckpt.history[-1]
        sb.markdown(f"**Test set after epoch {last.get('epoch', '?')}** (nats per image)\n\n"
                    f"| −ELBO | reconstruction | KL |\n|---:|---:|---:|\n"
                    f"| {_fmt(last.get('test_elbo'))} | {_fmt(last.get('test_recon'))} | {_fmt(last.get('test_kl'))} |")
        if "active_units" in last:
            sb.caption(f"Active latent units: {last['active_units']} of {cfg.latent_dim}")
    else:
        sb.caption("No training history recorded.")
    if am.data is None:
        sb.warning(f"Test images unavailable: {plain(am.data_error)}")
    sb.caption(f"Device: `{device()}`")
    try:
        blob = checkpoint_bytes(am.key, am.ckpt)
        name = ckpt_io.safe_name(am.label.split(" ", 1)[-1] if am.source != "shipped" else am.id[5:])
        sb.download_button("Download this model", blob, file_name=f"{name}{ckpt_io.SUFFIX}", icon=":material/download:",
                           mime="application/octet-stream", on_click="ignore", key="vae_download_model")
    except ckpt_io.CheckpointError as err:
        sb.caption(f"Download unavailable: {plain(err)}")
    return am


def page_header(title: str, caption: str, formula: str | None = None) -> None:
    st.title(title)
    st.caption(caption)
    if formula:
        st.latex(formula)


def image(picture, caption: str | None = None, **kwargs):
    """st.image as lossless PNG (JPEG smears small pixel images)."""
    return st.image(picture, caption=caption, output_format="PNG", **kwargs)
