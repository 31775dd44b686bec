"""Keyboard stepping: a page's keys click its own buttons (Streamlit has no keyboard API). A static script
(`step_keys.js`, no user text) mounted as a component in the app's document; it ignores keys typed into a field."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

_COMPONENT = st.components.v2.component(
    "vae_core.step_keys", html="<div></div>", js=(Path(__file__).resolve().parent / "step_keys.js").read_text(),
    isolate_styles=False)  # unisolated: it listens on the app's document, where the buttons are


def listen(keys: dict[str, str], key: str = "step_keys") -> None:
    """While this page is shown, pressing each key of `keys` (a KeyboardEvent.key, e.g. "ArrowRight") clicks the
    button whose Streamlit key is its value."""
    _COMPONENT(key=key, data={"keys": keys}, height=0)
