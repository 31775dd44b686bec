"""Anomalies: per-image scores of the test set, the flagged images, and the held-out-class experiment."""
import numpy as np
import streamlit as st

from vae_core import pictures, plots
from vae_core.anomaly import threshold_flags, top_k
from vae_core.config import ModelConfig, TrainConfig
from vae_core.export import latents_table
from vae_core.jobs import CANCELLED, FAILED, format_duration
from vae_core.runs import DONE, RunLimitError, RunSpec
from vae_core.store import DataRef
from vae_core.ui import cache, jobs, state, widgets
from vae_core.ui.text import plain

widgets.page_header(
    "Anomalies",
    "An image the model explains badly gets a high score: its −ELBO (nats; an upper bound on −log p(x)), its "
    "reconstruction error, or the tighter IWAE bound with k importance samples. Move the threshold to flag the "
    "tail of the histogram and inspect those images next to their reconstructions. The held-out-class "
    "experiment trains a quick model without one class and asks how well the score separates that class "
    "(AUROC 1 = perfectly, 0.5 = chance).",
    r"\text{score}(x)=-\mathrm{ELBO}(x)=-\mathbb E_{q(z|x)}[\log p(x|z)]+\mathrm{KL}(q(z|x)\,\|\,p(z))"
    r"\;\ge\;-\log\tfrac1k\textstyle\sum_{i=1}^k\frac{p(x,z_i)}{q(z_i|x)}\;\ge\;-\log p(x)",
)

IWAE_AUTOSTART_S = 3.0  # an IWAE evaluation estimated shorter than this starts without asking
HELD_OUT_KEY = "an_held_out_runs"  # {experiment key: run id}

am = widgets.require_model()
scores = cache.test_scores(am.key, am)
n = len(scores["neg_elbo"])
stem = am.file_stem
SCORES = {"neg_elbo": "−ELBO (nats)", "recon": "reconstruction −log p(x|z) (nats)",
          "sq_error": "reconstruction squared error", "iwae": "IWAE NLL (nats)"}

c1, c2 = st.columns([2, 1])
which = c1.radio("Score", list(SCORES), format_func=SCORES.get, horizontal=True, key="an_score")
values = scores.get(which)
if which == "iwae":
    k = int(c2.select_slider("importance samples k", [5, 10, 50, 100, 500, 1000], value=50, key="an_k",
                             help="The cost grows linearly with k; the estimate below is measured on this machine."))
    label = f"IWAE NLL with k = {k} on {n:,} test images"
    values = None
    with widgets.guard("compute the IWAE bound"):
        job = jobs.iwae_started(am.key, k)
        if job is not None:
            values = jobs.follow(job, label)  # the result, live progress, or why it ended without one
        if job is None or job.status in (FAILED, CANCELLED):
            seconds = cache.iwae_estimate(am.key, am.model, am.data.x_test, am.labels_for_model, k)
            if job is None and seconds < IWAE_AUTOSTART_S:
                values = jobs.follow(jobs.iwae_job(am.key, am, k, seconds), label)
            else:
                st.caption(f"{label}: about **{format_duration(seconds)}** on this machine (timed on a few images); "
                           "it runs on the server, with a Cancel button.")
                if st.button(f"Compute the IWAE bound (about {format_duration(seconds)})", key="an_iwae_start",
                             icon=":material/play_arrow:"):
                    jobs.iwae_job(am.key, am, k, seconds)
                    st.rerun()  # redraw without the button: the page now follows the job
if values is None:
    st.stop()

lo, hi = float(np.min(values)), float(np.max(values))
default = float(np.quantile(values, 0.99))
if hi <= lo:
    hi = lo + 1.0
threshold = st.slider("Threshold (images above it are flagged)", lo, hi, min(max(default, lo), hi),
                      (hi - lo) / 500, key=f"an_thr_{which}", format="%.2f")
flagged = threshold_flags(values, threshold)
h1, h2 = st.columns([3, 2])
with h1:
    st.plotly_chart(plots.score_histogram(values, threshold, SCORES[which]), key="an_hist")
with h2:
    st.metric("Flagged", f"{len(flagged)} of {n:,}")
    st.caption(f"{len(flagged) / n:.1%} of the test set scores above {threshold:.2f}.")
    frame = latents_table(scores["mu"], labels=None if am.data.y_test is None else am.data.y_test.cpu().numpy(),
                          extra={"neg_elbo": scores["neg_elbo"], "recon": scores["recon"],
                                 "sq_error": scores["sq_error"], **({"iwae": values} if which == "iwae" else {})},
                          selected=flagged)
    flagged_frame = frame[frame["selected"]].drop(columns=["selected"]).set_index("index").loc[flagged].reset_index()
    st.download_button("Flagged indices and scores (CSV)", lambda: flagged_frame.to_csv(index=False).encode(),
                       file_name=f"{stem}-flagged.csv", mime="text/csv", on_click="ignore", icon=":material/download:",
                       key="an_dl_flagged", disabled=len(flagged) == 0)
    st.download_button("All scores (CSV)", lambda: frame.rename(columns={"selected": "flagged"}).to_csv(index=False).encode(),
                       file_name=f"{stem}-scores.csv", mime="text/csv", on_click="ignore", icon=":material/download:",
                       key="an_dl_all")

