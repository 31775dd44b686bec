"""Per-session state of the app: who this browser is, the models it can choose from and the active one (and
the `?model=` address that names it), the data each model needs, and form values that outlive a page switch.

Models have ids by where they come from: `shipped:NAME` (the source tree's checkpoints/), `saved:NAME` (the
workspace's models/), `run:ID` (a recorded run), `sweep:SWEEP/RUN` (a run of a collapse-lab sweep, shipped or in
the workspace) and `uploaded:DIGEST` (a checkpoint uploaded in this session). A shipped or saved model's NAME, a
run's ID, or SWEEP/RUN is what `?model=` holds; it is made of names, never a path.
"""
from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from .. import checkpoint as ckpt_io
from .. import identity, locations
from .. import store
from ..data import BUILTIN, DataError, Dataset
from ..jobs import format_duration
from . import cache, first_paint
from .jobs import service
from .text import plain

SELECT_KEY = "vae_model_select"  # the sidebar's selectbox: the active model id
PENDING_KEY = "vae_pending_active"  # a model id to activate on the next run (after training or an upload)
UPLOADED_KEY = "vae_uploaded_models"  # {model id: UploadedModel}: checkpoints uploaded in this session
LINKED_KEY = "vae_linked_runs"  # run ids opened through a link in this session (not this browser's own)
SWEEP_RUNS_KEY = "vae_sweep_runs"  # sweep run ids (`sweep:SWEEP/RUN`) opened in this session, from the lab or a link
URL_SEEN_KEY = "vae_url_model"  # the ?model= value last applied or written, so our own writes are not news
URL_ERROR_KEY = "vae_url_error"
LEGACY_DATA_KEY = "vae_legacy_data"  # {model key: dataset hash} attached by upload to pre-workspace checkpoints
FORMS_KEY = "vae_forms"  # {form name: {widget key: value}}
BROWSER_KEY = "vae_browser_id"

DATASET_LABELS = {"digits": "digits (8×8, offline)", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


# ---------------------------------------------------------------- who is this

def browser_id() -> str:
    """A stable, anonymous id of this browser: runs are listed for the browser that started them, across page
    switches, reloads and browser restarts. Derived (one-way) from the app's own year-long cookie
    (`identity.COOKIE`, set by serve.py's server); without it (`streamlit run streamlit_app.py`), from Streamlit's
    XSRF cookie, which lasts as long as the browser session; without either (tests), this session's alone."""
    cached = st.session_state.get(BROWSER_KEY)
    if cached:
        return cached
    try:
        cookies = st.context.cookies
    except AttributeError:
        cookies = {}
    token = identity.token(cookies) or _xsrf_token(cookies) or secrets.token_hex(16)
    ident = identity.owner_id(token)
    st.session_state[BROWSER_KEY] = ident
    return ident


def _xsrf_token(cookies) -> str:
    """The token of Streamlit's XSRF cookie, which stays the same while its mask changes on every page load."""
    cookie = cookies.get("_streamlit_xsrf", "")
    cookie = cookie if isinstance(cookie, str) else ""
    parts = cookie.split("|")
    if len(parts) != 4 or parts[0] != "2":  # tornado's v2 format: 2|mask|masked token|timestamp
        return cookie
    try:
        mask, masked = binascii.a2b_hex(parts[1]), binascii.a2b_hex(parts[2])
    except (ValueError, binascii.Error):
        return ""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(masked)).hex() if len(mask) == 4 else ""


# ---------------------------------------------------------------- models to choose from

@dataclass
class UploadedModel:
    label: str
    ckpt: ckpt_io.Checkpoint
    digest: str


def uploaded_models() -> dict[str, UploadedModel]:
    return st.session_state.setdefault(UPLOADED_KEY, {})


def run_label(run) -> str:
    when = "" if run.finished is None else f", {format_duration(run.elapsed)}"
    return f"run · {run.label} ({run.status}{when})"


