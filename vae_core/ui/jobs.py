"""Observing background work from a page. Work never runs in a page's script: training runs go to the run
service (`runs.default_service()`), slow evaluations (t-SNE, IWAE) to a job board with its own small pool.
A page shows a job through `follow`: finished → its result; still going → a progress bar with the elapsed time,
the time left and a Cancel button, redrawn every second by a fragment that reruns the page once the job ends.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import streamlit as st

from .. import latent_map, pictures, plots, ppca, store
from ..anomaly import score_new_data
from ..complexity import COMPRESSOR
from ..executors import LocalExecutor
from ..jobs import CANCELLED, FAILED, QUEUED, Cancelled, Job, JobBoard, format_duration, progress_text
from ..metrics import iwae_nll
from ..recent import Recent
from ..runs import Run, RunService, default_service
from .text import plain

POLL_SECONDS = 1.0


def service(warm: bool = False) -> RunService:
    """The server's run service. `warm`: a page that starts runs also starts the worker processes now, in the
    background, so that its first run does not wait for them — but the app's first page, which starts none,
    does not pay for them (two workers importing torch would halve the CPU it has)."""
    svc = default_service()
    if warm:
        svc.executor.warm()
    return svc


@st.cache_resource(show_spinner=False)
def board() -> JobBoard:
    """Keyed evaluation jobs (t-SNE maps, IWAE scores) for the whole server, one at a time, the 32 most
    recently used results kept."""
    return JobBoard(LocalExecutor(1, name="vae-eval"), keep=32)


def _bar(job: Job, label: str) -> None:
    if job.status == QUEUED:
        st.progress(0.0, text=f"{plain(label)} — {progress_text(job)}")
    else:
        detail = f" · {plain(job.message)}" if job.message else ""
        st.progress(job.fraction, text=f"{plain(label)}{detail} — {progress_text(job)}")


@st.fragment(run_every=POLL_SECONDS)
def _watch(job: Job, label: str, cancel_label: str) -> None:
    if job.done:
        st.rerun()
    c1, c2 = st.columns([6, 1], vertical_alignment="bottom")
    with c1:
        _bar(job, label)
    c2.button(cancel_label, key=f"cancel_{job.id}", on_click=job.cancel, icon=":material/close:")


def follow(job: Job, label: str, cancel_label: str = "Cancel"):
    """The job's result once it is done; until then a live progress bar with a Cancel button, and None.
    A failed job shows its error and a cancelled one says so (None); asking again starts it afresh."""
    if job.status == FAILED:
        st.error(f"{plain(label)} failed: {plain(job.error)}")
        return None
    if job.status == CANCELLED:
        st.info(f"{plain(label)} was cancelled.")
        return None
    if job.done:
        return job.result
    _watch(job, label, cancel_label)
    return None


AUTOSTART_S = 3.0  # work estimated shorter than this starts without asking


def follow_or_offer(started: Job | None, estimate: Callable[[], float], start: Callable[[float], Job], label: str,
                    button: str, key: str):
    """The usual life of a slow evaluation on a page: follow the job already `started` for this input (its result,
    or its live progress); else measure `estimate()` seconds and, when that is short, `start(seconds)` it at once,
    or show the estimate and a button that starts it. Returns the result, or None while there is none."""
    result = follow(started, label) if started is not None else None
    if started is not None and started.status not in (FAILED, CANCELLED):
        return result
    seconds = estimate()
    if started is None and seconds < AUTOSTART_S:
        return follow(start(seconds), label)
    st.caption(f"{plain(label)}: about **{format_duration(seconds)}** on this machine (timed on a few images); it runs on "
               "the server, with a Cancel button.")
    if st.button(f"{button} (about {format_duration(seconds)})", key=key, icon=":material/play_arrow:",
                 type="primary"):
        start(seconds)
        st.rerun()  # redraw without the button: the page now follows the job
    return None


def iwae_job(model_key: str, am, k: int, expected_seconds: float | None = None) -> Job:
    """Per-image IWAE NLL of the active model's test set with k importance samples, as a job."""
    def work(job: Job):
        return iwae_nll(am.model, am.data.x_test, am.labels_for_model, k=k, batch_size=100, progress=job.report)

    return board().submit(("iwae", model_key, k), work, f"IWAE NLL with k = {k} on {len(am.data.x_test):,} test images",
                          expected_seconds=expected_seconds)


