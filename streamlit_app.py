"""VAE latent-space explorer — the shell: page config, navigation and the sidebar with the active model.

Run with `make run` (or `streamlit run streamlit_app.py`). Each page in pages/ also runs on its own.
"""
from pathlib import Path

import streamlit as st

from vae_core.ui import first_paint  # torch-free: the shell and each page's first lines paint before torch loads

ASSETS = Path(__file__).resolve().parent / "assets"
# A local favicon: an emoji or icon name would make the browser fetch one from the internet
st.set_page_config(page_title="VAE latent-space explorer", page_icon=str(ASSETS / "favicon.png"), layout="wide")
st.html(ASSETS / "app.css")  # static style rules (wide formulas scroll on narrow screens); no user text

pages = [
    st.Page("app_pages/0_Overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    st.Page("app_pages/1_Train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("app_pages/2_Latent_space.py", title="Latent space", icon=":material/scatter_plot:", url_path="latent"),
    st.Page("app_pages/3_Decoder_grid.py", title="Decoder grid", icon=":material/grid_view:", url_path="decoder"),
    st.Page("app_pages/4_Anomalies.py", title="Anomalies", icon=":material/report:", url_path="anomalies"),
    st.Page("app_pages/5_Collapse_lab.py", title="Collapse lab", icon=":material/compress:", url_path="collapse"),
    st.Page("app_pages/6_Collapse_demo.py", title="Collapse demo", icon=":material/slideshow:", url_path="demo"),
]
first_paint.quiet_unknown_addresses()  # /overview, /nonexistent: the Overview at /, without a "Page not found" dialog
page = st.navigation(pages)
if st.query_params.get("demo") and page.url_path != "demo":  # ?demo=collapse on any page opens the lecture demo
    st.switch_page("app_pages/6_Collapse_demo.py", query_params=st.query_params.to_dict())
first_paint.run_page(page)
# The sidebar loads the active model: drawn after the page, it does not hold up a fresh server's first picture.
from vae_core.ui import widgets  # noqa: E402 — imported by every page already

with widgets.guard("show the sidebar"):
    widgets.sidebar()
