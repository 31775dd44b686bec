"""The latent map of a whole dataset through a VAE: what the Latent space page shows, computed here.

- `encode`: every image of a dataset — training and test — through the model: posterior means and log-variances
  and the per-image scores (−ELBO, its two terms, the reconstruction's squared error). Rows are the dataset's own
  order, training images first. The test rows use the same seeded draws as `metrics.per_sample_scores` on the
  test set alone, so a test image scores the same here as on the Anomalies page.
- `MapCache`: those encodings and each 2-D view of them, stored in the workspace per model (the checkpoint's
  SHA-256) and dataset, so reopening a model draws its map at once, in any session and after a restart.
- `project`: the 2-D views — raw z, PCA, t-SNE, UMAP — with progress, stage and time left for the slow ones.
- selections as sets of rows, counted per label; a second model's map aligned to the first by orthogonal
  Procrustes; the per-image −ELBO difference; and what the browser's map receives (`payload`: binary columns,
  colours as RGBA). Numpy in, numpy out; no Streamlit.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.numpy
import torch

from . import estimates
from .files import atomic_write
from .metrics import per_sample_scores
from .pictures import PALETTE
from .pixels import as_float
from .projection import UMAP_GRAPH_SHARE, UMAP_KNN_SHARE, pca, pca_axes, subsample, tsne, umap

SPLITS = ("all", "train", "test")
SCORES = ("neg_elbo", "recon", "kl", "sq_error")
FORMAT = 1
CACHE_CAP_ENV = "VAE_MAPS_MAX_MB"
CACHE_CAP_MB = 2048  # least recently used maps are removed past this total
Report = Callable[[float, str, float | None], None]  # (fraction, stage, seconds left or None)


# ---------------------------------------------------------------- every image, encoded

@dataclass
class Encodings:
    """Every image of a dataset through one model, training images first (rows 0 … n_train − 1), then test images."""

    mu: np.ndarray  # (N, d) posterior means
    logvar: np.ndarray  # (N, d) posterior log-variances
    neg_elbo: np.ndarray  # (N,) −ELBO, nats (one seeded posterior sample)
    recon: np.ndarray  # (N,) −log p(x|z), nats
    kl: np.ndarray  # (N,) KL(q(z|x) ‖ p(z)), nats
    sq_error: np.ndarray  # (N,) squared error of the reconstruction at z = μ
    n_train: int
    labels: np.ndarray | None = None  # (N,) int64

    @property
    def n(self) -> int:
        return len(self.mu)

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]

    def rows(self, split: str = "all") -> np.ndarray:
        """The rows of one split ("all", "train" or "test"), ascending."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        start, stop = {"all": (0, self.n), "train": (0, self.n_train), "test": (self.n_train, self.n)}[split]
        return np.arange(start, stop)

    def is_test(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows) >= self.n_train

    def scores(self, key: str) -> np.ndarray:
        return getattr(self, key)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.ascontiguousarray(getattr(self, k)) for k in ("mu", "logvar", *SCORES)}
        if self.labels is not None:
            out["labels"] = np.ascontiguousarray(self.labels, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, n_train: int) -> "Encodings":
        return cls(**{k: arrays[k] for k in ("mu", "logvar", *SCORES)}, n_train=n_train, labels=arrays.get("labels"))


