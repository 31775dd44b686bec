"""Shared pieces of the pages: the error guard, page headers, images, uploads, the sidebar with the active
model (kept in step with the address's `?model=`), and the panel that asks for a model's missing data."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import NoReturn

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from .. import checkpoint as ckpt_io
from .. import replay, store
from ..config import ConfigError
from ..data import BUILTIN, DataError, Dataset, load_array_file
from ..executors import ExecutorError
from ..jobs import DONE, FAILED
from . import cache, first_paint, jobs, state
from .jobs import service
from .text import plain, sentence

@contextlib.contextmanager
def guard(what: str):
    """Turn any error inside the block into an st.error that says what failed and what to do. Streamlit's
    own control flow (rerun/stop) derives from BaseException and passes through."""
    try:
        yield
    except (DataError, ckpt_io.CheckpointError, ConfigError, ExecutorError) as err:
        st.error(f"Could not {what}: {plain(err)}")
    except ValueError as err:
        st.error(f"Could not {what}: {plain(sentence(err))} Change the settings above and try again.")
    except MemoryError:
        st.error(f"Could not {what}: out of memory. Use fewer points, a smaller grid or a smaller model.")
    except OSError as err:  # a full or read-only disk: nothing was half-written (every write is atomic)
        st.error(f"Could not {what}: the server cannot write its files ({plain(err.strerror or err)}). Nothing was "
                 "changed; tell the server's owner (the disk may be full or read-only).")
    except Exception as err:  # noqa: BLE001 — the page must never show a traceback
        st.error(f"Could not {what} ({type(err).__name__}: {plain(err)}). Reload the page; if it happens again, "
                 "pick another model in the sidebar or retrain it.")


def image(picture, caption: str | None = None, **kwargs):
    """st.image as lossless PNG (JPEG smears small pixel images)."""
    return st.image(picture, caption=caption, output_format="PNG", **kwargs)


def page_link(container, path: str, label: str, icon: str | None = None, help: str | None = None) -> None:
    """A link to another page of the app, or its name in bold when this page runs on its own (without the app's
    navigation, e.g. `streamlit run app_pages/1_Train.py` or a test of one page). Keep `label` short (a link's
    label is one line, cut off on a phone); `help` says the rest."""
    try:
        container.page_link(path, label=label, icon=icon, help=help)
    except StreamlitPageNotFoundError:
        container.markdown(f"**{label}**")


def file_upload(container, label: str, key: str, **kwargs):
    """`container.file_uploader` without `type=`: with it, Streamlit re-checks the extension on the server and,
    for a file that got past the browser's filter (a crafted request; AppTest), raises from inside its widget
    machinery before any of our code runs — a traceback instead of a message. The label names the accepted
    types; the library checks every file's name and content and says what is wrong."""
    return container.file_uploader(label, key=key, **kwargs)


# ---------------------------------------------------------------- a dataset to train on

def dataset_options() -> dict[str, str]:
    """{choice: label}: the built-in datasets, the users' datasets stored in the workspace, an upload."""
    avail = cache.builtin_available()
    options = {}
    for name in BUILTIN:
        label = state.DATASET_LABELS[name]
        options[name] = label if avail.get(name) else f"{label} (not found locally: needs a download)"
    for d in store.Workspace().list_datasets():
        shape = "×".join(map(str, d.image_shape))
        options[f"file:{d.hash}"] = f"file · {d.file_name} ({d.n_images:,} images of {shape}, {d.short})"
    options["upload"] = "upload a file (.zip of images, .npz, .npy or .csv)…"
    return options


def _store_upload(prefix: str) -> None:
    """Store an uploaded data file in the workspace by content hash, as a job (a .zip of many images takes a
    while): the picker follows it, and selects the dataset once it is stored."""
    up = st.session_state.get(f"{prefix}_upload")
    if up is None:
        return
    size = int(st.session_state.get(f"{prefix}_image_size") or 0) or None
    st.session_state.pop(f"{prefix}_upload_error", None)
    st.session_state[f"{prefix}_register"] = (jobs.register_job(up.getvalue(), up.name, size, state.browser_id()).key,
                                              up.name)


