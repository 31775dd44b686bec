"""The Latent space page's interactive map: a Streamlit component (`latent_map.js`, `latent_map.css`) fed with what
`vae_core.latent_map` computes. Its points go to the browser once (by URL from the app's server, `map_server`, or
inline where that is not mounted), a rerun sends only small state, and the selection comes back as a bitset."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import streamlit as st

from .. import latent_map, map_server
from ..recent import Recent

_HERE = Path(__file__).resolve().parent
_COMPONENT = st.components.v2.component(
    "vae_core.latent_map", html="<div></div>", css=(_HERE / "latent_map.css").read_text(),
    js=(_HERE / "latent_map.js").read_text(), isolate_styles=False)  # unisolated: the page's style rule sees it draw
_INLINE = Recent(8)  # base64 of blobs sent inline (no map server), the few last


def blob(key, make) -> dict:
    """How the browser gets the bytes `make()` gives: a URL of the app's server, or the bytes inline (base64)."""
    if map_server.mounted():
        return {"url": map_server.publish_blob(key, make)}
    token = map_server.token(("inline", key))
    return {"key": token, "b64": _INLINE.get(token, lambda: base64.b64encode(make()).decode())}


def show(key: str, data: dict):
    """Mount the map under `key` (its state, the selection, lives in st.session_state[key])."""
    return _COMPONENT(key=key, data=data, default={"selection": None}, height="content",
                      on_selection_change=lambda: None)


def selection_of(key: str) -> dict | None:
    """What the map `key` last sent as its selection: {seq, bits, count, how}, or None (read before mounting, so the
    page knows the selection before it draws anything)."""
    state = st.session_state.get(key)
    try:
        return state.get("selection") if state else None
    except AttributeError:
        return None


def highlight(rows: np.ndarray | None, point_rows: np.ndarray) -> tuple[str | None, int]:
    """(bitset of the map's points among `rows`, how many) — the selection as any map shows it."""
    if rows is None or not len(rows):
        return None, 0
    bits = latent_map.rows_to_bits(rows, point_rows)
    return bits, int(np.isin(point_rows, rows).sum())
