"""What the Latent page's map fetches over HTTP from the app's server, beside Streamlit's own messages: its point
columns (sent once, cached by the browser, never again on a rerun) and images — the thumbnail of any row of the
dataset (the image under the pointer, the images mode's lattice) and the decoder's images at any lattice of map
positions. `serve.py` mounts `routes()` on its `st.App`; a page publishes what a map needs under a key and passes
the URLs to the browser. A published item's address is derived from its key (SHA-256), so every session showing
the same map shares one item; the registry is bounded (the least recently used items go).

    GET /vae-map/blob/<token>                       the bytes published (columns for the map)
    GET /vae-map/images/<token>?rows=3,17&px=96     those dataset rows side by side, each px × px, as one PNG
    GET /vae-map/decode/<token>?x0=&dx=&nx=&y0=&dy=&ny=&px=
                                                    E[x|z] at the centres of an nx × ny lattice of map cells
                                                    (x0 + (i + ½)dx, y0 + (j + ½)dy), top row first, as one PNG

Numbers in a request are checked (at most MAX_ROWS rows, a lattice of at most MAX_CELLS, 8…256 px); the work runs
in a worker thread, never in the server's event loop. Without `serve.py` (`streamlit run streamlit_app.py`, tests)
nothing is mounted and the page sends the columns inline instead (`mounted()` says which).
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
from PIL import Image

PREFIX = "/vae-map"
MAX_ROWS = 400  # images in one request
MAX_CELLS = 2500  # decoded images in one request
MAX_BLOB_BYTES = 1 << 30  # all published blobs together
MAX_SOURCES = 64  # image and decoder sources kept
_MOUNTED = threading.Event()
_LOCK = threading.Lock()
_BLOBS: OrderedDict[str, bytes] = OrderedDict()
_SOURCES: OrderedDict[str, Callable] = OrderedDict()


def mounted() -> bool:
    """Whether this process serves the routes (the app started by `serve.py`)."""
    return _MOUNTED.is_set()


def token(key) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def publish_blob(key, make: Callable[[], bytes]) -> str:
    """The URL of the bytes `make()` gives, made once per key."""
    t = token(("blob", key))
    with _LOCK:
        if t in _BLOBS:
            _BLOBS.move_to_end(t)
            return f"{PREFIX}/blob/{t}"
    data = make()
    with _LOCK:
        _BLOBS[t] = data
        while sum(len(b) for b in _BLOBS.values()) > MAX_BLOB_BYTES and len(_BLOBS) > 1:
            _BLOBS.popitem(last=False)
    return f"{PREFIX}/blob/{t}"


def _publish(kind: str, key, source: Callable) -> str:
    t = token((kind, key))
    with _LOCK:
        _SOURCES[t] = source
        _SOURCES.move_to_end(t)
        while len(_SOURCES) > MAX_SOURCES:
            _SOURCES.popitem(last=False)
    return f"{PREFIX}/{kind}/{t}"


def publish_images(key, images_of: Callable[[np.ndarray], np.ndarray]) -> str:
    """The URL of a dataset's row images: `images_of(rows)` gives them as (k, C, H, W), uint8 or in [0, 1]."""
    return _publish("images", key, images_of)


def publish_decoder(key, decode_at: Callable[[np.ndarray], np.ndarray]) -> str:
    """The URL of a model's images at map positions: `decode_at(xy (k, 2))` gives (k, C, H, W) in [0, 1]."""
    return _publish("decode", key, decode_at)


def strip_png(images: np.ndarray, px: int) -> bytes:
    """Images (k, C, H, W), uint8 or in [0, 1], side by side at px × px each (nearest neighbour when enlarging by a
    whole factor, so pixels stay sharp; Lanczos otherwise), as PNG bytes."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)
    k, c, h, w = images.shape
    mode = "L" if c == 1 else "RGB"
    strip = Image.new(mode, (px * k, px), 255 if c == 1 else (255, 255, 255))
    for i, img in enumerate(images):
        pic = Image.fromarray(img[0] if c == 1 else img[:3].transpose(1, 2, 0), mode)
        whole = px % max(h, w) == 0 and px >= max(h, w)
        pic = pic.resize((px, px), Image.Resampling.NEAREST if whole else Image.Resampling.LANCZOS)
        strip.paste(pic, (i * px, 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def lattice_centres(x0: float, dx: float, nx: int, y0: float, dy: float, ny: int) -> np.ndarray:
    """(nx·ny, 2) centres of a lattice of cells, top row (largest y) first, each row left to right."""
    xs = x0 + (np.arange(nx) + 0.5) * dx
    ys = y0 + (np.arange(ny)[::-1] + 0.5) * dy
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)


class BadRequest(ValueError):
    pass


def _int(params, name: str, low: int, high: int) -> int:
    try:
        value = int(params[name])
    except (KeyError, ValueError):
        raise BadRequest(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be in {low}…{high}")
    return value


def _float(params, name: str) -> float:
    try:
        value = float(params[name])
    except (KeyError, ValueError):
        raise BadRequest(f"{name} must be a number") from None
    if not np.isfinite(value) or abs(value) > 1e6:
        raise BadRequest(f"{name} must be a finite number")
    return value


def images_png(t: str, params) -> bytes:
    source = _SOURCES.get(t)
    if source is None:
        raise KeyError(t)
    try:
        rows = np.array([int(v) for v in params.get("rows", "").split(",") if v], dtype=np.int64)
    except ValueError:
        raise BadRequest("rows must be whole numbers") from None
    if not 1 <= len(rows) <= MAX_ROWS:
        raise BadRequest(f"ask for 1…{MAX_ROWS} rows")
    return strip_png(source(rows), _int(params, "px", 8, 256))


def decode_png(t: str, params) -> bytes:
    source = _SOURCES.get(t)
    if source is None:
        raise KeyError(t)
    nx, ny = _int(params, "nx", 1, MAX_CELLS), _int(params, "ny", 1, MAX_CELLS)
    if nx * ny > MAX_CELLS:
        raise BadRequest(f"a lattice of at most {MAX_CELLS} cells")
    xy = lattice_centres(_float(params, "x0"), _float(params, "dx"), nx, _float(params, "y0"), _float(params, "dy"),
                         ny)
    return strip_png(source(xy), _int(params, "px", 8, 256))


def routes() -> list:
    """The starlette routes `serve.py` mounts (importing starlette only here: the library does not need it)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    immutable = {"Cache-Control": "private, max-age=86400, immutable"}

    def answer(work):
        async def endpoint(request):
            try:
                body, media = await run_in_threadpool(work, request.path_params["token"], request.query_params)
            except KeyError:
                return PlainTextResponse("not found (the page that published it may have been reloaded)", 404)
            except BadRequest as err:
                return PlainTextResponse(str(err), 400)
            except (IndexError, ValueError) as err:
                return PlainTextResponse(f"cannot draw that: {err}", 400)
            return Response(body, media_type=media, headers=immutable)
        return endpoint

    def blob(t, _params):
        with _LOCK:
            return _BLOBS[t], "application/octet-stream"

    _MOUNTED.set()
    return [Route(f"{PREFIX}/blob/{{token}}", answer(blob)),
            Route(f"{PREFIX}/images/{{token}}", answer(lambda t, p: (images_png(t, p), "image/png"))),
            Route(f"{PREFIX}/decode/{{token}}", answer(lambda t, p: (decode_png(t, p), "image/png")))]
