"""Latent space: every image of the active model's dataset (training and test) on one map — raw z, PCA, t-SNE or
UMAP — shown as a density picture, with each image under the pointer, an images mode, selections with their
gallery and export, a second model's map beside it, the nearest neighbours of any image, and where an image you
draw or upload lands."""
import numpy as np
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Latent space",
    "Each point is one image of the model's dataset, training and test, placed at its posterior mean μ(x) of "
    "q(z|x). With a 2-D latent the axes are the raw latent coordinates, over the prior's circles (dotted: the share "
    "of prior mass inside each) — a good model fills them without gaps; with more dimensions a PCA, t-SNE or UMAP "
    "map stands in (t-SNE and UMAP keep neighbours, not distances). Where points pile up the picture grows darker "
    "and more opaque (density, never a blot). Hover a point to see its image; **Images** shows the data itself — "
    "the image nearest each cell of a grid, beside the decoder's image at the same place; select with a box, a "
    "lasso or a click to see the images beside their reconstructions.",
    r"q_\phi(z\mid x)=\mathcal N\big(\mu_\phi(x),\operatorname{diag}\sigma^2_\phi(x)\big),\qquad p(z)=\mathcal N(0,I)",
)

controls = st.container()  # the map's settings, filled below once the model has loaded
map_area = first_paint.latent_map_area()  # the maps (a new session sees a still picture here first)

# The library: on a fresh server these wait for torch, which the page's first lines above did not need.
from vae_core import latent_map, map_server, neighbours, pictures, plots, single_image  # noqa: E402
from vae_core.data import DataError  # noqa: E402
from vae_core.estimates import encode_seconds  # noqa: E402
from vae_core.jobs import CANCELLED, FAILED, format_duration  # noqa: E402
from vae_core.latent_map import COLOURINGS, View  # noqa: E402
from vae_core.pixels import as_float  # noqa: E402
from vae_core.ui import cache, jobs, map_view, state, widgets  # noqa: E402
from vae_core.ui.text import plain, sentence  # noqa: E402

am = widgets.require_model()
d = am.config.latent_dim
shape = tuple(am.config.image_shape)  # (C, H, W)
class_names = am.data.class_names
MARK = "#000000"  # the picked image, your image, and their neighbours
SELECTED, SEQ, PAGE = "ls_selected", "ls_selection_seq", "ls_gallery_page"
PER_PAGE = 48  # images a gallery page shows, with their reconstructions
ZIP_MAX = 20_000  # images in one .zip download


def encodings_of(model, where) -> latent_map.Encodings | None:
    """Every image of `model`'s dataset encoded: at once when cached, else a job whose progress shows in `where`."""
    enc = cache.encodings(model)
    if enc is not None:
        return enc
    job = jobs.encode_started(model) or jobs.encode_job(model, cache.map_cache(model),
                                                        expected_seconds=encode_seconds(model.model, model.data))
    with where:
        enc = jobs.follow(job, job.label)
    return None if enc is None else cache.keep_encodings(model, enc)


enc = encodings_of(am, map_area)
if enc is None:
    widgets.stop()
n = enc.n
other_models = state.same_data_models(am)


# ---------------------------------------------------------------- settings

