"""Latent space: the test set encoded by the active model, coloured, selectable, decodable, exportable; its maps
(raw, PCA, t-SNE, UMAP), the nearest neighbours of any test image, and where an image you draw or upload lands."""
import numpy as np
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Latent space",
    "Each dot is one test image placed at its posterior mean μ(x) of q(z|x). With a 2-D latent the axes are the raw "
    "latent coordinates, drawn over the prior's circles (dotted; the share of prior mass inside each) — a good "
    "model fills them without gaps; red ellipses are ±2σ of q(z|x) for the images you pick. With more dimensions "
    "a 2-D PCA, t-SNE or UMAP map stands in (t-SNE and UMAP keep neighbours, not distances). Select points with "
    "the box or lasso to see them beside their reconstructions; pick one to see its nearest neighbours; draw or "
    "upload an image to see where the encoder puts it.",
    r"q_\phi(z\mid x)=\mathcal N\big(\mu_\phi(x),\operatorname{diag}\sigma^2_\phi(x)\big),\qquad p(z)=\mathcal N(0,I)",
)

controls = st.container()  # the map's settings, filled below once the model has loaded
map_area = first_paint.latent_map_area()  # the maps (a new session sees a still picture here first)

# The library: on a fresh server these wait for torch, which the page's first lines above did not need.
from vae_core import neighbours, pictures, plots, single_image  # noqa: E402
from vae_core.data import DataError  # noqa: E402
from vae_core.export import latents_table  # noqa: E402
from vae_core.jobs import CANCELLED, FAILED, format_duration  # noqa: E402
from vae_core.projection import subsample  # noqa: E402
from vae_core.ui import cache, jobs, widgets  # noqa: E402
from vae_core.ui.text import plain, sentence  # noqa: E402

am = widgets.require_model()
d = am.config.latent_dim
shape = tuple(am.config.image_shape)  # (C, H, W)
scores = cache.test_scores(am.key, am)
mu = scores["mu"]
n = len(mu)
labels = None if am.data.y_test is None else am.data.y_test.cpu().numpy()
class_names = am.data.class_names

COLOURS = {"label": "label", "neg_elbo": "anomaly score −ELBO (nats)", "sq_error": "reconstruction squared error",
           "recon": "reconstruction −log p(x|z) (nats)", "kl": "KL(q(z|x) ‖ p(z)) (nats)"}
if labels is None:
    COLOURS.pop("label")
MAP_CHOICES = [500, 1000, 2000, 3000, 5000, 10000]  # points of a t-SNE or UMAP map (seeded subsample)
UMAP_PARAMS = "ls_umap_params"  # the settings of the UMAP map this session shows: (points, n_neighbors, min_dist)
UMAP_DEFAULTS = (min(n, 10_000), 15, 0.1)
MARK = "black"  # the picked test image, your image, and their neighbours


def label_of(i: int) -> str:
    if labels is None:
        return "no label"
    k = int(labels[i])
    return plain(class_names[k]) if class_names is not None and k < len(class_names) else str(k)


