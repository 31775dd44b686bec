"""What a fresh server does while it waits for its first visitor (`serve.py` starts it in the background):
import the app's modules — torch alone takes about 2 s, the library and Plotly about 1 s more — load the default
model's dataset into the process's cache, and make sure the workspace holds that model's map of every image
(`latent_map`), so that the first page does not wait for them."""
from __future__ import annotations

import plotly.graph_objects  # noqa: F401 — the figures' module, slow to import the first time

from .. import checkpoint as ckpt_io
from .. import latent_map, locations, plots, store  # noqa: F401
from ..device import default_device
from . import cache, first_paint, jobs, state, widgets  # noqa: F401 — the pages' helpers (and torch through them)


def warm_up() -> None:
    """Load the dataset the default model (state.default_model_id) is shown with, and encode every image of it
    into the workspace's map cache unless it is there already (about 3 s for Fashion-MNIST's 70,000 here)."""
    name = first_paint.default_shipped()
    if name is None:
        return
    path = locations.CHECKPOINT_DIR / f"{name}{ckpt_io.SUFFIX}"
    ckpt = ckpt_io.load(path, device=default_device())
    data = store.load(store.DataRef.from_info(ckpt.dataset), default_device())
    maps = latent_map.MapCache.of_checkpoint(store.Workspace().maps_dir, path, data)
    if maps.encodings() is None:
        maps.save_encodings(latent_map.encode(ckpt.model, data))