with controls:
    c1, c2, c3, c4 = st.columns([4, 3, 3, 3])
    kinds = ["raw", "PCA", "t-SNE", "UMAP"] if d == 2 else ["PCA", "t-SNE", "UMAP"]
    kind = c1.radio("Map", kinds, horizontal=True, key="ls_view",
                    format_func=lambda v: {"raw": "raw z"}.get(v, v),
                    help="PCA: a linear projection of μ. t-SNE and UMAP: non-linear maps that keep each image's "
                         "neighbours near it (UMAP is faster on many points).")
    split = c2.radio("Images", latent_map.SPLITS, horizontal=True, key="ls_split",
                     format_func={"all": "all", "train": "training", "test": "test"}.get,
                     help=f"{enc.n_train:,} training and {n - enc.n_train:,} test images.")
    compare = c4.selectbox("Beside it, the map of", [None, *other_models], key="ls_compare",
                           format_func=lambda m: "no second model" if m is None else plain(other_models[m]),
                           help="Another model trained on the same images: its map beside this one, the same images "
                                "linked (select on either, both show it).")
    colour_keys = [k for k in COLOURINGS if (k != "label" or enc.labels is not None) and (k != "delta" or compare)]
    colour_by = c3.selectbox("Colour by", colour_keys, format_func=COLOURINGS.get, key="ls_colour")
    view = View(kind)
    if view.slow:
        with st.container(border=True):
            a, b, e, f = st.columns([3, 3, 3, 3], vertical_alignment="bottom")
            choices = [c for c in (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000) if c < n] + [n]
            points = a.select_slider(f"{kind} points (seeded subsample)", choices, value=min(n, 20_000),
                                     key=f"ls_{kind}_points", format_func=lambda v: f"{v:,}" + (" (all)" if v == n else ""))
            if kind == "t-SNE":
                perplexity = b.slider("perplexity", 5.0, 50.0, 30.0, 5.0, key="ls_perplexity",
                                      help="About how many neighbours each image's place balances; t-SNE clips it "
                                           "below a third of the points.")
                view = View(kind, points=points, perplexity=perplexity)
            else:
                nn_ = b.slider("n_neighbors", 2, 100, 15, key="ls_umap_nn",
                               help="Small values keep fine local detail (and can split clusters), large ones more "
                                    "of the overall layout.")
                md = e.slider("min_dist", 0.0, 0.99, 0.1, 0.01, key="ls_umap_md",
                              help="How close images may sit: small values pack neighbours into tight clumps.")
                view = View(kind, points=points, n_neighbors=nn_, min_dist=round(md, 2))
            started = jobs.view_started(am, view)
            if cache.view_coords(am, enc, view) is None and (started is None or started.status in (FAILED, CANCELLED)):
                if f.button(f"Compute the {kind} map", key="ls_view_go", type="primary",
                            icon=":material/scatter_plot:"):
                    jobs.view_job(am, enc, view, cache.map_cache(am))
                    st.rerun()
                st.caption(f"{view.label(n)}: about **{format_duration(view.seconds(n))}** here. It runs on the server "
                           "in the background (leave the page if you like, or cancel it), and is kept in the "
                           "workspace: reopening this model shows it at once.")