def umap_settings():
    """The UMAP settings row (set before the run: the map is computed when the button is pressed) and the job
    of the map this session shows, or None before the first press (unless that map was computed before)."""
    shown = st.session_state.get(UMAP_PARAMS, UMAP_DEFAULTS)
    with st.container(border=True):
        a, b, c, e = st.columns([3, 3, 3, 3], vertical_alignment="bottom")
        nn = a.slider("UMAP n_neighbors", 2, 100, int(shown[1]), key="ls_umap_nn",
                      help="How many nearest neighbours shape each image's place: small values keep fine local "
                           "detail (and can split clusters), large ones more of the overall layout.")
        md = b.slider("UMAP min_dist", 0.0, 0.99, float(shown[2]), 0.01, key="ls_umap_md",
                      help="How close images may sit on the map: small values pack neighbours into tight clumps, "
                           "large ones spread them evenly.")
        choices = [c_ for c_ in MAP_CHOICES if c_ < n] + ([n] if n <= MAP_CHOICES[-1] else [])
        if len(choices) > 1:
            points = c.select_slider("UMAP points (seeded subsample)", choices,
                                     value=min(choices, key=lambda v: abs(v - shown[0])), key="ls_umap_n",
                                     format_func=lambda v: f"{v:,}" + (" (all)" if v == n else ""))
        else:
            points = choices[0]
            c.caption(f"All {n:,} test images are mapped.")
        wanted = (int(points), int(nn), round(float(md), 2))
        job = jobs.umap_started(am.key, n, *shown)
        seconds, measured, first = jobs.umap_seconds(min(n, wanted[0]), wanted[1])
        need = job is None or job.status in (FAILED, CANCELLED) or wanted != tuple(shown)
        if e.button("Compute the UMAP map" if job is None else "Recompute", key="ls_umap_go",
                    type="primary" if need else "secondary", disabled=not need, icon=":material/scatter_plot:"):
            st.session_state[UMAP_PARAMS] = shown = wanted
            job = jobs.umap_job(am.key, mu, *wanted)
        if need:
            how = "measured from the last UMAP on this server" if measured else "a rough guide from a 2-core machine"
            st.caption(f"UMAP of {min(n, wanted[0]):,} points with n_neighbors = {wanted[1]}: about "
                       f"{format_duration(seconds)} ({how})"
                       + (". The first UMAP on this server also compiles its code, ~10 s of that." if first else ".")
                       + " It runs in the background: you can leave the page, and cancel it.")
    return job, shown



with controls:
    c1, c2, c3 = st.columns([3, 2, 2])
    views = ["raw", "PCA", "t-SNE", "UMAP"] if d == 2 else ["PCA", "t-SNE", "UMAP"]
    view = c1.radio("Map", views, horizontal=True, key="ls_view",
                    format_func=lambda v: {"raw": "raw z (posterior means)"}.get(v, v),
                    help="PCA: a linear projection of μ. t-SNE and UMAP: non-linear maps that keep each image's "
                         "neighbours near it (UMAP is faster on many points).")
    colour_by = c2.selectbox("Colour by", list(COLOURS), format_func=COLOURS.get, key="ls_colour")
    beside = None
    if d == 2:
        beside = c3.selectbox("Show beside the raw view", ["nothing", "PCA", "t-SNE", "UMAP"], key="ls_beside") \
            if view == "raw" else None
    tsne_points, perplexity = 3000, 30.0
    if view == "t-SNE" or beside == "t-SNE":
        with st.expander("t-SNE settings", expanded=False):
            tsne_points = st.select_slider("points (seeded subsample; t-SNE is slow)", MAP_CHOICES,
                                           value=min(3000, max(500, n)) if n >= 500 else 500, key="ls_tsne_n")
            perplexity = st.slider("perplexity", 5.0, 50.0, 30.0, 5.0, key="ls_perplexity")
    umap_job, umap_shown = (umap_settings() if "UMAP" in (view, beside) else (None, UMAP_DEFAULTS))

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


