"""The app's server: `streamlit run serve.py` (what `make run` does) serves streamlit_app.py and, while it waits
for its first visitor, imports torch and the library and loads the default model's data in the background, so
the first page opens about 4 s sooner. `streamlit run streamlit_app.py` works too, without the head start."""
import contextlib
import threading

import streamlit as st


def _warm_up() -> None:
    from vae_core.ui import preload  # noqa: PLC0415 — imported here, in the background thread: that is the point

    preload.warm_up()


@contextlib.asynccontextmanager
async def _lifespan(_app):
    threading.Thread(target=_warm_up, name="vae-preload", daemon=True).start()
    yield


app = st.App("streamlit_app.py", lifespan=_lifespan)