def encode(model, data, *, progress: Callable[[float], None] | None = None, batch_size: int = 1000) -> Encodings:
    """Every image of `data` through `model` (`metrics.per_sample_scores`): the training set (seed 1), then the
    test set (seed 0, the draws the test-set scores use everywhere in the app). `progress` gets the fraction done."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    total = max(1, n_train + n_test)
    conditional = bool(model.config.n_classes)
    parts = []
    for start, x, y, seed in ((0, data.x_train, data.y_train, 1), (n_train, data.x_test, data.y_test, 0)):
        if not len(x):
            continue
        report = (lambda f, s=start, m=len(x): progress((s + f * m) / total)) if progress else None
        parts.append(per_sample_scores(model, x, y if conditional else None, batch_size=batch_size, seed=seed,
                                       progress=report))
    joined = {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in ("mu", "logvar", *SCORES)}
    labels = None
    if data.y_train is not None:
        labels = np.concatenate([data.y_train.cpu().numpy(), data.y_test.cpu().numpy()]).astype(np.int64)
    return Encodings(**joined, n_train=n_train, labels=labels)


# ---------------------------------------------------------------- the 2-D views

@dataclass(frozen=True)
class View:
    """One 2-D map of the encodings: its kind and, for t-SNE and UMAP, the seeded subsample of rows it covers and its
    parameters. Frozen: it names the map in the cache and on the job board."""

    kind: str  # raw | PCA | t-SNE | UMAP
    points: int = 0  # t-SNE / UMAP: at most this many rows (a seeded subsample); 0: every row
    perplexity: float = 30.0  # t-SNE
    n_neighbors: int = 15  # UMAP
    min_dist: float = 0.1  # UMAP
    seed: int = 0

    @property
    def slow(self) -> bool:
        return self.kind in ("t-SNE", "UMAP")

    @property
    def name(self) -> str:
        """The file name of this view in the cache."""
        if self.kind == "t-SNE":
            return f"tsne-{self.points}-{self.perplexity:g}-{self.seed}"
        if self.kind == "UMAP":
            return f"umap-{self.points}-{self.n_neighbors}-{self.min_dist:g}-{self.seed}"
        return self.kind.lower()

    def label(self, n: int) -> str:
        if self.kind == "t-SNE":
            return f"t-SNE of {min(n, self.points or n):,} points (perplexity {self.perplexity:g})"
        if self.kind == "UMAP":
            return (f"UMAP of {min(n, self.points or n):,} points (n_neighbors = {self.n_neighbors}, "
                    f"min_dist = {self.min_dist:g})")
        return {"raw": "raw z", "PCA": "PCA"}[self.kind]

    def rows(self, n: int) -> np.ndarray:
        return subsample(n, self.points, self.seed) if self.slow and self.points else np.arange(n)

    def seconds(self, n: int) -> float:
        """What `project` will take for n encodings (`estimates`)."""
        m = len(self.rows(n))
        if self.kind == "t-SNE":
            return estimates.tsne_seconds(m)
        if self.kind == "UMAP":
            return estimates.umap_seconds(m, self.n_neighbors)[0]
        return 0.0


def project(enc: Encodings, view: View, report: Report | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows (M,), coords (M, 2)) of one view: raw z (the first two dimensions), PCA of the posterior means, or a
    t-SNE / UMAP of a seeded subsample. `report(fraction, stage, seconds left)` follows the slow ones; it may raise
    to cancel. Their measured rates improve the next estimate (`estimates.record_map_rate`)."""
    rows = view.rows(enc.n)
    mu = enc.mu[rows]
    if view.kind == "raw":
        return rows, (mu[:, :2] if mu.shape[1] >= 2 else np.hstack([mu, np.zeros_like(mu)])).astype(np.float64)
    if view.kind == "PCA":
        return rows, pca(mu, 2)[0]
    if view.kind not in ("t-SNE", "UMAP"):
        raise ValueError(f"unknown view {view.kind!r}")
    expected = view.seconds(enc.n)
    t0 = time.monotonic()
    layout: list[tuple[float, float]] = []  # (time, fraction) when the slow part began

    def tick(fraction: float) -> None:
        now = time.monotonic()
        if not layout and fraction >= (UMAP_GRAPH_SHARE if view.kind == "UMAP" else 0.1):
            layout.append((now, fraction))  # the layout's epochs begin: from here the rate is measured
        if layout and fraction > layout[0][1] + 0.02:
            left = (now - layout[0][0]) / (fraction - layout[0][1]) * (1 - fraction)
        else:
            left = max(1.0, expected - (now - t0)) if fraction < 1 else 0.0
        if report:
            report(fraction, _stage(view, fraction), left)

    if view.kind == "t-SNE":
        coords = tsne(mu, perplexity=view.perplexity, seed=view.seed, progress=tick)
    else:
        coords = umap(mu, n_neighbors=view.n_neighbors, min_dist=view.min_dist, seed=view.seed, progress=tick)
    estimates.record_map_rate(view.kind, len(rows), view.n_neighbors, time.monotonic() - t0)
    return rows, coords