def selected_ids(event, ids_shown: np.ndarray | None) -> list[int]:
    out = []
    try:
        points = event["selection"]["points"] if event else []
    except (KeyError, TypeError, AttributeError):
        points = []
    for p in points:
        if p.get("curve_number", 0) != 0:
            continue
        cd = p.get("customdata")
        if cd is not None:
            out.append(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
        elif p.get("point_index") is not None and ids_shown is not None:
            out.append(int(ids_shown[p["point_index"]]))
    return out


kinds = [view] + ([beside] if beside and beside != "nothing" else [])
# The maps are drawn after the neighbours below (they mark the picked image), into map_area above them; what
# is selected on them is known already, from their state.
selection = list(dict.fromkeys(i for kind in kinds
                               for i in selected_ids(st.session_state.get(f"ls_chart_{kind}"), None) if 0 <= i < n))


# ---------------------------------------------------------------- nearest neighbours of a test image

def thumbnails(x: np.ndarray, side: int = 64) -> list[np.ndarray]:
    """Images (k, C, H, W) in [0, 1] as uint8 pictures about `side` pixels wide."""
    scale = pictures.display_scale(shape[2], side)
    return [pictures.to_uint8(pictures.tile(img[None, None]), scale) for img in x]


def gallery(x: np.ndarray, captions: list[str], per_row: int = 9, side: int = 72) -> None:
    """Images (k, C, H, W) in rows of equal columns, each with its caption under it."""
    pics = thumbnails(x, side)
    for start in range(0, len(pics), per_row):
        for col, pic, cap in zip(st.columns(per_row), pics[start:start + per_row], captions[start:start + per_row]):
            with col:
                widgets.image(pic, caption=cap, width=pic.shape[1])


def images_of(idx) -> np.ndarray:
    return am.data.x_test[list(map(int, idx))].cpu().numpy()  # (k, C, H, W)


st.subheader("Nearest neighbours in latent space")
picked_default = selection[0] if selection else 0
a, b = st.columns([1, 2])
picked = int(a.number_input("test image #", 0, n - 1, int(picked_default), key=f"ls_nn_idx_{picked_default}",
                            help="Select a point on the map to pick it: drag a small box around it, or choose Pan "
                                 "in the chart's toolbar and click it (of several selected, the first is used). Or "
                                 "type its number."))
k_nn = int(b.slider("neighbours k", 1, min(24, n - 1), min(8, n - 1), key="ls_nn_k"))
nn_idx, nn_dist = neighbours.nearest(mu, picked, k_nn)
with widgets.guard("show the nearest neighbours"):
    gallery(images_of([picked, *nn_idx]), [f"#{picked} · {label_of(picked)}  \npicked"]
            + [f"#{j} · {label_of(j)}  \nd = {dist:.3f}" for j, dist in zip(nn_idx, nn_dist)])
    same = "" if labels is None else (f" {int((labels[nn_idx] == labels[picked]).sum())} of {k_nn} share its "
                                      f"label ({label_of(picked)}).")
    st.caption(f"The {k_nn} test images whose posterior means are closest to #{picked}'s (Euclidean distance d in "
               f"the {d}-D latent space, nearest first; the image itself left out), marked with circles on the "
               f"map.{same}")


# ---------------------------------------------------------------- the maps

def projected_outline(center: np.ndarray, w: np.ndarray, sigma: np.ndarray, n_sigma: float = 2.0) -> np.ndarray:
    """The n_sigma contour (points, 2) of the diagonal Gaussian N(·, diag σ²) seen through the linear map W (D, 2):
    its covariance there is Wᵀ diag(σ²) W, an ellipse at any angle."""
    return plots.covariance_ellipse(center, w.T @ (np.asarray(sigma, float)[:, None] ** 2 * w), n_sigma)  # (2, 2) cov


def picked_marks(xy_of) -> list[dict]:
    """Marks for the picked image and its neighbours; `xy_of(ids)` gives the coordinates of those on the map."""
    marks = []
    where = xy_of(nn_idx)
    if len(where):
        marks.append(dict(xy=where, name=f"{k_nn} nearest to #{picked}", symbol="circle-open", size=12, colour=MARK))
    where = xy_of(np.array([picked]))
    if len(where):
        marks.append(dict(xy=where, name=f"picked #{picked}", text=[f"#{picked}"], colour=MARK, symbol="x", size=12))
    return marks


def on_map(ids_map: np.ndarray, coords: np.ndarray):
    """xy_of for a map of the rows `ids_map` (sorted): the coordinates of the asked rows that are on it."""
    def xy_of(ids):
        pos = np.searchsorted(ids_map, ids)
        ok = (pos < len(ids_map)) & (ids_map[np.minimum(pos, len(ids_map) - 1)] == ids)
        return coords[pos[ok]]
    return xy_of


def view_figure(kind: str, title: str | None = None):
    """(figure, ids shown, caption) for one map; None while its t-SNE or UMAP is still being computed."""
    if kind == "raw":
        ells = [(i, mu[i], plots.posterior_sigma(scores["logvar"][i])) for i in ellipse_ids]
        marks = picked_marks(lambda ids: mu[ids])
        marks[-1]["outline"] = plots.ellipse(mu[picked], plots.posterior_sigma(scores["logvar"][picked]), 2.0)
        return plots.latent_scatter(mu[shown_ids], shown_ids, color=color[shown_ids], color_name=COLOURS[colour_by],
                                    labels=lab_shown, class_names=class_names, categorical=colour_by == "label",
                                    prior=True, ellipses=ells, title=title, marks=marks), shown_ids, None
    if kind == "PCA":
        coords, ratio = cache.pca_of(am.key, mu)
        mean, w = cache.pca_projector(am.key, mu)
        marks = picked_marks(lambda ids: coords[ids])
        marks[-1]["outline"] = projected_outline(coords[picked], w, plots.posterior_sigma(scores["logvar"][picked]))
        return plots.latent_scatter(coords[shown_ids], shown_ids, color=color[shown_ids],
                                    color_name=COLOURS[colour_by], labels=lab_shown, class_names=class_names,
                                    categorical=colour_by == "label",
                                    axis_titles=(f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})"),
                                    title=title, marks=marks), shown_ids, None
    if kind == "t-SNE":
        result = jobs.follow(jobs.tsne_job(am.key, mu, tsne_points, perplexity),
                             f"t-SNE of {min(n, tsne_points):,} points")
        caption = None
    else:
        if umap_job is None:
            st.info("Set UMAP's two parameters above and press **Compute the UMAP map**.")
            return None
        result = jobs.follow(umap_job, umap_job.label)
        caption = (f"UMAP (McInnes, Healy & Melville 2018) of {min(n, umap_shown[0]):,} test images, n_neighbors = "
                   f"{umap_shown[1]}, min_dist = {umap_shown[2]:g}, computed in {format_duration(umap_job.elapsed)}: "
                   "it keeps each image's local neighbourhood (its nearest neighbours stay near it), but the "
                   "distances between clusters and their sizes mean little.")
    if result is None:
        return None
    ids, coords = result
    return plots.latent_scatter(coords, ids, color=color[ids], color_name=COLOURS[colour_by],
                                labels=None if labels is None else labels[ids], class_names=class_names,
                                categorical=colour_by == "label", axis_titles=(f"{kind} 1", f"{kind} 2"),
                                equal_axes=False, title=title, marks=picked_marks(on_map(ids, coords))), ids, caption