def _stored_upload(prefix: str) -> None:
    """The upload being stored (before the dataset selector is drawn): once stored, select it; if it failed, say
    why (the upload's fault, in its words)."""
    key, name = st.session_state.get(f"{prefix}_register") or (None, None)
    job = jobs.board().get(key) if key else None
    if job is None or not job.done:
        return
    st.session_state.pop(f"{prefix}_register")
    if job.status == DONE:
        st.session_state[f"{prefix}_dataset"] = f"file:{job.result.hash}"
    elif job.status == FAILED:
        st.session_state[f"{prefix}_upload_error"] = f"{name} cannot be used: {job.error}"


def dataset_picker(prefix: str, pick_in, detail_in) -> tuple[str, store.DataRef | None, Dataset | None]:
    """The Train page's and the lab's choice of data: a built-in dataset (downloaded when allowed), one stored in
    the workspace, or a file uploaded (checked and stored there by content hash, in the background), selector in
    `pick_in`, the rest in `detail_in`. Widget keys start with `prefix`. Returns (choice, its DataRef, the loaded
    dataset); the last two are None while there is none."""
    _stored_upload(prefix)
    avail = cache.builtin_available()
    options = dataset_options()
    if st.session_state.get(f"{prefix}_dataset") not in options:
        st.session_state[f"{prefix}_dataset"] = "digits"
    choice = pick_in.selectbox("Dataset", list(options), format_func=options.get, key=f"{prefix}_dataset",
                               help="Files you upload are validated once and kept in the workspace under their "
                                    "content hash: they stay listed here, for everyone using this server, and models "
                                    "trained on them find them again in any session.")
    data, ref = None, None
    with detail_in:
        if choice == "upload":
            u1, u2 = st.columns([3, 1])
            u2.number_input("Image size for a .zip (px, 0 = most common)", 0, 256, 0, key=f"{prefix}_image_size",
                            on_change=_store_upload, args=(prefix,),
                            help="Images in a .zip are scaled so that the shorter side fits, then cropped to a square "
                                 "of this size. 0 keeps the most common size in the file, scaled down to at most 64 px.")
            file_upload(u1, "Images: a .zip of PNG/JPEG files (one subfolder per class gives the labels), .npz with "
                            "arrays x (N×H×W or N×H×W×C) and optional labels y, .npy, or .csv with one image per row "
                            "(optional label column)", f"{prefix}_upload", on_change=_store_upload, args=(prefix,))
            register = st.session_state.get(f"{prefix}_register")
            storing = jobs.board().get(register[0]) if register else None
            if storing is not None and storing.done:
                st.rerun()  # it ended during this run: the top of the page takes its result
            elif storing is not None:
                jobs.follow(storing, storing.label)
            elif st.session_state.get(f"{prefix}_upload_error"):
                st.error(plain(st.session_state[f"{prefix}_upload_error"]))
            else:
                st.info("Choose a file: it is checked, stored in the workspace and selected above (a .zip of many "
                        "images is decoded in the background, with its progress here and a Cancel button).")
            return choice, None, None
        if choice in BUILTIN:
            ref = store.DataRef(choice)
        else:
            ref = store.DataRef(store.Workspace().dataset_info(choice[5:]).file_name, choice[5:])
        download = False
        if ref.builtin and not avail.get(choice):
            download = st.checkbox(f"Allow downloading {state.DATASET_LABELS[choice]} (30 s timeout per connection)",
                                   key=f"{prefix}_download")
        if not ref.builtin or avail.get(choice) or download:
            try:
                data = cache.dataset(ref, download)
            except DataError as err:
                st.error(plain(err))
        else:
            st.info(f"{state.DATASET_LABELS[choice]} was not found on this machine. Tick the box to download it, "
                    "or pick digits.")
    return choice, ref, data


# ---------------------------------------------------------------- the active model

