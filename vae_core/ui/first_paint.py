"""What the app shows before torch has loaded. A fresh server imports torch and the library in the background
(`serve.py`), about 3 s of work; its first visitor's page must not wait for that. So the shell and the first lines
of each page import only this module (Streamlit, numpy and the standard library): the page header, and on a new
session's first page the shipped default model's stored pictures (`vae_core.previews`), which the page then
replaces with its own once the model has loaded. The shell draws the sidebar, which loads the model, after the
page (`run_page`) for the same reason.
"""
from __future__ import annotations

import contextvars

import streamlit as st
from streamlit.commands import navigation as st_navigation

from .. import locations, previews
from .text import plain

SEEN_KEY = "vae_first_paint_seen"  # set on a session's first page: later runs have the model loaded already
DEFAULT_MODELS = (("fashion-mnist-2d", "fashion-mnist"), ("digits-2d", "digits"))  # (shipped model, its dataset)
MAP_KEY = "ls_map"  # the Latent page's map area: its still picture stays under the map until the map has drawn


def page_header(title: str, caption: str, formula: str | None = None) -> None:
    st.title(title)
    st.caption(caption)
    if formula:
        st.latex(formula)


# ---------------------------------------------------------------- the shell

def _no_page_not_found(ctx) -> None:  # noqa: ARG001 — the signature of the function it replaces
    """Send nothing: the app's main page (the Overview) runs, and the browser's address becomes /."""


def quiet_unknown_addresses() -> None:
    """An address that names no page (a typo, an old link, or /overview: Streamlit serves the default page at /
    only, whatever its url_path) runs the Overview and shows it at /. Streamlit would also put a "Page not found"
    dialog over it, which blocks every click until it is closed. Streamlit has no option for that, so its sender
    (`streamlit.commands.navigation.send_page_not_found`, looked up by name on every call) is replaced;
    tests/test_app.py checks that it still exists."""
    if hasattr(st_navigation, "send_page_not_found"):
        st_navigation.send_page_not_found = _no_page_not_found


class PageStopped(BaseException):
    """A page ended early (`widgets.stop`). A BaseException, like Streamlit's own stop, so that error guards let
    it through to `run_page`."""


_IN_SHELL = contextvars.ContextVar("vae_in_shell", default=False)


def run_page(page) -> None:
    """Run the page `st.navigation` chose, which may end early (`widgets.stop`); the shell goes on after it, to
    draw the sidebar. (The sidebar is not drawn from inside the page: its widgets would then belong to the page
    and lose their values when the next run draws them from the shell.)"""
    token = _IN_SHELL.set(True)
    try:
        page.run()
    except PageStopped:
        pass
    finally:
        _IN_SHELL.reset(token)


def in_shell() -> bool:
    """Whether a page is running inside the app's shell (rather than on its own)."""
    return _IN_SHELL.get()


def default_shipped() -> str | None:
    """The shipped model a new session opens: Fashion-MNIST's when its data is on this machine, else digits'."""
    available = locations.available_builtin()
    for name, dataset in DEFAULT_MODELS:
        if available.get(dataset) and (locations.CHECKPOINT_DIR / f"{name}.safetensors").is_file():
            return name
    return None


# ---------------------------------------------------------------- a new session's first pictures

def new_session_preview() -> tuple[str, previews.Preview] | None:
    """On a session's first page, (the name, the stored pictures) of the model it is about to open (the shipped
    default, unless the address names another), if they match that checkpoint; None on every later run."""
    if st.session_state.get(SEEN_KEY):
        return None
    st.session_state[SEEN_KEY] = True
    name = default_shipped()
    if name is None or st.query_params.get("model", name) != name:
        return None
    preview = previews.current(locations.CHECKPOINT_DIR / f"{name}.safetensors")
    return None if preview is None else (name, preview)


def overview_caption(label: str, latent_dim: int, n_classes: int, class_names, n_test: int | None) -> str:
    """The caption of the Overview's picture (`decoding.overview`); `n_test` None: drawn without test images."""
    if n_test is None:
        how = ("Without the test images only the decoder's side can be drawn: "
               + ("its mean image at each cell of the prior's central square." if latent_dim == 2
                  else "images decoded from codes drawn from the prior N(0, I)."))
    elif latent_dim == 2 and n_classes:
        first = plain(class_names[0]) if class_names else "0"
        how = ("Left: each dot is a test image at its posterior mean, coloured by class. Right: the decoder's mean "
               f"image of class {first} at each cell of the same square: in a conditional model the label picks "
               "the class, so the latent code holds the style (slant, thickness, shape) shared by all classes.")
    elif latent_dim == 2:
        how = ("Left: each dot is a test image at its posterior mean, coloured by class, over the prior's dotted "
               "1σ, 2σ, 3σ rings. Right: the decoder's mean image at each cell of the same square, so a class's "
               "cloud on the left decodes to that class on the right.")
    else:
        how = (f"Left: the posterior means of the test images, projected from {latent_dim} dimensions "
               "on their two principal axes. Right: images decoded from codes drawn from the prior N(0, I).")
    count = "" if n_test is None else f", {n_test:,} test images"
    return f"{plain(label)}{count}. {how}"


def overview_preview(slot) -> None:
    """The Overview's picture of the model a new session opens, into `slot` (an st.empty the page fills later)."""
    found = new_session_preview()
    if found is not None:
        name, preview = found
        f = preview.facts
        slot.image(preview.overview_png, caption=overview_caption(name, f.latent_dim, f.n_classes, f.class_names,
                                                                  f.n_test))


def latent_map_area():
    """The Latent page's map area, and in it (first) the still picture of the map a new session opens, which the
    app's style sheet lays under the interactive map and hides once the map has drawn its points."""
    area = st.container(key=MAP_KEY)
    still = area.empty()  # always there, so that the map keeps its place (and its state) on later runs
    found = new_session_preview()
    if found is not None:
        still.image(found[1].latent_png, caption="A still picture of the test images' map: the interactive map of "
                                                "every image replaces it in a moment.")
    return area