with map_area, widgets.guard("draw the latent map"):
    cols = st.columns(len(kinds))
    for col, kind in zip(cols, kinds):
        with col:
            drawn = view_figure(kind, None if len(kinds) == 1 else {"raw": "raw z"}.get(kind, kind))
            if drawn is None:
                continue
            fig, shown, caption = drawn
            st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"),
                            key=f"ls_chart_{kind}", config={"scrollZoom": True})
            if caption:
                st.caption(caption)
    st.caption(f"{len(shown_ids):,} of {n:,} test images · drag a box or lasso to select (a box around one point "
               "picks it for the nearest neighbours below; or choose Pan in the toolbar and click a point) · "
               "double-click to clear.")


# ---------------------------------------------------------------- selection and decoding

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


# ---------------------------------------------------------------- your own image

OWN_CACHE = "ls_own_upload_cache"  # {(file id, polarity, model key): single_image.Prepared} of this session


def drawn_image(bright_on_dark: bool, background: float):
    """The canvas, and what is drawn on it as the model's input with a note on how it was made (None: empty)."""
    from streamlit_drawable_canvas import st_canvas  # a component: only in a running app

    width, height = single_image.canvas_size(shape)
    pen = st.slider("pen width (canvas pixels)", 4, 120, single_image.pen_width(shape), key="ls_pen",
                    help="The default draws strokes about as wide as those of the test images.")
    result = st_canvas(stroke_width=pen, stroke_color="#FFFFFF" if bright_on_dark else "#000000",
                       background_color="#000000" if bright_on_dark else "#FFFFFF", update_streamlit=True,
                       width=width, height=height, drawing_mode="freedraw", return_image_data=True,
                       key="ls_canvas")
    rgba = result.image_data if result.json_data and result.json_data.get("objects") else None
    if rgba is None:
        return None, None
    x = single_image.canvas_to_input(rgba, shape, background=0.0 if bright_on_dark else 1.0)
    if single_image.is_blank(x):
        return None, None
    how = (f"Drawn {'white on black' if bright_on_dark else 'black on white'}, like the test images (their "
           f"background, the median of their border pixels, is {background:.2f}: "
           f"{'bright objects on a dark background' if bright_on_dark else 'dark objects on a light background'}), "
           f"shrunk from {rgba.shape[1]}×{rgba.shape[0]} to {shape[2]}×{shape[1]} by averaging the pixels each "
           "covers (antialiased), grey levels in [0, 1].")
    return x, how