def model_options() -> dict[str, str]:
    """{model id: label} for the selector: shipped, saved in the workspace, this browser's runs (those that
    kept a model), runs opened by a link, the sweep runs opened in this session (not every run of every sweep:
    they are many), checkpoints uploaded in this session."""
    options = {f"shipped:{p.stem}": f"shipped · {p.stem}" for p in store.shipped_models()}
    options.update({f"saved:{p.stem}": f"saved · {p.stem}" for p in store.Workspace().list_models()})
    mine = service().runs(owner=browser_id())
    linked = [service().get(i) for i in st.session_state.get(LINKED_KEY, [])]
    for run in mine + [r for r in linked if r is not None and r not in mine]:
        if run.saved is not None:
            options[f"run:{run.id}"] = run_label(run)
    options.update({mid: f"sweep · {mid[6:]}" for mid in st.session_state.get(SWEEP_RUNS_KEY, [])
                    if model_file(mid) is not None})
    options.update({mid: f"uploaded · {m.label}" for mid, m in uploaded_models().items()})
    return options


def default_model_id() -> str | None:
    """Fashion-MNIST's shipped model when its data is found locally, else digits, else anything there is."""
    name = first_paint.default_shipped()
    return f"shipped:{name}" if name else next(iter(model_options()), None)


def resolve_name(name: str) -> str | None:
    """The model id a `?model=` value names: a shipped or saved model's name, a run's id, or SWEEP/RUN."""
    if store.Workspace().find_sweep_run(name) is not None:
        return f"sweep:{name}"
    found = store.Workspace().find_model(name)
    if found is not None:
        kind, path = found
        return f"{kind}:{path.stem}"
    run = service().get(name)
    if run is not None and run.saved is not None:
        return f"run:{run.id}"
    return None


def url_name(mid: str | None) -> str | None:
    """What `?model=` holds for model id `mid` (None: an upload, which has no name to share)."""
    if not mid or mid.startswith("uploaded:"):
        return None
    return mid.split(":", 1)[1]


def apply_url() -> None:
    """Make the model named by `?model=` the active one, once per new value (a fresh session opened by a link,
    or the user editing the address). An unknown name leaves one message and the default model."""
    name = st.query_params.get("model")
    if not name or name == st.session_state.get(URL_SEEN_KEY):
        return
    st.session_state[URL_SEEN_KEY] = name
    mid = resolve_name(name)
    if mid is None:
        st.session_state[URL_ERROR_KEY] = (f"There is no model called “{name}” on this server (a shipped or saved "
                                           "model's name, a run's id, or a sweep's run as SWEEP/RUN); showing the "
                                           "default model instead.")
        return
    st.session_state.pop(URL_ERROR_KEY, None)
    if mid.startswith("run:") and mid[4:] not in [r.id for r in service().runs(owner=browser_id())]:
        st.session_state.setdefault(LINKED_KEY, []).append(mid[4:])
    if mid.startswith("sweep:"):
        open_sweep_run(mid)
    else:
        st.session_state[PENDING_KEY] = mid


def open_sweep_run(mid: str) -> None:
    """Make the sweep run `mid` (`sweep:SWEEP/RUN`) the active model from the next run of the page on, and list it
    in the selector for the rest of the session."""
    opened = st.session_state.setdefault(SWEEP_RUNS_KEY, [])
    if mid not in opened:
        opened.append(mid)
    st.session_state[PENDING_KEY] = mid


def write_url(mid: str | None) -> None:
    """Put the active model's name in the address, so the view can be shared by link (page switches drop it)."""
    name = url_name(mid)
    if name is None:
        st.query_params.pop("model", None)
    elif st.query_params.get("model") != name:
        st.query_params["model"] = name
    st.session_state[URL_SEEN_KEY] = name


# ---------------------------------------------------------------- the active model and its data

