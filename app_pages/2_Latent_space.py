"""Latent space: the test set encoded by the active model, coloured, selectable, decodable, exportable."""
import numpy as np
import streamlit as st

from vae_core import pictures, plots
from vae_core.export import latents_table
from vae_core.projection import subsample
from vae_core.ui import cache, jobs, widgets

widgets.page_header(
    "Latent space",
    "Each dot is one test image placed at its posterior mean μ(x) of q(z|x). With a 2-D latent the axes are the raw "
    "latent coordinates, drawn over the prior's circles (dotted; the share of prior mass inside each) — a good "
    "model fills them without gaps; red ellipses are ±2σ of q(z|x) for the images you pick. With more dimensions "
    "a 2-D PCA or t-SNE map stands in (t-SNE keeps neighbours, not distances). Select points with the box or "
    "lasso to see them beside their reconstructions.",
    r"q_\phi(z\mid x)=\mathcal N\big(\mu_\phi(x),\operatorname{diag}\sigma^2_\phi(x)\big),\qquad p(z)=\mathcal N(0,I)",
)

am = widgets.require_model()
d = am.config.latent_dim
scores = cache.test_scores(am.key, am)
mu = scores["mu"]
n = len(mu)
labels = None if am.data.y_test is None else am.data.y_test.cpu().numpy()
class_names = am.data.class_names

COLOURS = {"label": "label", "neg_elbo": "anomaly score −ELBO (nats)", "sq_error": "reconstruction squared error",
           "recon": "reconstruction −log p(x|z) (nats)", "kl": "KL(q(z|x) ‖ p(z)) (nats)"}
if labels is None:
    COLOURS.pop("label")

c1, c2, c3 = st.columns([2, 2, 2])
views = ["raw", "PCA", "t-SNE"] if d == 2 else ["PCA", "t-SNE"]
view = c1.radio("Map", views, horizontal=True, key="ls_view",
                format_func=lambda v: {"raw": "raw z (posterior means)"}.get(v, v),
                help="PCA: a linear projection of μ. t-SNE: a non-linear map that keeps neighbourhoods.")
colour_by = c2.selectbox("Colour by", list(COLOURS), format_func=COLOURS.get, key="ls_colour")
beside = None
if d == 2:
    beside = c3.selectbox("Show beside the raw view", ["nothing", "PCA", "t-SNE"], key="ls_beside") \
        if view == "raw" else None
tsne_points, perplexity = 3000, 30.0
if view == "t-SNE" or beside == "t-SNE":
    with st.expander("t-SNE settings", expanded=False):
        tsne_points = st.select_slider("points (seeded subsample; t-SNE is slow)", [500, 1000, 2000, 3000, 5000, 10000],
                                       value=min(3000, max(500, n)) if n >= 500 else 500, key="ls_tsne_n")
        perplexity = st.slider("perplexity", 5.0, 50.0, 30.0, 5.0, key="ls_perplexity")

ellipse_ids: list[int] = []
if view == "raw":
    default_few = ", ".join(str(int(i)) for i in subsample(n, 4, seed=1))
    typed = st.text_input(f"Posterior ±2σ ellipses for test images # (comma-separated, 0…{n - 1}, at most 12)",
                          default_few, key="ls_ellipses")
    ellipse_ids = [int(t) for t in typed.replace(";", ",").split(",") if t.strip().isdigit() and int(t) < n][:12]
    if typed.strip() and len(ellipse_ids) != len([t for t in typed.split(",") if t.strip()]):
        st.caption(f"Only whole numbers from 0 to {n - 1} are used; showing {len(ellipse_ids)} ellipse(s).")
color = labels if colour_by == "label" else scores[colour_by]
point_choices = [c for c in (1000, 2000, 5000, 10000, 20000, 50000) if c < n] + [n]
if len(point_choices) > 1:
    max_points = st.select_slider("Points shown (seeded subsample of the test set)", point_choices,
                                  value=min(n, 10000), key="ls_points",
                                  format_func=lambda c: f"{c:,}" + (" (all)" if c == n else ""))
else:  # a small test set: nothing to choose
    max_points = n
    st.caption(f"All {n:,} test images are shown.")
shown_ids = subsample(n, max_points)
lab_shown = None if labels is None else labels[shown_ids]


def view_figure(kind: str, title: str | None = None):
    """(figure, ids shown) for one map; None while its t-SNE is still being computed."""
    if kind == "raw":
        ells = [(i, mu[i], plots.posterior_sigma(scores["logvar"][i])) for i in ellipse_ids]
        return plots.latent_scatter(mu[shown_ids], shown_ids, color=color[shown_ids], color_name=COLOURS[colour_by],
                                    labels=lab_shown, class_names=class_names, categorical=colour_by == "label",
                                    prior=True, ellipses=ells, title=title), shown_ids
    if kind == "PCA":
        coords, ratio = cache.pca_of(am.key, mu)
        return plots.latent_scatter(coords[shown_ids], shown_ids, color=color[shown_ids],
                                    color_name=COLOURS[colour_by], labels=lab_shown, class_names=class_names,
                                    categorical=colour_by == "label",
                                    axis_titles=(f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})"),
                                    title=title), shown_ids
    result = jobs.follow(jobs.tsne_job(am.key, mu, tsne_points, perplexity), f"t-SNE of {min(n, tsne_points):,} points")
    if result is None:
        return None
    ids, coords = result
    return plots.latent_scatter(coords, ids, color=color[ids], color_name=COLOURS[colour_by],
                                labels=None if labels is None else labels[ids], class_names=class_names,
                                categorical=colour_by == "label", axis_titles=("t-SNE 1", "t-SNE 2"),
                                equal_axes=False, title=title), ids