def iwae_started(model_key: str, k: int) -> Job | None:
    """The IWAE job for this model and k if one was asked for (running or kept), else None."""
    return board().get(("iwae", model_key, k))


# ---------------------------------------------------------------- a training run, live

def expected_run_seconds(svc: RunService, estimates: list) -> tuple[float, str]:
    """What runs with these probe estimates (`estimates.Estimate`) will take on this server, and the words for
    it: their work (each as the runs that finished here took against their probes), and, when the workers are
    busy, when they would start and end if submitted now."""
    seconds = [svc.expected_seconds(e) for e in estimates]
    work = sum(seconds)
    learnt = svc.calibration.runs
    text = (f"about **{format_duration(work)}**" + (" of training" if len(seconds) > 1 else "")
            + (f" (scaled by what the last {learnt} run(s) here took against their probes)" if learnt else ""))
    end, idle = svc.expected_finish(seconds), svc.expected_finish(seconds, now=False)
    running, queued = svc.load()
    if end is not None and end > idle * 1.05 + 1:  # later than on idle workers: they wait their turn
        text += (f". The server trains {svc.executor.max_workers} model(s) at a time and is busy ({running} "
                 f"training, {queued} waiting): submitted now, {'they' if len(seconds) > 1 else 'it'} would end in "
                 f"about **{format_duration(end)}**")
    elif len(seconds) > 1 and svc.executor.max_workers > 1:
        text += f", {svc.executor.max_workers} at a time: all done in about **{format_duration(idle)}**"
    return work, text


def _run_status(run: Run, svc: RunService) -> None:
    if run.status == QUEUED:
        place = svc.position(run)
        running, queued = svc.load()
        where = "starting" if place is None else "next in line" if place == 1 else f"number {place} in line"
        start = svc.expected_start(run)
        when = "when a worker is free" if start is None else f"in about {format_duration(start)}"
        st.progress(0.0, text=f"queued: {where} ({running} training, {queued} waiting on this server) — it starts "
                              f"{when}")
        return
    _bar(run, "training" if run.fraction < 0.9 or not run.spec.lab_metrics else "evaluating")


_DRAWN = Recent(64)  # (run id, epochs, part) → what a run's live panel shows


def drawn(key: tuple, make: Callable[[], object]):
    """What a run's live panel shows after a number of epochs (its curves, its decoder preview), made once for every
    tab that watches it. A watching tab redraws each second, and building a Plotly figure takes ~60 ms of Python:
    twenty tabs doing it would hold the GIL the server answers with; re-sending a built one costs ~2 ms."""
    return _DRAWN.get(key, make)


def run_live(run: Run, svc: RunService, show_preview: bool = True) -> None:
    """The body of a run's panel: progress while it goes, the latest curves and the decoder preview (both made once
    per epoch, `drawn`)."""
    if not run.done:
        _run_status(run, svc)
    hist, preview = run.history, run.preview  # read once: the run's thread replaces them after each epoch
    if hist:
        left, right = st.columns([3, 2])
        with left:
            per_dim = st.toggle("KL of each latent dimension", key="run_kl_per_dim",
                                help="Draw every dimension's test KL under the total: a collapsing dimension falls "
                                     "to 0 and stays there.")
            st.plotly_chart(drawn((run.id, len(hist), "curves", per_dim), lambda: plots.loss_curves(hist, per_dim)),
                            key=f"run_curves_{run.id}")
        if show_preview and preview is not None:
            scale = pictures.display_scale(preview.shape[-1], 28)
            right.image(drawn((run.id, len(hist), "preview"), lambda: pictures.png_bytes(pictures.tile(preview), scale)),
                        caption=f"decoder over z0, z1 after epoch {hist[-1]['epoch']} (prior quantiles)")