@dataclass
class MissingData:
    """Why a model's test images are not available, and whether an upload can fix it."""

    message: str
    file_name: str | None = None  # the file to upload (user data)
    hash: str | None = None  # its content hash (None for checkpoints made before the workspace recorded it)

    @property
    def can_attach(self) -> bool:
        return self.file_name is not None


@dataclass
class ActiveModel:
    id: str  # what the selectbox holds
    key: str  # changes whenever the weights may change: keys every per-model cache
    label: str
    source: str  # shipped | saved | run | sweep | uploaded
    ckpt: ckpt_io.Checkpoint
    data: Dataset | None
    missing: MissingData | None
    digest: str = ""  # SHA-256 of the checkpoint's bytes: the identity of its weights (the map cache's key)

    @property
    def model(self):
        return self.ckpt.model

    @property
    def config(self):
        return self.ckpt.config

    @property
    def name(self) -> str | None:
        """What `?model=` holds for it."""
        return url_name(self.id)

    @property
    def dataset_name(self) -> str:
        return str(self.ckpt.dataset.get("name", "unknown"))

    @property
    def file_stem(self) -> str:
        """The dataset name made safe for a download's file name."""
        try:
            return ckpt_io.safe_name(Path(self.dataset_name.replace("upload:", "")).stem)
        except ckpt_io.CheckpointError:
            return "vae"

    @property
    def labels_for_model(self):
        """Labels to pass to the model (only a conditional VAE takes them)."""
        if self.config.n_classes and self.data is not None:
            return self.data.y_test
        return None


def _describe(info: dict) -> str:
    shape = "×".join(str(v) for v in info.get("image_shape") or []) or "?"
    n = (info.get("n_train") or 0) + (info.get("n_test") or 0)
    return f"{n:,} images of {shape}" if n else f"images of {shape}"


def data_for(ckpt: ckpt_io.Checkpoint, model_key: str) -> tuple[Dataset | None, MissingData | None]:
    """The dataset a model was trained on, found by name (built-in) or content hash (a user's file, in the
    workspace), or why it is not available. Never downloads."""
    info = ckpt.dataset
    ref = store.DataRef.from_info(info)
    legacy = st.session_state.get(LEGACY_DATA_KEY, {}).get(model_key)
    if ref.builtin and ref.name.startswith("upload:") and legacy:
        ref = store.DataRef(ref.name[7:], legacy)
    if ref.builtin and ref.name.startswith("upload:"):  # saved before datasets were stored by hash
        file_name = ref.name[7:]
        return None, MissingData(f"This model was trained on the file **{plain(file_name)}** ({_describe(info)}), "
                                 "saved before the app kept a copy of uploaded data. Upload that file here to "
                                 "attach it.", file_name=file_name)
    if ref.builtin and ref.name not in BUILTIN:
        return None, MissingData(f"This model's dataset “{plain(ref.name)}” is not a built-in dataset and the "
                                 "checkpoint does not say which file it came from; pick another model.")
    try:
        data = cache.dataset(ref)
    except DataError as err:
        if ref.builtin:
            return None, MissingData(plain(err))
        if store.Workspace().dataset_info(ref.hash) is None:
            return None, MissingData(
                f"This model was trained on **{plain(ref.name)}** ({_describe(info)}; content hash "
                f"{ref.hash[:12]}…), which is not in this workspace. Upload that file here to attach it: it is "
                "stored once, and every session finds it from then on.", file_name=ref.name, hash=ref.hash)
        return None, MissingData(plain(err), file_name=ref.name, hash=ref.hash)
    if tuple(data.image_shape) != tuple(ckpt.config.image_shape):
        return None, MissingData(f"the dataset's images are {data.image_shape} but the model expects "
                                 f"{tuple(ckpt.config.image_shape)}")
    if ckpt.config.n_classes and data.y_test is None:
        return None, MissingData("this conditional model needs labels, and its dataset has none")
    return data, None


