"""What a fresh server does while it waits for its first visitor (`serve.py` starts it in the background):
import the app's modules — torch alone takes about 2 s, the library and Plotly about 1 s more — and load the
default model's dataset into the process's cache, so that the first page does not wait for them."""
from __future__ import annotations

import plotly.graph_objects  # noqa: F401 — the figures' module, slow to import the first time

from .. import plots, store  # noqa: F401
from ..locations import available_builtin
from ..device import default_device
from . import cache, jobs, state, widgets  # noqa: F401 — the pages' helpers (and torch through them)


def warm_up() -> None:
    """Load the dataset the default model (state.default_model_id) is shown with."""
    name = "fashion-mnist" if available_builtin().get("fashion-mnist") else "digits"
    store.load(store.DataRef(name), default_device())