def _stage(view: View, fraction: float) -> str:
    """What a t-SNE or UMAP is doing at `fraction` of its progress."""
    if view.kind == "t-SNE":
        return "finding each point's nearest neighbours" if fraction < 0.1 else "laying out the map"
    if fraction < UMAP_KNN_SHARE:
        return f"finding each point's {view.n_neighbors} nearest neighbours"
    if fraction < UMAP_GRAPH_SHARE:
        first = not estimates.map_timings()["compiled"]
        return "building the neighbour graph" + (" and compiling UMAP's code (the first UMAP on this server, "
                                                 "~10 s)" if first else "")
    return "laying out the map"


class PCAPlane:
    """The PCA view's projection z → (u, v) = (z − mean) W and back, (u, v) → mean + (u, v) Wᵀ: places a new code
    on the map, and names the latent point under any place of the map (the plane through the mean spanned by the
    first two principal axes, W's orthonormal columns), which the decoder then draws."""

    def __init__(self, mu: np.ndarray):
        self.mean, axes, self.ratio = pca_axes(mu, 2)
        self.w = axes.T  # (D, 2)

    def to_map(self, z: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(z) - self.mean) @ self.w  # (k, 2)

    def to_latent(self, uv: np.ndarray) -> np.ndarray:
        return self.mean + np.atleast_2d(uv) @ self.w.T  # (k, D)


def covariance_outline(center: np.ndarray, w: np.ndarray | None, sigma: np.ndarray, n_sigma: float = 2.0,
                       points: int = 60) -> np.ndarray:
    """The n_sigma contour (points + 1, 2) of the diagonal Gaussian N(center, diag σ²) on a map: raw z (w None) or
    through the linear map W (D, 2), where its covariance is Wᵀ diag(σ²) W — an ellipse at any angle."""
    sigma = np.asarray(sigma, dtype=np.float64)
    cov = np.diag(sigma[:2] ** 2) if w is None else w.T @ (sigma[:, None] ** 2 * w)  # (2, 2)
    vals, vecs = np.linalg.eigh(cov)
    theta = np.linspace(0, 2 * np.pi, points + 1)
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1) * np.sqrt(np.clip(vals, 0, None)) * n_sigma
    return np.asarray(center, dtype=np.float64)[:2] + circle @ vecs.T


# ---------------------------------------------------------------- the cache in the workspace

def model_digest(path_or_bytes) -> str:
    """The identity of a model's weights for the cache: SHA-256 of its checkpoint file (or bytes)."""
    h = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray)):
        h.update(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def dataset_id(data) -> str:
    """A dataset's identity for the cache: its content hash (a user's), or its name and split sizes (built-in)."""
    return data.hash or f"{data.name}-{len(data.x_train)}-{len(data.x_test)}"


class MapCache:
    """One model's map of one dataset in the workspace: `maps/<model>-<dataset>/` holds `encodings.safetensors`
    and one file per computed view. Files are written atomically; the least recently used maps go past
    `$VAE_MAPS_MAX_MB` (2 GiB) in all."""

    def __init__(self, root: Path, model: str, data: str):
        self.root = Path(root)
        self.folder = self.root / hashlib.sha256(f"{model}\n{data}".encode()).hexdigest()[:32]
        self.key = (model, data)

    @classmethod
    def of_checkpoint(cls, root: Path, path, data) -> "MapCache":
        """The map of the model in the checkpoint file `path` over the dataset `data`."""
        return cls(root, model_digest(path), dataset_id(data))

    def _read(self, name: str) -> tuple[dict, dict] | None:
        path = self.folder / f"{name}.safetensors"
        try:
            raw = path.read_bytes()
            arrays = safetensors.numpy.load(raw)
            n = int.from_bytes(raw[:8], "little")
            meta = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["vae_core_map"])
        except Exception:  # noqa: BLE001 — absent or damaged (any error of the file or its JSON): recompute
            return None
        if meta.get("format") != FORMAT or meta.get("key") != list(self.key):
            return None
        os.utime(self.folder)
        return arrays, meta

    def _write(self, name: str, arrays: dict, meta: dict) -> None:
        meta = dict(meta, format=FORMAT, key=list(self.key))
        blob = safetensors.numpy.save(arrays, metadata={"vae_core_map": json.dumps(meta)})
        try:
            atomic_write(self.folder / f"{name}.safetensors", blob, overwrite=True)
        except OSError:
            return  # a cache: a full or read-only disk only means computing it again next time
        _evict(self.root, keep=self.folder)

    def encodings(self) -> Encodings | None:
        found = self._read("encodings")
        return None if found is None else Encodings.from_arrays(found[0], int(found[1]["n_train"]))

    def save_encodings(self, enc: Encodings) -> None:
        self._write("encodings", enc.to_arrays(), {"n_train": enc.n_train})

    def view(self, view: View) -> tuple[np.ndarray, np.ndarray] | None:
        found = self._read(view.name)
        return None if found is None else (found[0]["rows"], found[0]["coords"])

    def save_view(self, view: View, rows: np.ndarray, coords: np.ndarray) -> None:
        self._write(view.name, {"rows": np.asarray(rows, dtype=np.int64), "coords": np.asarray(coords, np.float64)},
                    {"view": view.name})