def active() -> ActiveModel | None:
    """The model chosen in the sidebar, or named by the address, or the default one (a page run alone)."""
    apply_url()
    options = model_options()
    mid = st.session_state.get(PENDING_KEY) or st.session_state.get(SELECT_KEY)
    if mid not in options or (mid.startswith("run:") and service().get(mid[4:]) is None):  # (pruned meanwhile)
        mid = default_model_id()
    if mid is None:
        return None
    return open_model(mid)


def model_file(mid: str) -> tuple[Path, str] | None:
    """(checkpoint path, label) of a shipped or saved model, a run or a sweep's run; None for an upload (held in the
    session) or a sweep run that is not there."""
    kind, ident = mid.split(":", 1)
    if kind == "sweep":
        found = store.Workspace().find_sweep_run(ident)
        return None if found is None else (found[1], ident)
    if kind == "run":
        run = service().get(ident)
        return (run.saved, run.label) if run is not None and run.saved is not None else None
    if kind == "saved":
        return store.Workspace().model_path(ident), ident
    if kind == "shipped":
        return locations.CHECKPOINT_DIR / f"{ident}{ckpt_io.SUFFIX}", ident
    return None


def open_model(mid: str) -> ActiveModel:
    """The model with id `mid` (one of `model_options`), loaded (cached), with its data found."""
    kind = mid.split(":", 1)[0]
    if kind == "uploaded":
        up = uploaded_models()[mid]
        ckpt, key, label, digest = up.ckpt, f"up-{up.digest}", up.label, up.digest
    else:
        found = model_file(mid)
        if found is None:
            raise ckpt_io.CheckpointError(f"model {mid} is not there any more")
        path, label = found
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:  # e.g. a run folder another process on this workspace removed
            raise ckpt_io.CheckpointError(f"the file of {label} is not in the workspace any more ({path.name} was "
                                          "removed)") from None
        ckpt = cache.load_checkpoint_file(str(path), mtime)
        key, digest = f"{mid}:{mtime}", cache.file_digest(str(path), mtime)
    data, missing = data_for(ckpt, key)
    return ActiveModel(mid, key, label, kind, ckpt, data, missing, digest)


def same_data_models(am: ActiveModel) -> dict[str, str]:
    """{model id: label} of the other models this session can open that were trained on the same images as `am`
    (the same built-in dataset or the same stored file, the same image shape): the models its map can be compared
    with. Read from the checkpoints' headers only."""
    want = (store.DataRef.from_info(am.ckpt.dataset), tuple(am.config.image_shape))
    out = {}
    for mid, label in model_options().items():
        if mid == am.id:
            continue
        try:
            if mid.startswith("uploaded:"):
                info, shape = uploaded_models()[mid].ckpt.dataset, uploaded_models()[mid].ckpt.config.image_shape
            else:
                path = model_file(mid)[0]
                info, shape = cache.checkpoint_header(str(path), path.stat().st_mtime_ns)
        except (ckpt_io.CheckpointError, OSError, TypeError, KeyError):
            continue
        if (store.DataRef.from_info(info), tuple(shape)) == want:
            out[mid] = label
    return out


# ---------------------------------------------------------------- forms that outlive a page switch

def restore_form(name: str, keys: tuple[str, ...]) -> None:
    """Streamlit forgets a widget's value when its page is left; put back the values `remember_form` kept,
    before the widgets are drawn."""
    saved = st.session_state.get(FORMS_KEY, {}).get(name, {})
    for key in keys:
        if key not in st.session_state and key in saved:
            st.session_state[key] = saved[key]


def remember_form(name: str, keys: tuple[str, ...]) -> None:
    """Keep the current values of `keys` (call after the widgets are drawn)."""
    st.session_state.setdefault(FORMS_KEY, {})[name] = {k: st.session_state[k] for k in keys if k in st.session_state}