def stop() -> NoReturn:
    """st.stop() for the app's pages. In the app it ends only the page: the shell, which draws the sidebar after
    the page (`first_paint.run_page`), still draws it."""
    if first_paint.in_shell():
        raise first_paint.PageStopped
    st.stop()


def require_model(need_data: bool = True) -> state.ActiveModel:
    """The active model, or a message and stop() when there is none. With `need_data`, a model whose test
    images are missing gets the missing-data panel (message and uploader) instead of the page."""
    try:
        am = state.active()
    except ckpt_io.CheckpointError:
        st.info("This page needs a model, and the one selected cannot be loaded (the sidebar says why). "
                "Pick another one there.")
        stop()
    if am is None:
        st.error("No model yet: train one on the **Train** page or upload a .safetensors file in the sidebar.")
        stop()
    if need_data and am.data is None:
        missing_data_panel(am)
        stop()
    return am


def missing_data_panel(am: state.ActiveModel) -> None:
    """Why this model's test images are not here, and (for a user's file) an uploader that attaches them: the
    upload is checked against the content hash the model recorded, then stored in the workspace."""
    miss = am.missing
    st.warning(miss.message, icon=":material/image_not_supported:")
    if not miss.can_attach:
        return
    up = file_upload(st, f"Upload {plain(miss.file_name)} (.zip, .npz, .npy or .csv)", f"attach_{am.key}")
    if up is None:
        return
    _, height, width = am.config.image_shape
    try:  # a .zip is resized as for training: to the model's image size
        arrays = load_array_file(up.getvalue(), up.name, image_size=height if height == width else None)
        ws = store.Workspace()
        if miss.hash is None:
            digest = ws.put_dataset(arrays, up.name, owner=state.browser_id()).hash
        else:
            digest = ws.attach(arrays, miss.file_name, miss.hash, owner=state.browser_id()).hash
    except DataError as err:
        st.error(f"{plain(up.name)} cannot be used: {plain(err)}")
        return
    if miss.hash is None:  # a checkpoint from before the workspace: remember the match for this session
        st.session_state.setdefault(state.LEGACY_DATA_KEY, {})[am.key] = digest
    st.rerun()


# ---------------------------------------------------------------- the sidebar

def _fmt(v) -> str:
    try:
        return f"{float(v):.2f}"
    except (TypeError, ValueError):
        return "—"


UPLOAD_KEY = "vae_model_upload"
UPLOAD_ERROR_KEY = "vae_upload_error"


def _handle_upload() -> None:
    file = st.session_state.get(UPLOAD_KEY)
    if file is None:
        return
    if Path(file.name).suffix.lower() != ckpt_io.SUFFIX:
        st.session_state[UPLOAD_ERROR_KEY] = (f"{file.name} cannot be used: only {ckpt_io.SUFFIX} checkpoints are "
                                              "read (never pickles such as .pt, .pth or .ckpt).")
        return
    blob = file.getvalue()
    digest = hashlib.sha256(blob).hexdigest()[:16]
    mid = f"uploaded:{digest}"
    if mid not in state.uploaded_models():
        try:
            ckpt = ckpt_io.from_bytes(blob, file.name, device=cache.device())
        except ckpt_io.CheckpointError as err:
            st.session_state[UPLOAD_ERROR_KEY] = f"{file.name} cannot be used: {sentence(err)}"
            return
        state.uploaded_models()[mid] = state.UploadedModel(label=Path(file.name).stem, ckpt=ckpt, digest=digest)
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
    st.session_state[state.SELECT_KEY] = mid  # the upload callback runs before the selectbox is drawn


def _on_select() -> None:
    st.session_state.pop(state.URL_ERROR_KEY, None)