@st.fragment(run_every=POLL_SECONDS)
def watch_run(run: Run, svc: RunService, stop_label: str = "Stop (keep the last complete epoch)") -> None:
    """A live panel of `run` that redraws every second and reruns the page once the run has ended."""
    if run.done:
        st.rerun()
    st.button("Leave the queue" if run.status == QUEUED else stop_label, key=f"stop_{run.id}", on_click=svc.stop,
              args=(run,), icon=":material/stop:")
    run_live(run, svc)


@st.fragment(run_every=POLL_SECONDS)
def watch_sweep(name: str, runs: list[Run], svc: RunService) -> None:
    """A live panel of a sweep's queued runs: how many are done, the current ones, the time left for all of them
    (the running runs' own estimates, then the queue's for those still waiting, on every worker), and Stop."""
    if all(r.done for r in runs):
        st.rerun()
    done = [r for r in runs if r.done]
    current = [r for r in runs if r.status == "running"]
    left = _time_left(runs, svc)
    fraction = (len(done) + sum(r.fraction for r in current)) / len(runs)
    elapsed = sum(r.elapsed for r in runs)
    text = f"sweep {plain(name)}: {len(done)} of {len(runs)} runs done · elapsed {format_duration(elapsed)}"
    if left is not None:
        text += f" · about {format_duration(left)} left"
    c1, c2 = st.columns([5, 2], vertical_alignment="bottom")
    c1.progress(fraction, text=text)
    c2.button("Stop the sweep", key=f"stop_sweep_{name}", icon=":material/stop:", width="stretch",
              on_click=lambda: [svc.stop(r) for r in runs if not r.done])
    for run in current:
        _bar(run, f"now {run.label}")


def _time_left(runs: list[Run], svc: RunService) -> float | None:
    """Seconds until the last of `runs` ends: a running one's own estimate, a queued one's expected start plus its
    expected time (None when one is unknown)."""
    ends = [0.0]
    for run in runs:
        if run.status == QUEUED:
            start = svc.expected_start(run)
            ends.append(None if start is None or run.expected_seconds is None else start + run.expected_seconds)
        elif not run.done:
            ends.append(run.eta())
    return None if None in ends else max(ends)


# ---------------------------------------------------------------- scoring a second dataset (Anomalies page)

def new_data_job(model_key: str, am, dataset_id: str, x_new, y_new=None, test_scores: dict | None = None,
                 expected_seconds: float | None = None) -> Job:
    """`anomaly.score_new_data` of the active model's test set against the images `x_new` (labels `y_new`) as a
    job keyed by (model, dataset id), whose result is that function's dict. `test_scores` (the page's cached
    per-image scores of the test set, same seed) skips the test set's model pass."""

    n_test, n_new = len(am.data.x_test), len(x_new)
    total = (0 if test_scores is not None else n_test) + n_new + n_test + n_new  # score_new_data's progress units
    model_part = (total - n_test - n_new) / total  # the model passes come first, then the compression

    def work(job: Job):
        def report(fraction: float) -> None:
            job.report(fraction, "model pass" if fraction < model_part else f"measuring L(x) with {COMPRESSOR}")

        return score_new_data(am.model, am.data.x_test, x_new, y_test=am.data.y_test, y_new=y_new,
                              test_scores=test_scores, progress=report)

    return board().submit(("new_data", model_key, dataset_id), work,
                          f"Scoring {n_new:,} new and {n_test:,} test images", expected_seconds=expected_seconds)


def new_data_started(model_key: str, dataset_id: str) -> Job | None:
    """The scoring job of this model and second dataset if one was asked for (running or kept), else None."""
    return board().get(("new_data", model_key, dataset_id))