def uploaded_image(background: float):
    """The uploader, and the uploaded image as the model's input with a note (None: nothing, or not usable)."""
    up = widgets.file_upload(st, "Upload one image (.png, .jpg or .jpeg)", "ls_own_upload")
    polarity = "auto"
    if shape[0] == 1:
        polarity = st.radio("grey levels", ["auto", "keep", "invert"], horizontal=True, key="ls_own_polarity",
                            help="auto: inverted when the image's background (its border) is light and the test "
                                 "images' is dark, or the other way round.")
    if up is None:
        return None, None
    memo = st.session_state.setdefault(OWN_CACHE, {})
    key = (up.file_id, polarity, am.key)
    if key not in memo:
        try:
            memo.clear()
            memo[key] = single_image.read_image(up.getvalue(), up.name, shape, background=background,
                                                invert={"auto": None, "keep": False, "invert": True}[polarity])
        except DataError as err:
            st.error(plain(sentence(err)))
            return None, None
    prepared = memo[key]
    w, h = prepared.size
    how = (f"{plain(up.name)}: {w}×{h} pixels, centre-cropped to the model's shape and "
           f"{'shrunk' if w >= shape[2] and h >= shape[1] else 'enlarged'} to {shape[2]}×{shape[1]}"
           + (", made grey" if shape[0] == 1 else ", RGB")
           + (f"; grey levels inverted, because its background is {'light' if background < 0.5 else 'dark'} and "
              f"the test images' is {'dark' if background < 0.5 else 'light'}" if prepared.inverted else "")
           + "; values in [0, 1].")
    if single_image.is_blank(prepared.x):
        st.warning(f"{plain(up.name)} is one flat grey level at {shape[2]}×{shape[1]}: there is nothing for the "
                   "model to see. Upload another image.")
        return None, None
    return prepared.x, how


