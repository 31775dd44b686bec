"""VAE latent-space explorer — the shell: page config, navigation and the sidebar with the active model.

Run with `make run` (or `streamlit run streamlit_app.py`). Each page in pages/ also runs on its own.
"""
import streamlit as st

from vae_core import ui

st.set_page_config(page_title="VAE latent-space explorer", page_icon=":material/blur_on:", layout="wide")

pages = [
    st.Page("pages/0_Overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/2_Latent_space.py", title="Latent space", icon=":material/scatter_plot:", url_path="latent"),
    st.Page("pages/3_Decoder_grid.py", title="Decoder grid", icon=":material/grid_view:", url_path="decoder"),
    st.Page("pages/4_Anomalies.py", title="Anomalies", icon=":material/report:", url_path="anomalies"),
    st.Page("pages/5_Collapse_lab.py", title="Collapse lab", icon=":material/compress:", url_path="collapse"),
]
page = st.navigation(pages)
with ui.guard("show the sidebar"):
    ui.sidebar()
page.run()