def _evict(root: Path, keep: Path) -> None:
    cap = float(os.environ.get(CACHE_CAP_ENV, CACHE_CAP_MB)) * 2**20
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in folders}
    total = sum(sizes.values())
    for p in folders:
        if total <= cap:
            break
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)
            total -= sizes[p]


# ---------------------------------------------------------------- selections, two models

def where_on_map(point_rows: np.ndarray, coords: np.ndarray, rows) -> np.ndarray:
    """The map coordinates (k, 2) of those of `rows` that are on a map of the rows `point_rows` (ascending)."""
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    pos = np.searchsorted(point_rows, rows)
    ok = (pos < len(point_rows)) & (point_rows[np.minimum(pos, len(point_rows) - 1)] == rows)
    return coords[pos[ok]]


def bits_to_rows(bits_b64: str, point_rows: np.ndarray) -> np.ndarray:
    """The rows selected on a map, from the map's bitset over its points (bit i: point i, little-endian in each
    byte), as the map's point → row array maps them."""
    raw = np.frombuffer(base64.b64decode(bits_b64 or ""), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:len(point_rows)].astype(bool)
    return np.asarray(point_rows)[np.flatnonzero(bits[:len(point_rows)])]


def rows_to_bits(rows: np.ndarray, point_rows: np.ndarray) -> str:
    """The bitset (base64) of a map's points that are among `rows`: how a selection is shown on any map."""
    return base64.b64encode(np.packbits(np.isin(point_rows, rows), bitorder="little").tobytes()).decode()


def label_counts(labels: np.ndarray | None, rows: np.ndarray, class_names) -> list[tuple[str, int]]:
    """(class name, how many of `rows` have it), most first; [] without labels."""
    if labels is None or not len(rows):
        return []
    counts = np.bincount(labels[rows], minlength=len(class_names or []))
    order = np.argsort(-counts, kind="stable")
    return [(str(class_names[k]) if class_names and k < len(class_names) else str(k), int(counts[k]))
            for k in order if counts[k]]


