"""The app's server: `streamlit run serve.py` (what `make run` does) serves streamlit_app.py and, while it waits
for its first visitor, imports torch and the library and loads the default model's data in the background, so
the pages open about 4 s sooner. The first page does not even wait for that: it paints its header and the default
model's stored pictures without torch (`vae_core/ui/first_paint.py`). It also gives each browser a lasting
identity (`vae_core/identity.py`), so its runs stay listed after the browser restarts. `streamlit run
streamlit_app.py` works too, without the head start, and with runs listed only while the browser session lasts."""
import contextlib
import os
import threading

import numpy  # noqa: F401 — here, not in the low-priority thread: OpenBLAS starts its worker threads on import
import streamlit as st
from starlette.middleware import Middleware

from vae_core import identity, map_server  # torch-free: numpy and Pillow; starlette


def _import_library() -> None:
    # The lowest CPU priority, for this thread alone (Linux): on a small machine the first visitor's browser,
    # loading the app's scripts, and the page's first picture go first; the imports take the idle time.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    from vae_core.ui import preload  # noqa: PLC0415, F401 — imported here, in the background: that is the point


def _load_data(imported: threading.Thread) -> None:
    # A thread of normal priority: torch's worker threads, started here or later, inherit its priority
    imported.join()
    from vae_core.ui import preload  # noqa: PLC0415 — already imported by the thread joined above

    preload.warm_up()


@contextlib.asynccontextmanager
async def _lifespan(_app):
    imports = threading.Thread(target=_import_library, name="vae-preload-imports", daemon=True)
    imports.start()
    threading.Thread(target=_load_data, args=(imports,), name="vae-preload-data", daemon=True).start()
    yield


app = st.App("streamlit_app.py", lifespan=_lifespan, routes=map_server.routes(),  # the map's points and images
             middleware=[Middleware(identity.BrowserCookie)])  # a browser's lasting identity: its runs stay listed