def selected_ids(event, ids_shown: np.ndarray) -> list[int]:
    out = []
    try:
        points = event.selection.points if event else []
    except AttributeError:
        points = []
    for p in points:
        if p.get("curve_number", 0) != 0:
            continue
        cd = p.get("customdata")
        if cd is not None:
            out.append(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
        elif p.get("point_index") is not None:
            out.append(int(ids_shown[p["point_index"]]))
    return out


selection: list[int] = []
with widgets.guard("draw the latent map"):
    kinds = [view] + ([beside] if beside and beside != "nothing" else [])
    cols = st.columns(len(kinds))
    for col, kind in zip(cols, kinds):
        with col:
            drawn = view_figure(kind, None if len(kinds) == 1 else {"raw": "raw z"}.get(kind, kind))
            if drawn is None:
                continue
            fig, shown = drawn
            event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"),
                                    key=f"ls_chart_{kind}", config={"scrollZoom": True})
        selection += selected_ids(event, shown)
selection = list(dict.fromkeys(selection))
st.caption(f"{len(shown_ids):,} of {n:,} test images · drag a box or lasso (toolbar) to select · double-click to clear.")

left, right = st.columns([3, 2])
with left:
    st.subheader(f"Selection: {len(selection)} image{'s' if len(selection) != 1 else ''}")
    if selection:
        with widgets.guard("show the selected images"):
            shown = np.array(selection[:48])
            x, r = cache.reconstruct(am, shown)
            scale = pictures.display_scale(am.config.image_shape[1], 28)
            widgets.image(pictures.to_uint8(pictures.tile(pictures.pairs_picture(x, r, per_row=12)), scale),
                     caption=f"Inputs (upper rows) and their reconstructions (lower rows), first {len(shown)} of "
                             f"{len(selection)}: " + ", ".join(f"#{i}" for i in shown[:24])
                             + ("…" if len(shown) > 24 else ""))
    else:
        st.info("Select points in the map (box or lasso in the chart's toolbar) to compare inputs and reconstructions.")

with right:
    st.subheader("Decode a latent code")
    source = st.radio("Code", ["typed coordinates", "posterior mean of a test image"], horizontal=True,
                      key="ls_decode_src")
    z = None
    if source == "typed coordinates":
        if d <= 4:
            zc = st.columns(d)
            z = np.array([zc[j].number_input(f"z{j}", -10.0, 10.0, 0.0, 0.1, key=f"ls_z{j}") for j in range(d)])
        else:
            text = st.text_input(f"z (comma-separated, {d} numbers)", ", ".join(["0"] * d), key="ls_ztext")
            try:
                z = np.array([float(v) for v in text.split(",")])
                if len(z) != d or not np.isfinite(z).all():
                    raise ValueError
            except ValueError:
                st.error(f"Type exactly {d} finite numbers separated by commas.")
                z = None
    else:
        default = selection[0] if selection else 0
        idx = st.number_input("test image #", 0, n - 1, int(default), key=f"ls_decode_idx_{default}",
                              help="Defaults to the first selected point.")
        z = mu[int(idx)]
    label = None
    if am.config.n_classes:
        label = st.selectbox("class (conditional model)", list(range(am.config.n_classes)),
                             format_func=lambda c: class_names[c] if class_names else str(c), key="ls_decode_class")
    if z is not None:
        with widgets.guard("decode the code"):
            img = cache.decode(am, z[None], label)[0]
            scale = pictures.display_scale(am.config.image_shape[1], 160)
            widgets.image(pictures.to_uint8(pictures.tile(img[None, None]), scale),
                     caption="decoded mean E[x|z] at z = (" + ", ".join(f"{v:.2f}" for v in z[:8])
                             + (", …" if d > 8 else "") + ")")

st.subheader("Export")
frame = latents_table(mu, labels=labels, extra={"neg_elbo": scores["neg_elbo"], "recon": scores["recon"],
                                                  "kl": scores["kl"], "sq_error": scores["sq_error"]},
                        selected=np.array(selection, dtype=int))
e1, e2 = st.columns(2)
e1.download_button("All latents (CSV)", lambda: frame.to_csv(index=False).encode(), file_name=f"{am.file_stem}-latents.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:", key="ls_dl_all")
e2.download_button(f"Selection only ({len(selection)} rows, CSV)",
                   lambda: frame[frame["selected"]].to_csv(index=False).encode(),
                   file_name=f"{am.file_stem}-selection.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:", disabled=not selection, key="ls_dl_sel")