@st.fragment
def own_image() -> None:
    """Draw (grey datasets) or upload an image and see where it lands: its posterior mean and ±2σ ellipse on the
    raw (or PCA) map, its reconstruction, its −ELBO and percentile, its nearest test images. A fragment: drawing
    reruns this part only, so the page's maps are not redrawn on every stroke."""
    st.subheader("Your own image: where does it land?")
    background = cache.test_background(am.key, am)
    bright_on_dark = background < 0.5
    modes = ["upload", "draw"] if shape[0] == 1 else ["upload"]  # the canvas loads only when asked for
    top = st.columns([2, 2, 3])
    mode = top[0].radio("Image", modes, horizontal=True, key="ls_own_mode",
                        format_func={"draw": "draw one", "upload": "upload a PNG/JPEG"}.get) \
        if len(modes) > 1 else "upload"
    own_label = None
    if am.config.n_classes:
        own_label = top[1].selectbox("its class (the conditional model encodes an image with its label)",
                                     list(range(am.config.n_classes)), key="ls_own_class",
                                     format_func=lambda c: plain(class_names[c]) if class_names else str(c))
    c_in, c_out, c_map = st.columns([2, 2, 4])
    with c_in:
        x, how = drawn_image(bright_on_dark, background) if mode == "draw" else uploaded_image(background)
    if x is None:
        thing = "digit" if am.dataset_name in ("digits", "mnist") else "picture"
        c_out.info(f"Draw a {thing} on the canvas, large and centred like the test images: its reconstruction, "
                   "score and place on the map appear here as you draw." if mode == "draw" else
                   "Upload an image: its reconstruction, score and place on the map appear here.")
        return
    c_in.caption(how)
    with widgets.guard("score your image"):
        s = single_image.score(am.model, x, own_label)
        share = single_image.percentile(s["neg_elbo"], scores["neg_elbo"])
        with c_out:
            widgets.image(thumbnails(np.stack([x, s["recon_image"]]), 112),
                          caption=[f"your image at {shape[2]}×{shape[1]}", "its reconstruction"])
            st.metric("−ELBO (nats)", f"{s['neg_elbo']:.1f}",
                      help="The anomaly score: reconstruction −log p(x|z) + KL(q(z|x) ‖ p(z)), one posterior "
                           "sample, as for the test images.")
            unusual = " — unusual for this model" if share >= 0.95 else ""
            if share <= 0.05:
                unusual = (" — the model finds it easy to describe, as it does any simple image with large flat "
                           "areas, even one unlike its data (Nalisnick et al. 2019; see the Anomalies page)")
            st.caption(f"Higher than {share:.0%} of the {n:,} test images' −ELBO (reconstruction "
                       f"{s['recon']:.1f} + KL {s['kl']:.1f} nats){unusual}.")
        near, dist = neighbours.nearest(mu, s["mu"], 6)
        sigma = plots.posterior_sigma(s["logvar"])
        map_kind = view if view in ("raw", "PCA") else ("raw" if d == 2 else "PCA")
        if map_kind == "raw":
            xy, outline, pts = s["mu"][:2], plots.ellipse(s["mu"], sigma, 2.0), mu[shown_ids]
            near_xy, axes = mu[near], ("z0", "z1")
        else:
            coords, ratio = cache.pca_of(am.key, mu)
            mean, w = cache.pca_projector(am.key, mu)
            xy = (s["mu"] - mean) @ w
            outline, pts, near_xy = projected_outline(xy, w, sigma), coords[shown_ids], coords[near]
            axes = (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})")
        marks = [dict(xy=near_xy, name="its 6 nearest test images", symbol="circle-open", size=12, colour=MARK),
                 dict(xy=xy, name="your image", colour=MARK, symbol="x", size=16, edge="white", edge_width=1,
                      outline=outline)]
        with c_map:
            fig = plots.latent_scatter(pts, shown_ids, color=color[shown_ids], color_name=COLOURS[colour_by],
                                       labels=lab_shown, class_names=class_names, categorical=colour_by == "label",
                                       axis_titles=axes, prior=map_kind == "raw", marks=marks, height=440)
            fig.update_layout(showlegend=False)  # the caption says what the marks are: more room for the map
            st.plotly_chart(fig, key="ls_own_map", config={"scrollZoom": True})
            where = "raw z" if map_kind == "raw" else "PCA (the same projection as the test images)"
            why = "" if view == map_kind else (f" The {view} map places only the images it was computed on (it "
                                               f"keeps no mapping for new ones), so yours is shown on the {where} "
                                               "map.")
            st.caption(f"Black ×: your image's posterior mean, with the ±2σ ellipse of q(z|x); circles: its 6 "
                       f"nearest test images; dotted: the prior's 1, 2 and 3σ circles ({where}).{why}"
                       if map_kind == "raw" else f"Black ×: your image's posterior mean, with the ±2σ ellipse of "
                       f"q(z|x) projected; circles: its 6 nearest test images ({where}).{why}")
        st.markdown("**Its nearest test images** (posterior means closest to yours)")
        gallery(images_of(near), [f"#{j} · {label_of(j)}  \nd = {dist_:.3f}" for j, dist_ in zip(near, dist)])


own_image()


# ---------------------------------------------------------------- export

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
