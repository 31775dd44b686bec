"""Anomalies: per-image scores of the test set, the flagged images, and the held-out-class experiment."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, also when this page runs alone

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from vae_core import pictures, plots  # noqa: E402
from vae_core import projection as P  # noqa: E402
from vae_core import ui  # noqa: E402

ui.page_header(
    "Anomalies",
    "An image the model explains badly gets a high score: its −ELBO (nats; an upper bound on −log p(x)), its "
    "reconstruction error, or the tighter IWAE bound with k importance samples. Move the threshold to flag the "
    "tail of the histogram and inspect those images next to their reconstructions. The held-out-class "
    "experiment trains a quick model without one class and asks how well the score separates that class "
    "(AUROC 1 = perfectly, 0.5 = chance).",
    r"\text{score}(x)=-\mathrm{ELBO}(x)=-\mathbb E_{q(z|x)}[\log p(x|z)]+\mathrm{KL}(q(z|x)\,\|\,p(z))"
    r"\;\ge\;-\log\tfrac1k\textstyle\sum_{i=1}^k\frac{p(x,z_i)}{q(z_i|x)}\;\ge\;-\log p(x)",
)

am = ui.require_model()
scores = ui.test_scores(am.key, am)
n = len(scores["neg_elbo"])
stem = am.file_stem
SCORES = {"neg_elbo": "−ELBO (nats)", "recon": "reconstruction −log p(x|z) (nats)",
          "sq_error": "reconstruction squared error", "iwae": "IWAE NLL (nats)"}

c1, c2 = st.columns([2, 1])
which = c1.radio("Score", list(SCORES), format_func=SCORES.get, horizontal=True, key="an_score")
values = scores.get(which)
if which == "iwae":
    k = c2.select_slider("importance samples k", [5, 10, 50, 100, 500, 1000], value=50, key="an_k",
                         help="Cost grows with k: k = 50 on 10,000 images takes a few seconds to a minute on a CPU.")
    with ui.guard("compute the IWAE bound"):
        values = ui.iwae_of(am.key, am, int(k))
if values is None:
    st.stop()

lo, hi = float(np.min(values)), float(np.max(values))
default = float(np.quantile(values, 0.99))
if hi <= lo:
    hi = lo + 1.0
threshold = st.slider("Threshold (images above it are flagged)", lo, hi, min(max(default, lo), hi),
                      (hi - lo) / 500, key=f"an_thr_{which}", format="%.2f")
flagged = P.threshold_flags(values, threshold)
h1, h2 = st.columns([3, 2])
with h1:
    st.plotly_chart(plots.score_histogram(values, threshold, SCORES[which]), key="an_hist")
with h2:
    st.metric("Flagged", f"{len(flagged)} of {n:,}")
    st.caption(f"{len(flagged) / n:.1%} of the test set scores above {threshold:.2f}.")
    frame = P.latents_table(scores["mu"], labels=None if am.data.y_test is None else am.data.y_test.cpu().numpy(),
                            extra={"neg_elbo": scores["neg_elbo"], "recon": scores["recon"],
                                   "sq_error": scores["sq_error"], **({"iwae": values} if which == "iwae" else {})},
                            selected=flagged)
    flagged_frame = frame[frame["selected"]].drop(columns=["selected"]).set_index("index").loc[flagged].reset_index()
    st.download_button("Flagged indices and scores (CSV)", lambda: flagged_frame.to_csv(index=False).encode(),
                       file_name=f"{stem}-flagged.csv", mime="text/csv", on_click="ignore", icon=":material/download:", key="an_dl_flagged",
                       disabled=len(flagged) == 0)
    st.download_button("All scores (CSV)", lambda: frame.rename(columns={"selected": "flagged"}).to_csv(index=False).encode(),
                       file_name=f"{stem}-scores.csv", mime="text/csv", on_click="ignore", icon=":material/download:", key="an_dl_all")

st.subheader("Most anomalous test images")
top = st.slider("how many", 4, 48, 16, 4, key="an_top")
with ui.guard("show the most anomalous images"):
    idx = P.top_k(values, top)
    x, r = ui.reconstruct(am, idx)
    ui.image(pictures.to_uint8(pictures.tile(pictures.pairs_picture(x, r, per_row=8)), pictures.display_scale(am.config.image_shape[1], 56)),
             caption="inputs (upper rows) and reconstructions (lower rows), highest score first: "
                     + ", ".join(f"#{i} ({values[i]:.1f})" for i in idx))

st.divider()
st.subheader("Held-out-class experiment")
st.caption("Train a small, quick VAE on the training set with one class removed, score the whole test set with "
           "it, and measure how well each score ranks the unseen class above the rest: the ROC curve and its "
           "area (AUROC).")
if am.data.y_train is None:
    st.info("This dataset has no labels, so there is no class to hold out.")
    st.stop()
names = am.data.class_names or [str(c) for c in range(am.data.n_classes)]
e1, e2, e3, e4 = st.columns(4)
held = e1.selectbox("Held-out class", list(range(am.data.n_classes)), key="an_class",
                    format_func=lambda c: f"{c}: {names[c]}" if c < len(names) else str(c))
quick_default = 20 if len(am.data.x_train) < 5000 else 2
epochs = e2.number_input("epochs", 1, 100, quick_default, key="an_epochs",
                         help="Kept small on purpose: this is a quick model, not the active one.")
latent = e3.number_input("latent size", 1, 64, max(2, am.config.latent_dim), key="an_latent")
e4.write("")
run = e4.button("Train and evaluate", type="primary", key="an_run")
results = st.session_state.setdefault(ui.HELD_OUT, {})
exp_key = (am.dataset_name, len(am.data.x_train), int(held), int(epochs), int(latent))
if run:
    with ui.guard("run the held-out-class experiment"):
        bar = st.progress(0.0, text="training the quick model…")
        results[exp_key] = P.held_out_experiment(am.data, int(held), int(epochs), int(latent),
                                                  progress=lambda f, text: bar.progress(f, text=text))
        bar.empty()
res = results.get(exp_key)
if res is None:
    st.info("Choose a class and press **Train and evaluate** (a few seconds on digits, about a minute on "
            "Fashion-MNIST with 2 epochs).")
else:
    curves = res["curves"]
    r1, r2 = st.columns([3, 2])
    with r1:
        st.plotly_chart(plots.roc_figure(curves), key="an_roc")
    with r2:
        for name, r in curves.items():
            st.metric(f"AUROC, {name}", f"{r['auroc']:.3f}")
        st.caption(f"Class {res['held_out']} ({names[res['held_out']]}) is {res['n_out']} of {n:,} test images; "
                   f"the quick model trained {res['epochs_done']} epoch(s) on {res['n_train']:,} images "
                   f"(test −ELBO {res['test_elbo']:.1f} nats).")
        if res.get("warning"):
            st.warning(res["warning"])