def sidebar() -> state.ActiveModel | None:
    """The shell's sidebar: model selector (and the address naming it), upload, the active model's facts,
    this browser's runs, device, download."""
    state.apply_url()
    pending = st.session_state.pop(state.PENDING_KEY, None)
    options = state.model_options()
    if pending in options:
        st.session_state[state.SELECT_KEY] = pending
    if st.session_state.get(state.SELECT_KEY) not in options:
        st.session_state[state.SELECT_KEY] = state.default_model_id()
    sb = st.sidebar
    sb.markdown("### Active model")
    if st.session_state.get(state.URL_ERROR_KEY):
        sb.warning(plain(st.session_state[state.URL_ERROR_KEY]))
    if options:
        sb.selectbox("Model", list(options), format_func=lambda m: options.get(m, m), key=state.SELECT_KEY,
                     on_change=_on_select,
                     help="shipped: comes with the app · saved: saved by a user of this server (everyone sees them) "
                          "· run: trained from this browser · sweep: a run of a collapse-lab sweep, opened from the "
                          "lab or by a link · uploaded: from your computer, this session only.")
    file_upload(sb, "Upload a model (.safetensors)", UPLOAD_KEY, on_change=_handle_upload,
                help="A checkpoint saved by this app or `python -m vae_core train`. Only weights and JSON are "
                     "read (no pickle).")
    if st.session_state.get(UPLOAD_ERROR_KEY):
        sb.error(plain(sentence(st.session_state[UPLOAD_ERROR_KEY])) + " Upload a .safetensors file written by this app.")
    try:
        am = state.active()
    except ckpt_io.CheckpointError as err:
        sb.error(f"This model cannot be loaded: {plain(sentence(err))} Pick another one.")
        return None
    state.write_url(am.id if am else None)
    if am is None:
        sb.info("No model yet: train one on the Train page or upload one.")
        sb.caption(f"Device: `{cache.device()}`")
        return None
    _model_facts(sb, am)
    _my_runs(sb)
    sb.caption(f"Device: `{cache.device()}`")
    name = ckpt_io.safe_name(am.name or am.label)
    # built when clicked: serialising the model on every page would send megabytes with each visit
    sb.download_button("Download this model", lambda: cache.checkpoint_bytes(am.key, am.ckpt),
                       file_name=f"{name}{ckpt_io.SUFFIX}", icon=":material/download:",
                       mime="application/octet-stream", on_click="ignore", key="vae_download_model")
    return am


def _model_facts(sb, am: state.ActiveModel) -> None:
    cfg = am.config
    data_note = "" if am.data is not None else " (test images not attached)"
    sb.markdown(f"**Dataset:** {plain(am.dataset_name)}{data_note}  \n"
                f"**Latent size:** {cfg.latent_dim} · {cfg.architecture.upper()} · {cfg.likelihood}"
                + (f" · CVAE ({cfg.n_classes} classes)" if cfg.n_classes else ""))
    if am.ckpt.history:
        last = am.ckpt.history[-1]
        sb.markdown(f"**Test set after epoch {last.get('epoch', '?')}** (nats per image)\n\n"
                    f"| −ELBO | reconstruction | KL |\n|---:|---:|---:|\n"
                    f"| {_fmt(last.get('test_elbo'))} | {_fmt(last.get('test_recon'))} | {_fmt(last.get('test_kl'))} |")
        if "active_units" in last:
            sb.caption(f"Active latent units: {last['active_units']} of {cfg.latent_dim}")
    else:
        sb.caption("No training history recorded.")
    if am.name:
        sb.caption(f"Link to this view: the address ends in `?model={am.name}`, which opens this model on "
                   "any page, in any browser that reaches this server.")


def _my_runs(sb) -> None:
    """This browser's runs in progress, the server's load when it is busy, and this browser's unsaved runs."""
    svc = service()
    going = [r for r in svc.runs(owner=state.browser_id()) if not r.done]
    if going:
        sb.caption(f"Your runs: {sum(r.status == 'running' for r in going)} training, "
                   f"{sum(r.status == 'queued' for r in going)} queued — follow them on the Train page.")
    running, queued = svc.load()
    if running or queued:
        where = " on Ray" if svc.executor.remote else ""
        sb.caption(f"Server: {running} training, {queued} waiting (at most {svc.executor.max_workers} at once{where}).")
    _unsaved_runs_panel(sb)


KEEP_KEY = "vae_keep_run"  # the unsaved run picked in the sidebar
KEEP_NOTE_KEY = "vae_keep_note"  # (st function name, message) of the last Save or Discard there