# ---------------------------------------------------------------- the latent map (Latent space page)

def encode_job(am, cache_folder: latent_map.MapCache, expected_seconds: float | None = None) -> Job:
    """Every image of the active model's dataset encoded (`latent_map.encode`), stored in the workspace's map cache
    as it finishes: a job keyed by the model, so every visitor of the same model shares it."""
    def work(job: Job):
        enc = latent_map.encode(am.model, am.data, progress=job.report)
        cache_folder.save_encodings(enc)
        return enc

    n = len(am.data.x_train) + len(am.data.x_test)
    return board().submit(("encode", am.key), work, f"Encoding all {n:,} images of {am.dataset_name}",
                          expected_seconds=expected_seconds)


def encode_started(am) -> Job | None:
    """The encoding job of this model if one was asked for and did not fail or get cancelled, else None."""
    job = board().get(("encode", am.key))
    return None if job is None or job.status in (FAILED, CANCELLED) else job


def view_job(am, enc: latent_map.Encodings, view: latent_map.View, cache_folder: latent_map.MapCache) -> Job:
    """A t-SNE or UMAP view of the encodings (`latent_map.project`) as a job keyed by the model and the view's
    settings (running or done, asking again gives the same job), stored in the map cache when it ends. Its
    progress names its stage and gives the time left from the layout's measured rate."""
    def work(job: Job):
        def report(fraction: float, stage: str, left: float | None) -> None:
            job.update(fraction, stage, left)
            if job.cancel_requested:
                raise Cancelled()

        rows, coords = latent_map.project(enc, view, report)
        cache_folder.save_view(view, rows, coords)
        return rows, coords

    return board().submit(("view", am.key, view), work, view.label(enc.n), expected_seconds=view.seconds(enc.n))


def view_started(am, view: latent_map.View) -> Job | None:
    """The job of this view of this model if one was asked for (running or kept), else None."""
    return board().get(("view", am.key, view))


def register_job(blob: bytes, name: str, image_size: int | None, owner: str) -> Job:
    """An uploaded file stored in the workspace (`store.Workspace.register`: a .zip of images is decoded in
    parallel, with progress and a Cancel that leaves nothing behind) for `owner`, as a job keyed by its
    content, the size asked for and the owner; its result is the stored dataset's record."""
    ws = store.Workspace()

    def work(job: Job):
        return ws.register(blob, name, image_size=image_size, progress=lambda f, message: job.report(f, message),
                           owner=owner)

    key = ("register", str(ws.root), hashlib.sha256(blob).hexdigest(), image_size, owner)
    return board().submit(key, work, f"Storing {name}")


def _zip_key(am, rows: np.ndarray) -> tuple:
    return "zip", am.key, hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def zip_job(am, rows: np.ndarray) -> Job:
    """The selected images as PNG files in a .zip (`export.images_zip`), as a job keyed by the selection."""
    def work(job: Job):
        from ..export import images_zip  # (pandas is imported on first use: keeps the app's start fast)

        return images_zip(am.data, rows, progress=job.report)

    return board().submit(_zip_key(am, rows), work, f"Zipping {len(rows):,} images")


def zip_started(am, rows: np.ndarray) -> Job | None:
    return board().get(_zip_key(am, rows))


def ppca_job(data, sigma2s: tuple[float, ...], latent_dim: int) -> Job:
    """`ppca.ppca_check` on `data`'s training set (a built-in dataset), one σ² after another, as a job keyed by
    its settings, so every visitor shares one."""
    def work(job: Job):
        rows = []
        for i, sigma2 in enumerate(sigma2s):
            rows += ppca.ppca_check(data, [sigma2], latent_dim)
            job.report((i + 1) / len(sigma2s))
        return rows

    return board().submit(("ppca", data.name, len(data.x_train), sigma2s, latent_dim), work,
                          f"exact fits of the linear VAE at {len(sigma2s)} noise variances")
