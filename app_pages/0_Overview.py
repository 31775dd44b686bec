"""Overview: the active model in one picture (encoder map beside decoder map) and where each page goes next."""
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "VAE latent-space explorer",
    "A variational autoencoder compresses each image x into a Gaussian q(z|x) over a small latent space and "
    "learns a decoder p(x|z) that maps a latent code back to an image. The picture shows the active model from "
    "both sides: the encoder's map of the test set on the left, the decoder's view on the right. Training "
    "maximises the evidence lower bound (ELBO):",
    r"\log p(x)\;\ge\;\mathrm{ELBO}(x)=\mathbb E_{q(z|x)}\big[\log p(x\mid z)\big]-\mathrm{KL}\big(q(z\mid x)\,\|\,p(z)\big)",
)

picture = st.empty()
first_paint.overview_preview(picture)  # a new session's stored picture, shown before torch has loaded

from vae_core.ui import cache, widgets  # noqa: E402 — on a fresh server this waits for torch

am = widgets.require_model(need_data=False)
if am.data is None:
    widgets.missing_data_panel(am)
with widgets.guard("draw the overview"):
    cfg = am.config
    picture.image(cache.overview_png(am.key, am),
                  caption=first_paint.overview_caption(am.label, cfg.latent_dim, cfg.n_classes,
                                                       None if am.data is None else am.data.class_names,
                                                       None if am.data is None else len(am.data.x_test)))

st.subheader("Where to go next")
NEXT = [
    ("app_pages/2_Latent_space.py", "Latent space", ":material/scatter_plot:",
     "the same map, interactive: hover, select, click to decode, PCA and t-SNE for d > 2, CSV export"),
    ("app_pages/3_Decoder_grid.py", "Decoder grid", ":material/grid_view:",
     "the decoded lattice with the data density over it, interpolations, prior samples"),
    ("app_pages/4_Anomalies.py", "Anomalies", ":material/report:",
     "which images the model explains worst (−ELBO, IWAE), and a held-out-class ROC"),
    ("app_pages/1_Train.py", "Train", ":material/model_training:",
     "train your own model with live curves (or the PyTorch tutorial's recipe)"),
    ("app_pages/5_Collapse_lab.py", "Collapse lab", ":material/compress:",
     "β-VAE, free bits and KL warm-up side by side: posterior collapse and how to prevent it"),
    ("app_pages/6_Collapse_demo.py", "Collapse demo", ":material/slideshow:",
     "for a lecture: a run collapsing beside the same run cured, epoch by epoch, with a presentation mode"),
]
for path, title, icon, what in NEXT:
    left, right = st.columns([1, 4], vertical_alignment="center")
    widgets.page_link(left, path, title, icon)
    right.caption(what)
