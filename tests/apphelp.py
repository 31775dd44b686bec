"""Helpers for the AppTest suites: opening pages and the shell, reading what the user sees, and following work
that runs in the background (runs and jobs) until the page shows its end — by polling the app's own state."""
from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from bench.common import apptests_in_threads  # noqa: F401 — many AppTest sessions at once, for the tests too
from vae_core.runs import default_service
from vae_core.ui import state
from vae_core.ui.text import WORD_JOINER

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIGITS = ROOT / "checkpoints" / "digits-2d.safetensors"
DIGITS = "shipped:digits-2d"
TIMEOUT = 120
N_TEST = 359  # digits test images (20 % of 1,797)
N_ALL = 1797  # digits images: the Latent page maps every one


def shell(**query) -> AppTest:
    """The whole app (navigation and sidebar), opened at an address with these query parameters."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def page(name: str, model: str | None = DIGITS) -> AppTest:
    """One page run alone (as AppTest does), with `model` active."""
    at = AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)
    if model:
        at.session_state[state.SELECT_KEY] = model
    return at


def unescape(text: str) -> str:
    """What a user reads: the Markdown text with the backslash escapes and invisible word joiners of
    ui.text.plain removed."""
    return re.sub(r"\\(.)", r"\1", text).replace(WORD_JOINER, "")


def messages(at, kinds=("error", "warning", "info", "success")) -> list[str]:
    return [unescape(str(e.value)) for kind in kinds for e in getattr(at, kind)]


def texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + messages(at)
    return "\n".join(unescape(str(p)) for p in parts)


def scatter_points(at_or_chart) -> int:
    chart = at_or_chart.get("plotly_chart")[0] if hasattr(at_or_chart, "get") else at_or_chart
    spec = json.loads(chart.proto.spec)
    traces = [t for t in spec["data"] if t["type"] == "scattergl"]
    assert len(traces) == 1 and traces[0]["hovertemplate"].startswith("index %{customdata}")
    return len(traces[0]["text"])


def map_points(at, key: str = "ls_map_a") -> int:
    """How many points the Latent page's map `key` holds (its columns are sent inline: AppTest has no map server)."""
    import base64  # noqa: PLC0415

    from vae_core.latent_map import read_payload  # noqa: PLC0415

    (blob,) = [json.loads(e.proto.json) for e in at.get("bidi_component") if e.proto.id.endswith(f"-{key}")]
    return len(read_payload(base64.b64decode(blob["points"]["b64"]))["row"])


def progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def settle(at, timeout: float = TIMEOUT) -> AppTest:
    """Rerun the page until no progress bar is left on it: every run or job it shows has ended and the page
    shows the outcome. Polls the app's state (what the page renders), never sleeps a fixed time blindly."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        if at.exception or not at.get("progress"):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"still working after {timeout} s: {progress_texts(at)}")
        time.sleep(0.1)


def rerun_until(at, condition, timeout: float = TIMEOUT) -> AppTest:
    """Rerun the page until `condition(at)` holds (the app reached a state), polling every 0.1 s."""
    deadline = time.monotonic() + timeout
    while not condition(at.run()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the app did not reach the expected state within {timeout} s")
        time.sleep(0.1)
    return at


def current_run(at):
    """The run the Train page shows."""
    return default_service().get(at.session_state["tr_run"])


def train_quick(at, epochs: int = 1, seed: int = 0, lr: float | None = None, wait: bool = True) -> AppTest:
    """On the Train page: the quick recipe (MLP 64, d = 2), `epochs` epochs, press Train (and wait for the end)."""
    at.selectbox(key="tr_recipe").set_value("quick").run()
    at.number_input(key="tr_epochs").set_value(epochs)
    at.number_input(key="tr_seed").set_value(seed)
    if lr is not None:
        at.number_input(key="tr_lr").set_value(lr)
    at.button(key="tr_train").click().run()
    return settle(at) if wait else at


def save_as(at, name: str, overwrite: bool = False) -> AppTest:
    next(t for t in at.text_input if t.label == "Name").set_value(name)
    at.checkbox(key="tr_save_overwrite").set_value(overwrite)
    return at.button(key="tr_save").click().run()


def model_options(at) -> list[str]:
    """The sidebar's model list as the user sees it (labels such as 'shipped · digits-2d')."""
    box = at.sidebar.selectbox(key=state.SELECT_KEY)
    return [unescape(o) for o in box.options]


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def good_npz(n: int = 40, side: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return npz_bytes(x=rng.integers(0, 256, (n, side, side), dtype=np.uint8), y=np.arange(n) % 3)


def upload_data(at, name: str, blob: bytes) -> AppTest:
    """Choose 'upload a file' on the Train page and upload `blob` as `name`; wait until it is stored (a job)."""
    at.selectbox(key="tr_dataset").set_value("upload").run()
    return settle(at.file_uploader(key="tr_upload").set_value((name, blob, "application/octet-stream")).run())


def mnist_like() -> np.ndarray:
    """sklearn's 1,797 handwritten digits made as MNIST's were: each scaled (anti-aliased, bilinear) to 20×20 and
    centred in a 28×28 frame, 8-bit; MNIST's shape and kind of image, available offline. (Blocky 4× enlargements
    are not: their sharp edges cost a Fashion-MNIST model many nats, and it ranks them as strange.)"""
    from PIL import Image  # noqa: PLC0415 — only the tests that build images need it
    from sklearn.datasets import load_digits  # noqa: PLC0415

    images = load_digits().images
    out = np.zeros((len(images), 28, 28), np.uint8)
    for i, image in enumerate(images):
        small = Image.fromarray((image * (255 / 16)).round().astype(np.uint8))
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return out


def colour_shapes_zip(per_class: int = 40, side: int = 24, seed: int = 0) -> bytes:
    """A .zip of colour PNGs in one folder per class, as a user would zip their images: red discs, green squares
    and blue triangles of random size and place on a dark background (some JPEGs among them)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 — only the tests that build images need it
    import zipfile  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, colour in (("disc", (230, 40, 40)), ("square", (40, 200, 60)), ("triangle", (50, 80, 230))):
            for i in range(per_class):
                img = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 40, 3)))
                r = int(rng.integers(side // 5, side // 3))
                cx, cy = (int(v) for v in rng.integers(r, side - r, 2))
                draw = ImageDraw.Draw(img)
                if name == "disc":
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
                elif name == "square":
                    draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                out = io.BytesIO()
                fmt = "JPEG" if i % 5 == 0 else "PNG"
                img.save(out, fmt, quality=95)
                zf.writestr(f"shapes/{name}/{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}", out.getvalue())
    return buf.getvalue()


def _plotly_arrays(obj):
    """Plotly ≥ 6 sends numeric arrays as {'dtype', 'bdata' (base64)[, 'shape']}: turn them back into lists."""
    if isinstance(obj, dict) and set(obj) >= {"dtype", "bdata"}:
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if "shape" in obj:
            arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
        return arr.tolist()
    if isinstance(obj, dict):
        return {k: _plotly_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plotly_arrays(v) for v in obj]
    return obj


def chart_figure(element):
    """An AppTest plotly_chart element's figure, its binary arrays decoded."""
    import plotly.graph_objects as go  # noqa: PLC0415 — only the tests of charts need it

    return go.Figure(_plotly_arrays(json.loads(element.proto.spec)))