st.subheader("Most anomalous test images")
top = st.slider("how many", 4, 48, 16, 4, key="an_top")
with widgets.guard("show the most anomalous images"):
    idx = top_k(values, top)
    x, r = cache.reconstruct(am, idx)
    widgets.image(pictures.to_uint8(pictures.tile(pictures.pairs_picture(x, r, per_row=8)),
                                    pictures.display_scale(am.config.image_shape[1], 56)),
                  caption="inputs (upper rows) and reconstructions (lower rows), highest score first: "
                          + ", ".join(f"#{i} ({values[i]:.1f})" for i in idx))

st.divider()
st.subheader("Held-out-class experiment")
st.caption("Train a small, quick VAE on the training set with one class removed, score the whole test set with "
           "it, and measure how well each score ranks the unseen class above the rest: the ROC curve and its "
           "area (AUROC). It trains on the server like any run: you can leave the page meanwhile.")
if am.data.y_train is None:
    st.info("This dataset has no labels, so there is no class to hold out.")
    st.stop()
names = am.data.class_names or [str(c) for c in range(am.data.n_classes)]
e1, e2, e3, e4 = st.columns(4, vertical_alignment="bottom")
held = e1.selectbox("Held-out class", list(range(am.data.n_classes)), key="an_class",
                    format_func=lambda c: f"{c}: {names[c]}" if c < len(names) else str(c))
quick_default = 20 if len(am.data.x_train) < 5000 else 2
epochs = e2.number_input("epochs", 1, 100, quick_default, key="an_epochs",
                         help="Kept small on purpose: this is a quick model, not the active one.")
latent = e3.number_input("latent size", 1, 64, max(2, am.config.latent_dim), key="an_latent")
ref = DataRef.from_info(am.ckpt.dataset)
spec = RunSpec(data=DataRef(ref.name, ref.hash, exclude_class=int(held)),
               model=ModelConfig(image_shape=am.config.image_shape, latent_dim=int(latent), hidden=(256, 128)),
               train=TrainConfig(epochs=int(epochs), batch_size=128))
exp_key = (am.key, spec)
experiments = st.session_state.setdefault(HELD_OUT_KEY, {})
svc = jobs.service()
run = svc.get(experiments.get(exp_key, ""))
with widgets.guard("estimate the experiment's time"):
    est = cache.run_estimate(spec)
if e4.button(f"Train and evaluate (about {format_duration(est.seconds)})", type="primary", key="an_run",
             disabled=run is not None and not run.done):
    try:
        run = svc.submit(spec, owner=state.browser_id(), label=f"{state.url_name(am.id) or am.label}-without-{held}",
                         limited=True, expected_seconds=est.seconds)
        experiments[exp_key] = run.id
        st.rerun()  # redraw with the button disabled while the experiment runs
    except RunLimitError as err:
        st.warning(plain(err))
if run is None:
    st.info(f"Choose a class and press **Train and evaluate**: about {format_duration(est.seconds)} here "
            f"({int(epochs)} epochs × {format_duration(est.epoch_seconds)}, {est.probe_note}).")
elif not run.done:
    jobs.watch_run(run, svc, stop_label="Cancel")
elif run.status != DONE:
    st.warning(f"The experiment did not finish ({plain(run.reason or run.error or run.status)}). "
               "Press the button to run it again.")
else:
    ev = run.evaluation
    r1, r2 = st.columns([3, 2])
    if run.result is not None:  # the curves are kept in memory while the server runs; the AUROCs in the record
        r1.plotly_chart(plots.roc_figure(run.result["curves"]), key="an_roc")
    with r2:
        for name, auroc in ev["auroc"].items():
            st.metric(f"AUROC, {name}", f"{auroc:.3f}")
        st.caption(f"Class {ev['held_out']} ({names[ev['held_out']]}) is {ev['n_out']} of {n:,} test images; the "
                   f"quick model trained {len(run.history)} epoch(s) on {ev['n_train']:,} images in "
                   f"{format_duration(run.elapsed)} (test −ELBO {ev['test_elbo']:.1f} nats).")