def procrustes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, dict]:
    """Map b (N, 2) onto a (N, 2), the same points in two maps, by the best rotation (or reflection), uniform scale
    and shift (orthogonal Procrustes, Schönemann 1966; with scale, Gower 1975): R = UVᵀ from the SVD of
    (b − b̄)ᵀ(a − ā) = UΣVᵀ, s = tr Σ / ‖b − b̄‖², b' = s b R + (ā − s b̄ R). Returns (b' (N, 2), {rotation,
    scale, shift, reflection, disparity: the residual ‖a − b'‖² over ‖a − ā‖², 0 = the same map})."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    am, bm = a.mean(0), b.mean(0)
    ac, bc = a - am, b - bm
    u, sv, vt = np.linalg.svd(bc.T @ ac)
    rotation = u @ vt  # (2, 2)
    scale = float(sv.sum() / max((bc**2).sum(), 1e-300))
    shift = am - scale * bm @ rotation  # (2,): b' = s b R + shift
    aligned = scale * b @ rotation + shift
    disparity = float(((a - aligned) ** 2).sum() / max((ac**2).sum(), 1e-300))
    return aligned, {"rotation": rotation, "scale": scale, "shift": shift,
                     "reflection": bool(np.linalg.det(rotation) < 0), "disparity": disparity}


def aligned(points, info: dict | None) -> np.ndarray:
    """Points (k, 2) of the second map moved as `procrustes` moved it (`info`), or as they are (None)."""
    points = np.asarray(points, dtype=np.float64)
    return points if info is None else info["scale"] * points @ info["rotation"] + info["shift"]


# ---------------------------------------------------------------- the images behind the rows

def dataset_images(data, rows: np.ndarray) -> np.ndarray:
    """The images (k, C, H, W) of dataset rows (training images first, then test), as the dataset holds them
    (uint8, or float32 in [0, 1]), on the CPU."""
    rows = np.asarray(rows, dtype=np.int64)
    n_train = len(data.x_train)
    out = np.empty((len(rows), *data.image_shape), dtype=np.uint8 if data.x_train.dtype == torch.uint8 else np.float32)
    for part, x, offset in ((rows < n_train, data.x_train, 0), (rows >= n_train, data.x_test, n_train)):
        if part.any():
            idx = torch.as_tensor(rows[part] - offset, device=x.device)
            out[part] = x[idx].cpu().numpy()
    return out


def dataset_labels(data, rows: np.ndarray):
    """The labels (k,) of dataset rows as a tensor on the data's device, or None without labels."""
    if data.y_train is None:
        return None
    y = torch.cat([data.y_train, data.y_test])
    return y[torch.as_tensor(np.asarray(rows, dtype=np.int64), device=y.device)]


@torch.no_grad()
def reconstructions(model, data, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, reconstructions at z = μ(x)), both (k, C, H, W) float in [0, 1], of dataset rows."""
    device = next(model.parameters()).device
    x = torch.as_tensor(as_float(dataset_images(data, rows))).to(device)  # (k, C, H, W)
    y = dataset_labels(data, rows) if model.config.n_classes else None
    return x.cpu().numpy(), model.eval().reconstruct(x, y).cpu().numpy()


def decoder_at(model, plane: "PCAPlane | None"):
    """decode(xy (k, 2)) → E[x|z] (k, C, H, W) at places of a map: raw z (`plane` None; a 1-D latent uses x alone)
    or the PCA view's plane. A conditional model's images are those of class 0."""
    d = model.config.latent_dim

    @torch.no_grad()
    def decode(xy: np.ndarray) -> np.ndarray:
        z = plane.to_latent(xy) if plane is not None else np.asarray(xy)[:, :d]
        zt = torch.as_tensor(z, dtype=torch.float32, device=next(model.parameters()).device)  # (k, d)
        y = torch.zeros(len(zt), dtype=torch.int64, device=zt.device) if model.config.n_classes else None
        return model.eval().decode_mean(zt, y).cpu().numpy()

    return decode


# ---------------------------------------------------------------- what the browser's map receives

COLOURINGS = {"label": "label", "neg_elbo": "−ELBO (nats)", "recon": "reconstruction −log p(x|z) (nats)",
              "kl": "KL(q(z|x) ‖ p(z)) (nats)", "sq_error": "reconstruction squared error",
              "delta": "−ELBO, second model − first (nats)"}


def points_payload(enc: Encodings, rows: np.ndarray, coords: np.ndarray) -> bytes:
    """A map's points for the browser: x, y, their dataset row, split (1: test) and label."""
    rows = np.asarray(rows)
    columns = {"x": coords[:, 0].astype(np.float32), "y": coords[:, 1].astype(np.float32),
               "row": rows.astype(np.int32), "split": enc.is_test(rows).astype(np.uint8)}
    if enc.labels is not None:
        columns["label"] = enc.labels[rows].astype(np.uint16)
    return payload(**columns)


def colouring(enc: Encodings, key: str, rows: np.ndarray, class_names=None,
              other: Encodings | None = None) -> tuple[bytes, dict]:
    """(the colour of each point and the value shown on hover, as the browser's columns; the legend) for one
    colouring (`COLOURINGS`): labels, a score, or the per-image −ELBO difference `other` − `enc` (the same images
    through a second model: positive where the second model finds an image harder; both maps show the same)."""
    if key == "label":
        if enc.labels is None:
            raise ValueError("this dataset has no labels")
        rgba, legend = class_colours(enc.labels[rows], class_names)
        return payload(rgba=rgba), legend
    if key == "delta":
        if other is None or other.n != enc.n:
            raise ValueError("the difference needs a second model's map of the same images")
        values = other.neg_elbo[rows].astype(np.float64) - enc.neg_elbo[rows]
    else:
        values = enc.scores(key)[rows].astype(np.float64)
    rgba, legend = colour_scale(values, diverging=key == "delta")
    return payload(rgba=rgba, value=values.astype(np.float32)), legend


VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725"]  # perceptually uniform, for scores
DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _ramp(stops: list[str], t: np.ndarray) -> np.ndarray:
    """Colours (N, 3) uint8 of values t in [0, 1] on a piecewise-linear scale through `stops`."""
    table = np.array([_rgb(c) for c in stops], dtype=np.float64)  # (S, 3)
    pos = np.clip(np.nan_to_num(t, nan=0.0), 0, 1) * (len(stops) - 1)
    lo = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - lo)[:, None]
    return np.rint(table[lo] * (1 - frac) + table[lo + 1] * frac).astype(np.uint8)


def colour_scale(values: np.ndarray, diverging: bool = False) -> tuple[np.ndarray, dict]:
    """(RGBA (N,) uint32, legend) of scores: Viridis over the 1st–99th percentile (outliers clipped, so one extreme
    image does not wash out the rest), or a diverging scale symmetric about 0 (differences)."""
    values = np.asarray(values, dtype=np.float64)
    if diverging:
        bound = float(np.percentile(np.abs(values), 99)) if len(values) else 1.0
        lo, hi = -bound, bound
    else:
        lo, hi = (np.percentile(values, [1, 99]) if len(values) else (0.0, 1.0))
    span = max(float(hi - lo), 1e-12)
    rgb = _ramp(DIVERGING if diverging else VIRIDIS, (values - lo) / span)
    return _rgba(rgb), {"kind": "scale", "min": float(lo), "max": float(hi),
                        "stops": DIVERGING if diverging else VIRIDIS}


def class_colours(labels: np.ndarray, class_names) -> tuple[np.ndarray, dict]:
    """(RGBA (N,) uint32, legend) of labels in the app's class palette."""
    k = len(class_names) if class_names else int(labels.max()) + 1 if len(labels) else 0
    table = np.array([_rgb(PALETTE[i % len(PALETTE)]) for i in range(max(1, k))], dtype=np.uint8)
    names = [str(class_names[i]) if class_names and i < len(class_names) else str(i) for i in range(k)]
    return _rgba(table[labels]), {"kind": "classes", "items": [{"name": n, "colour": PALETTE[i % len(PALETTE)]}
                                                               for i, n in enumerate(names)]}


def _rgba(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16) | np.uint32(255 << 24)  # little-endian RGBA bytes


def payload(**columns: np.ndarray) -> bytes:
    """Named 1-D columns in one binary blob the map's JavaScript reads without parsing numbers: a little-endian
    uint32 header length, a JSON header {name: [dtype, offset, length]}, then each column 8-byte aligned."""
    kinds = {np.dtype(np.float32): "f4", np.dtype(np.int32): "i4", np.dtype(np.uint32): "u4",
             np.dtype(np.uint16): "u2", np.dtype(np.uint8): "u1"}
    header, parts, offset = {}, [], 0
    for name, col in columns.items():
        col = np.ascontiguousarray(col)
        if col.dtype not in kinds:
            raise ValueError(f"column {name} has dtype {col.dtype}")
        pad = -offset % 8
        parts.append(b"\0" * pad)
        offset += pad
        header[name] = [kinds[col.dtype], offset, len(col)]
        parts.append(col.astype(col.dtype.newbyteorder("<"), copy=False).tobytes())
        offset += col.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-(len(head) + 4) % 8)
    return len(head).to_bytes(4, "little") + head + b"".join(parts)


def read_payload(blob: bytes) -> dict[str, np.ndarray]:
    """`payload`'s columns back (for tests and tools)."""
    n = int.from_bytes(blob[:4], "little")
    header = json.loads(blob[4:4 + n])
    body = blob[4 + n:]
    return {name: np.frombuffer(body, dtype=np.dtype("<" + kind), count=length, offset=offset)
            for name, (kind, offset, length) in header.items()}