def current_selection(maps: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The selected rows: the newest selection made on any of the maps (read before they are drawn), else the one
    this session kept."""
    seq = st.session_state.get(SEQ, 0)
    for key, point_rows in maps:
        sel = map_view.selection_of(key)
        if sel and sel.get("seq", 0) > seq:
            seq = sel["seq"]
            st.session_state[SELECTED] = latent_map.bits_to_rows(sel.get("bits", ""), point_rows)
            st.session_state[SEQ] = seq
            st.session_state[PAGE] = 1
    return st.session_state.get(SELECTED, np.zeros(0, dtype=np.int64))


def view_of(model, model_enc: latent_map.Encodings, where):
    """(rows, coords) of the chosen view of one model: at once when cached, else its job followed in `where` (the
    second model's starts with the first's), else None."""
    found = cache.view_coords(model, model_enc, view)
    if found is not None:
        return found
    started = jobs.view_started(model, view)
    if started is None:
        if model is am:
            with where:
                st.info(f"Set the {kind} map's settings above and press **Compute the {kind} map**.")
            return None
        started = jobs.view_job(model, model_enc, view, cache.map_cache(model))
    with where:
        found = jobs.follow(started, started.label)
    return None if found is None else cache.keep_view(model, view, found)


# ---------------------------------------------------------------- the maps

second = state.open_model(compare) if compare else None
enc_b = None
with map_area:
    columns = st.columns(2) if second is not None else [st.container()]
    shown_a = view_of(am, enc, columns[0])
    if second is not None and second.data is not None:
        enc_b = encodings_of(second, columns[1])
    shown_b = None if enc_b is None else view_of(second, enc_b, columns[1])

# Without the chosen view yet (a t-SNE or UMAP not computed), the rest of the page goes on without its map: its
# widgets (your drawing, the picked image) must not be dropped by a run that skips them.
rows_a, coords_a = shown_a if shown_a is not None else (enc.rows(), np.zeros((n, 2)))
in_split = np.isin(rows_a, enc.rows(split)) if split != "all" else np.ones(len(rows_a), bool)
rows_a, coords_a = rows_a[in_split], coords_a[in_split]
alignment = None
if shown_b is not None:
    rows_b, coords_b = shown_b
    keep_b = np.isin(rows_b, rows_a)
    rows_b, coords_b = rows_b[keep_b], coords_b[keep_b]
    if shown_a is not None and np.array_equal(rows_a, rows_b) and len(rows_a) > 2:  # the same images: align B to A
        coords_b, alignment = latent_map.procrustes(coords_a, coords_b)
selection = current_selection(([("ls_map_a", rows_a)] if shown_a is not None else [])
                              + ([("ls_map_b", rows_b)] if shown_b is not None else []))
if len(selection) == 1 and st.session_state.get("ls_picked_seq") != st.session_state.get(SEQ):  # a click picks
    st.session_state["ls_picked"], st.session_state["ls_picked_seq"] = int(selection[0]), st.session_state.get(SEQ)
    st.session_state["ls_show_picked"] = True
picked = min(n - 1, int(st.session_state.setdefault("ls_picked", int(rows_a[0]))))
show_picked = st.session_state.get("ls_show_picked", False)  # marked on the map once the user has picked one
k_nn = min(int(st.session_state.get("ls_nn_k", 8)), n - 1)
nn_idx, nn_dist = neighbours.nearest(enc.mu, picked, k_nn)


def marks_for(point_rows, coords, model_enc, moved: dict | None) -> tuple[list[dict], list[dict]]:
    """The picked image (×, with its ±2σ ellipse on raw and PCA maps) and its neighbours (circles) on one map, once
    the user has picked one (a click on the map, or its number below)."""
    if not show_picked:
        return [], []
    marks = [dict(x=float(x), y=float(y), symbol="o", colour=MARK)
             for x, y in latent_map.where_on_map(point_rows, coords, nn_idx)]
    outlines = []
    for x, y in latent_map.where_on_map(point_rows, coords, [picked]):
        marks.append(dict(x=float(x), y=float(y), symbol="x", colour=MARK, text=f"#{picked}"))
        sigma = np.exp(0.5 * model_enc.logvar[picked])
        if kind in ("raw", "PCA"):
            w = None if kind == "raw" else cache.pca_plane(am.key if model_enc is enc else second.key, model_enc).w
            ellipse = latent_map.covariance_outline((0.0, 0.0), w, sigma)  # in the model's own map, about its centre
            if moved is not None:  # … turned and scaled as the second map was
                ellipse = moved["scale"] * ellipse @ moved["rotation"]
            outlines.append(dict(points=(ellipse + (x, y)).tolist(), colour="#d62728"))
    return marks, outlines


def draw_map(key: str, model, model_enc, point_rows, coords, title: str | None):
    """Mount one map: its points (sent once), colours, legend, the selection, marks, and the image routes."""
    ident = (model.digest, latent_map.dataset_id(model.data), view, split)
    pair = (am.key, second.key, enc, enc_b) if colour_by == "delta" else None
    colours, legend = cache.map_colouring((model.key, view, split), colour_by, model_enc, point_rows, class_names,
                                          pair)
    images_url = decode_url = None
    if map_server.mounted():
        images_url = map_server.publish_images(("images", latent_map.dataset_id(model.data)),
                                               lambda r: latent_map.dataset_images(model.data, r))
        if kind in ("raw", "PCA") and not model.config.autoregressive:
            plane = None if kind == "raw" else cache.pca_plane(model.key, model_enc)
            decode_url = map_server.publish_decoder(("decode", model.digest, kind),
                                                    latent_map.decoder_at(model.model, plane))
    bits, count = map_view.highlight(selection, point_rows)
    moved = alignment if model is not am else None
    marks, outlines = marks_for(point_rows, coords, model_enc, moved)
    rings = kind == "raw" and (moved is None or {"x": float(moved["shift"][0]), "y": float(moved["shift"][1]),
                                                  "scale": moved["scale"]})  # the prior, moved with its map
    side = max(shape[1], shape[2])
    return map_view.show(key, {
        "map_id": map_server.token(ident), "title": title,
        "points": map_view.blob(("points",) + ident, lambda: latent_map.points_payload(model_enc, point_rows, coords)),
        "colours": colours, "legend": legend, "value_name": None if colour_by == "label" else COLOURINGS[colour_by],
        "class_names": list(class_names) if class_names else None,
        "axes": {"raw": ["z0", "z1"], "PCA": ["PC1", "PC2"]}.get(kind, [f"{kind} 1", f"{kind} 2"]),
        "equal": kind in ("raw", "PCA"), "rings": rings, "height": 560 if second is None else 480,
        "images_url": images_url, "decode_url": decode_url, "image_px": max(40, min(64, 2 * side)),
        "hover_px": pictures.display_scale(side, 96) * side,
        "highlight": bits, "highlight_count": count, "selection_seq": st.session_state.get(SEQ, 0),
        "marks": marks, "outlines": outlines,
    })


with map_area, widgets.guard("draw the latent map"):
    title_a = None if second is None else plain(am.label)
    with columns[0]:
        if shown_a is not None:
            draw_map("ls_map_a", am, enc, rows_a, coords_a, title_a)
    if second is not None:
        with columns[1]:
            if second.data is None:
                st.warning(f"{plain(second.label)}'s images are not available here.")
            elif shown_b is not None:
                draw_map("ls_map_b", second, enc_b, rows_b, coords_b, plain(second.label))
    how = {"raw": "raw posterior means", "PCA": "PCA of the posterior means"}.get(kind, view.label(n))
    aligned = ""
    if alignment is not None:
        aligned = (f" The second map is turned{' and mirrored' if alignment['reflection'] else ''} and scaled "
                   f"(×{alignment['scale']:.2f}) onto the first by an orthogonal Procrustes fit over the same "
                   f"{len(rows_a):,} images; what remains apart is {alignment['disparity']:.0%} of the first map's "
                   "spread (0: the same map).")
    images_note = "" if map_server.mounted() else (" The images on hover and the images mode need the app's server "
                                                   "(`streamlit run serve.py`, which `make run` starts).")
    if shown_a is not None:
        st.caption(f"{len(rows_a):,} of {n:,} images ({how}) · hover a point to see it · Box or Lasso, then drag to "
                   "select (Shift adds), click a point to pick it, double-click or Esc to clear · wheel to zoom, Pan "
                   f"to move · **Images**: the data's own lattice beside the decoder's.{aligned}{images_note}")


# ---------------------------------------------------------------- the selection

st.subheader(f"Selection: {len(selection):,} image{'s' if len(selection) != 1 else ''}")
if not len(selection):
    st.info("Select images on the map (Box or Lasso in its toolbar, or click one) to see them beside their "
            "reconstructions, count them per class and download them.")
else:
    with widgets.guard("show the selected images"):
        left, right = st.columns([3, 1])
        pages = (len(selection) + PER_PAGE - 1) // PER_PAGE
        with left:
            page = 1
            if pages > 1:
                page = int(st.number_input(f"page (of {pages:,}, {PER_PAGE} images each)", 1, pages,
                                           min(pages, int(st.session_state.get(PAGE, 1))), key=PAGE))
            part = selection[(page - 1) * PER_PAGE: page * PER_PAGE]
            x, r = latent_map.reconstructions(am.model, am.data, part)
            scale = pictures.display_scale(shape[1], 28)
            widgets.image(pictures.to_uint8(pictures.tile(pictures.pairs_picture(x, r, per_row=12)), scale),
                          caption=f"Inputs (upper rows) and their reconstructions at z = μ(x) (lower rows): images "
                                  f"{(page - 1) * PER_PAGE + 1:,}–{(page - 1) * PER_PAGE + len(part):,} of "
                                  f"{len(selection):,} (rows " + ", ".join(f"#{i}" for i in part[:12])
                                  + ("…" if len(part) > 12 else "") + ")")
        with right:
            counts = latent_map.label_counts(enc.labels, selection, class_names)
            if counts:
                st.plotly_chart(plots.count_bars(counts), key="ls_counts", config={"displayModeBar": False})
            tested = int(enc.is_test(selection).sum())
            st.caption(f"{len(selection) - tested:,} training and {tested:,} test images; mean −ELBO "
                       f"{float(enc.neg_elbo[selection].mean()):.1f} nats (all: {float(enc.neg_elbo.mean()):.1f}).")
        e1, e2 = st.columns(2)
        sources = cache.sources(am)
        e1.download_button(f"Selection: ids and codes ({len(selection):,} rows, CSV)",
                           lambda: cache.map_csv(am, enc, selection, sources), file_name=f"{am.file_stem}-selection.csv",
                           mime="text/csv", on_click="ignore", icon=":material/download:", key="ls_dl_sel")
        zipped = selection[:ZIP_MAX]
        job = jobs.zip_job(am, zipped) if e2.button(f"Zip the {len(zipped):,} selected images (PNG)", key="ls_zip",
                                                    icon=":material/folder_zip:") else jobs.zip_started(am, zipped)
        if job is not None:
            blob = jobs.follow(job, job.label)
            if blob is not None:
                e2.download_button(f"Download the zip ({len(blob) / 2**20:,.1f} MB)", blob,
                                   file_name=f"{am.file_stem}-selection.zip", mime="application/zip",
                                   on_click="ignore", icon=":material/download:", key="ls_dl_zip")
        if len(selection) > ZIP_MAX:
            e2.caption(f"The zip holds the first {ZIP_MAX:,} selected images.")


# ---------------------------------------------------------------- nearest neighbours

def label_of(row: int) -> str:
    if enc.labels is None:
        return "no label"
    k = int(enc.labels[row])
    return plain(class_names[k]) if class_names is not None and k < len(class_names) else str(k)


def gallery(rows, captions: list[str], per_row: int = 9, side: int = 72) -> None:
    """Dataset rows as pictures in rows of equal columns, each with its caption under it."""
    images = as_float(latent_map.dataset_images(am.data, np.asarray(rows)))  # (k, C, H, W) in [0, 1]
    pics = [pictures.to_uint8(pictures.tile(img[None, None]), pictures.display_scale(shape[2], side)) for img in images]
    for start in range(0, len(pics), per_row):
        for col, pic, cap in zip(st.columns(per_row), pics[start:start + per_row], captions[start:start + per_row]):
            with col:
                widgets.image(pic, caption=cap, width=pic.shape[1])


def split_of(row: int) -> str:
    return "test" if row >= enc.n_train else "train"


st.subheader("Nearest neighbours in latent space")
a, b = st.columns([1, 2])
a.number_input(f"image # (0…{n - 1:,}; a click on the map picks one)", 0, n - 1, key="ls_picked",
               on_change=lambda: st.session_state.update(ls_show_picked=True))
b.slider("neighbours k", 1, min(24, n - 1), k_nn, key="ls_nn_k")
with widgets.guard("show the nearest neighbours"):
    gallery([picked, *nn_idx], [f"#{picked} · {label_of(picked)}  \npicked ({split_of(picked)})"]
            + [f"#{j} · {label_of(j)}  \nd = {dist:.3f}" for j, dist in zip(nn_idx, nn_dist)])
    same = "" if enc.labels is None else (f" {int((enc.labels[nn_idx] == enc.labels[picked]).sum())} of {k_nn} share "
                                          f"its label ({label_of(picked)}).")
    where = "circled on the map" if show_picked else "marked on the map once you pick an image"
    st.caption(f"The {k_nn} images whose posterior means are closest to #{picked}'s among all {n:,} (Euclidean "
               f"distance d in the {d}-D latent space, nearest first; the image itself left out), {where}.{same}")


# ---------------------------------------------------------------- decoding a code

st.subheader("Decode a latent code")
source = st.radio("Code", ["typed coordinates", "posterior mean of an image"], horizontal=True, key="ls_decode_src")
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
    idx = st.number_input("image #", 0, n - 1, picked, key=f"ls_decode_idx_{picked}",
                          help="Defaults to the picked image.")
    z = enc.mu[int(idx)]
label = None
if am.config.n_classes:
    label = st.selectbox("class (conditional model)", list(range(am.config.n_classes)),
                         format_func=lambda c: class_names[c] if class_names else str(c), key="ls_decode_class")
if z is not None:
    with widgets.guard("decode the code"):
        img = cache.decode(am, z[None], label)[0]
        scale = pictures.display_scale(shape[1], 160)
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
                    help="The default draws strokes about as wide as those of the dataset's images.")
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
    how = (f"Drawn {'white on black' if bright_on_dark else 'black on white'}, like the dataset's images (their "
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
                            help="auto: inverted when the image's background (its border) is light and the dataset's "
                                 "is dark, or the other way round.")
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
              f"the dataset's is {'dark' if background < 0.5 else 'light'}" if prepared.inverted else "")
           + "; values in [0, 1].")
    if single_image.is_blank(prepared.x):
        st.warning(f"{plain(up.name)} is one flat grey level at {shape[2]}×{shape[1]}: there is nothing for the "
                   "model to see. Upload another image.")
        return None, None
    return prepared.x, how


@st.fragment
def own_image() -> None:
    """Draw (grey datasets) or upload an image and see where it lands: its posterior mean and ±2σ ellipse on the
    raw (or PCA) map, its reconstruction, its −ELBO and percentile, its nearest images. A fragment: drawing reruns
    this part only, so the page's maps are not redrawn on every stroke."""
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
        c_out.info(f"Draw a {thing} on the canvas, large and centred like the dataset's images: its reconstruction, "
                   "score and place on the map appear here as you draw." if mode == "draw" else
                   "Upload an image: its reconstruction, score and place on the map appear here.")
        return
    c_in.caption(how)
    with widgets.guard("score your image"):
        s = single_image.score(am.model, x, own_label)
        test_scores = enc.neg_elbo[enc.rows("test")]
        share = single_image.percentile(s["neg_elbo"], test_scores)
        with c_out:
            widgets.image([pictures.to_uint8(pictures.tile(img[None, None]), pictures.display_scale(shape[2], 112))
                           for img in (x, s["recon_image"])],
                          caption=[f"your image at {shape[2]}×{shape[1]}", "its reconstruction"])
            st.metric("−ELBO (nats)", f"{s['neg_elbo']:.1f}",
                      help="The anomaly score: reconstruction −log p(x|z) + KL(q(z|x) ‖ p(z)), one posterior "
                           "sample, as for the dataset's images.")
            unusual = " — unusual for this model" if share >= 0.95 else ""
            if share <= 0.05:
                unusual = (" — the model finds it easy to describe, as it does any simple image with large flat "
                           "areas, even one unlike its data (Nalisnick et al. 2019; see the Anomalies page)")
            st.caption(f"Higher than {share:.0%} of the {len(test_scores):,} test images' −ELBO (reconstruction "
                       f"{s['recon']:.1f} + KL {s['kl']:.1f} nats){unusual}.")
        near, dist = neighbours.nearest(enc.mu, s["mu"], 6)
        sigma = np.exp(0.5 * np.asarray(s["logvar"], float))
        on_raw = kind == "raw" or (d == 2 and kind != "PCA")
        own_view = View("raw" if on_raw else "PCA")
        point_rows, coords = cache.view_coords(am, enc, own_view)
        plane = None if on_raw else cache.pca_plane(am.key, enc)
        xy = s["mu"][:2] if on_raw else plane.to_map(s["mu"])[0]
        own_marks = [dict(x=float(u), y=float(v), symbol="o", colour=MARK) for u, v in
                     latent_map.where_on_map(point_rows, coords, near)]
        own_marks.append(dict(x=float(xy[0]), y=float(xy[1]), symbol="x", colour=MARK, text="yours"))
        outline = latent_map.covariance_outline(xy, None if on_raw else plane.w, sigma)
        with c_map:
            ident = (am.digest, latent_map.dataset_id(am.data), own_view, "all")
            colours, legend = cache.map_colouring((am.key, own_view, "all"), "label" if enc.labels is not None
                                                  else "neg_elbo", enc, point_rows, class_names)
            map_view.show("ls_own_map", {
                "map_id": map_server.token(("own",) + ident),
                "points": map_view.blob(("points",) + ident,
                                        lambda: latent_map.points_payload(enc, point_rows, coords)),
                "colours": colours, "legend": legend, "class_names": list(class_names) if class_names else None,
                "axes": ["z0", "z1"] if on_raw else ["PC1", "PC2"], "equal": True, "rings": on_raw, "height": 420,
                "marks": own_marks, "outlines": [dict(points=outline.tolist(), colour="#d62728")],
                "images_url": None, "decode_url": None, "highlight": None, "selection_seq": 0, "selectable": False})
            where = "raw z" if on_raw else "PCA (the same projection as the map above)"
            why = "" if kind in ("raw", "PCA") else (f" The {kind} map places only the images it was computed on (it "
                                                      "keeps no mapping for new ones), so yours is shown on the "
                                                      f"{where} map.")
            st.caption(f"Black ×: your image's posterior mean, with the ±2σ ellipse of q(z|x)"
                       f"{'' if on_raw else ' projected'}; circles: its 6 nearest images; {where}.{why}")
        st.markdown("**Its nearest images** (posterior means closest to yours)")
        gallery(near, [f"#{j} · {label_of(j)}  \nd = {dist_:.3f}" for j, dist_ in zip(near, dist)])


own_image()


# ---------------------------------------------------------------- export

st.subheader("Export")
st.download_button(f"Every image's code and scores ({n:,} rows, CSV)",
                   lambda: cache.map_csv(am, enc, enc.rows(), cache.sources(am)),
                   file_name=f"{am.file_stem}-latents.csv", mime="text/csv", on_click="ignore",
                   icon=":material/download:", key="ls_dl_all")
st.caption("One line per image: its row, split and index within it, its source (file name or position in your "
           "file, for your own data), label, posterior mean and log-variance per dimension, and −ELBO, "
           "reconstruction term, KL and squared error (nats).")