def _unsaved_runs() -> dict:
    """{id: run} of this browser's finished runs whose model the server keeps but nobody saved under a name (a
    sweep's runs belong to their sweep), newest first."""
    return {r.id: r for r in service().runs(owner=state.browser_id())
            if r.done and r.saved is not None and r.saved_as is None and r.group is None}


def _keep_or_discard(run_id: str, save: bool) -> None:
    """The sidebar's Save or Discard of an unsaved run (a button's callback: the page is drawn after it)."""
    run = _unsaved_runs().get(run_id)
    if run is None:
        return
    try:
        if save:
            path = service().save(run, st.session_state.get(f"vae_keep_name_{run_id}") or run.label)
            st.session_state[state.PENDING_KEY] = f"saved:{path.stem}"
            note = ("success", f"Saved as “{path.stem}”: listed under 'saved' for everyone using this server.")
        else:
            service().discard(run)
            note = ("info", f"Discarded {run.label}.")
    except (ckpt_io.CheckpointError, OSError, ValueError) as err:
        note = ("error", f"Could not {'save' if save else 'discard'} {run.label}: {sentence(err)}")
    st.session_state[KEEP_NOTE_KEY] = note


def _unsaved_runs_panel(sb) -> None:
    """Save (under a name, for good) or discard this browser's unsaved runs."""
    runs = _unsaved_runs()
    kind, note = st.session_state.pop(KEEP_NOTE_KEY, (None, None))
    if not runs and note is None:
        return
    with sb.expander(f"Your unsaved runs ({len(runs)})", expanded=note is not None):
        if note is not None:
            getattr(st, kind)(plain(note))
        if not runs:
            return
        if st.session_state.get(KEEP_KEY) not in runs:
            st.session_state[KEEP_KEY] = next(iter(runs))
        pick = st.selectbox("Run", list(runs), format_func=lambda i: state.run_label(runs[i]), key=KEEP_KEY,
                            help=f"Kept on this server for this browser while among its {service().keep} newest "
                                 "runs. Save one to keep it for good: saved models are listed for everyone.")
        st.text_input("Save as", runs[pick].label, key=f"vae_keep_name_{pick}",
                      help="Letters, digits, '-', '_' and '.'")
        save, discard = st.columns(2)
        save.button("Save", key="vae_keep_save", icon=":material/save:", on_click=_keep_or_discard,
                    args=(pick, True), width="stretch")
        discard.button("Discard", key="vae_keep_discard", icon=":material/delete:", on_click=_keep_or_discard,
                       args=(pick, False), width="stretch", help="Removes the run and its model from this server.")


REPLAY_CAPTION = (
    "Training replay: the same test images (a fixed probe) after every epoch. Left, their posterior means with the "
    "±2σ ellipses of q(z|x) for a few of them: a collapsing dimension squeezes every mean to 0 while its ellipses "
    "swell to the prior's size. Middle, the decoder on a grid of ±2 prior standard deviations (it stops changing "
    "along a collapsed direction); right, the KL of each latent dimension, which falls to 0 when it collapses. "
    "Drag the slider or press play.")


def replay_panel(checkpoint_path, key: str) -> None:
    """The training replay saved beside a checkpoint (scrubber, play, GIF), or nothing when there is none (runs
    trained before replays were recorded)."""
    path = replay.path_for(checkpoint_path)
    if not path.is_file():
        return
    mtime = path.stat().st_mtime_ns
    recorded, figure = cache.replay_of(str(path), mtime)
    if recorded is None:
        st.caption("This run's replay file cannot be read.")
        return
    st.plotly_chart(figure, key=f"replay_{key}", config={"displayModeBar": False})
    st.caption(REPLAY_CAPTION)
    st.download_button("Download the replay as a GIF", lambda: cache.replay_gif(str(path), mtime),
                       file_name=f"{Path(checkpoint_path).stem}-replay.gif", mime="image/gif", on_click="ignore",
                       key=f"replay_gif_{key}", icon=":material/animated_images:")
