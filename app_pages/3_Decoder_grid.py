"""Decoder grid: decoded lattices over two latent dimensions, interpolations, prior samples."""
import numpy as np
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Decoder grid",
    "Each cell is the decoder's mean image E[x|z] at one point of a lattice over two latent dimensions (Kingma & "
    "Welling 2014, fig. 4). With quantile spacing the cells sit at prior quantiles, so each holds equal prior "
    "mass; the orange–red contour is the density of the encoded test images (the aggregate posterior): cells "
    "the contour leaves empty are regions the prior covers but no data maps to — 'holes', where the decoder's "
    "output is least trustworthy.",
    r"z_{ij}=\big(\Phi^{-1}(p_i),\,\Phi^{-1}(p_j)\big),\quad p\in[0.025,\,0.975]\qquad\text{cell}=\mathbb E[x\mid z_{ij}]",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
from vae_core import pictures, plots  # noqa: E402
from vae_core.decoding import decode_lattice, interpolate, lattice_axis, lattice_value  # noqa: E402
from vae_core.ui import cache, widgets  # noqa: E402
from vae_core.ui.text import plain  # noqa: E402

am = widgets.require_model(need_data=False)
cfg = am.config
d = cfg.latent_dim
has_data = am.data is not None
if not has_data:
    widgets.missing_data_panel(am)
    st.caption("Until the test images are attached, the density overlay, reference images and interpolations are "
               "off; the lattice and prior samples need only the decoder.")
class_names = am.data.class_names if has_data and am.data.class_names else \
    [str(c) for c in range(max(cfg.n_classes, 1))]
scale = pictures.display_scale(cfg.image_shape[1], 28)
stem = am.file_stem

tab_grid, tab_interp, tab_samples = st.tabs(["Lattice", "Interpolation", "Prior samples"])

with tab_grid:
    c1, c2, c3, c4 = st.columns(4)
    size = c1.slider("Grid size (cells per side)", 2, 30, 15, key="dg_size")
    spacing = c2.radio("Spacing", ["quantile", "linear"], horizontal=True, key="dg_spacing",
                       format_func={"quantile": "prior quantiles", "linear": "linear range"}.get)
    if spacing == "quantile":
        coverage = c3.slider("Central prior mass covered", 0.50, 0.999, 0.95, 0.005, key="dg_coverage",
                             help="The outermost cells sit at the (1−m)/2 and (1+m)/2 quantiles.")
        span = 3.0
    else:
        span = c3.slider("Range ±", 0.5, 6.0, 3.0, 0.25, key="dg_span")
        coverage = 0.95
    overlay = c4.checkbox("Density overlay", value=has_data, disabled=not has_data,
                          key="dg_overlay",
                          help="Contours of a kernel density estimate of the encoded test means μ(x).")
    dims, reference = (0, 1), None
    if d > 2:
        r1, r2, r3 = st.columns(3)
        dx = r1.selectbox("Horizontal dimension", list(range(d)), 0, key="dg_dx", format_func=lambda j: f"z{j}")
        dy = r2.selectbox("Vertical dimension", [j for j in range(d) if j != dx], 0, key="dg_dy",
                          format_func=lambda j: f"z{j}")
        dims = (dx, dy)
        ref_kind = r3.radio("Other dimensions fixed at", ["origin", "a test image's μ"], horizontal=True,
                            key="dg_refkind", disabled=not has_data)
        if ref_kind != "origin" and has_data:
            ref_idx = st.number_input("reference test image #", 0, len(am.data.x_test) - 1, 0, key="dg_refidx")
            reference = cache.test_scores(am.key, am)["mu"][int(ref_idx)]
    elif d == 1:
        st.info("This model has a 1-D latent: the grid's rows repeat.")
    per_class = False
    labels_to_draw = [None]
    if cfg.n_classes:
        per_class = st.toggle("One grid per class (conditional VAE)", value=False, key="dg_perclass")
        if per_class:
            labels_to_draw = list(range(cfg.n_classes))
        else:
            labels_to_draw = [st.selectbox("class", list(range(cfg.n_classes)), key="dg_class",
                                           format_func=lambda c: class_names[c] if c < len(class_names) else str(c))]
    with widgets.guard("decode the lattice"):
        axis = lattice_axis(size, spacing, span, coverage)
        density = density_u = None
        if overlay and has_data:
            density_u, density = cache.lattice_density(am.key, dims, tuple(axis.tolist()),
                                                       cache.test_scores(am.key, am)["mu"])
        sub = max(1, min(4, 100 // size))  # click targets per cell and axis (at most 100 × 100 in all)
        u = (np.arange(size * sub) + 0.5) / sub - 0.5  # fractional cell positions covering the whole picture
        z_at = lattice_value(u, size, spacing, span, coverage)
        grid_col, click_col = st.columns([3, 1]) if not per_class else (st.container(), st.container())
        cols = grid_col.columns(min(len(labels_to_draw), 2 if per_class else 1))
        clicked = None  # (latent point, class) of the last click on a lattice
        for k, label in enumerate(labels_to_draw):
            images = decode_lattice(am.model, axis, axis, dims=dims, reference=reference, label=label,
                                    dtype=np.uint8)  # 8-bit: a 30×30 lattice of 256² colour images is 236 MB
            picture = pictures.tile(images)
            fig = plots.lattice_figure(picture, axis, axis, cell=cfg.image_shape[1], density=density,
                                       density_u=density_u, dims=dims, scale=scale,
                                       height=640 if not per_class else 460, targets=(u, z_at, z_at))
            with cols[k % len(cols)]:
                if label is not None:
                    st.markdown(f"**class {plain(class_names[label]) if label < len(class_names) else label}**")
                event = st.plotly_chart(fig, key=f"dg_lattice_{k}", on_select="rerun", selection_mode="points",
                                        config={"displayModeBar": False})
                points = [p for p in event.selection.points if p.get("curve_number") == len(fig.data) - 1]
                if points:  # point i of the k×k targets sits at z_at[i % k], z_at[i // k]
                    row, col = divmod(int(points[-1]["point_index"]), len(z_at))
                    clicked = ((z_at[col], z_at[row]), label)
                st.download_button(f"PNG ({size}×{size})", lambda pic=picture: pictures.png_bytes(pic, scale),
                                   file_name=f"{stem}-grid-{size}x{size}" + (f"-class{label}" if label is not None
                                                                            else "") + ".png",
                                   mime="image/png", on_click="ignore", icon=":material/download:", key=f"dg_png_{k}")

        with click_col:
            st.markdown("**Decode a point**")
            if clicked is None:
                st.caption("Click anywhere on the lattice to decode that exact latent point (hover to read it).")
            else:
                (zx, zy), label = clicked
                z = np.zeros(d) if reference is None else np.array(reference, dtype=float)
                z[dims[0]] = zx
                if d > 1:
                    z[dims[1]] = zy
                decoded = cache.decode(am, z[None], label)[0]
                widgets.image(pictures.to_uint8(pictures.tile(decoded[None, None]),
                                                pictures.display_scale(cfg.image_shape[1], 160)),
                              caption=f"E[x | z] at z{dims[0]} = {zx:.3f}, z{dims[1]} = {zy:.3f}"
                                      + (" (other dimensions as above)" if d > 2 else "")
                                      + (f", class {plain(class_names[label])}" if label is not None else ""))

with tab_interp:
    st.caption("The decoded path between the posterior means of two test images: straight (linear) and along "
               "the great circle (spherical, slerp), which keeps intermediate codes at a norm typical of the "
               "prior instead of cutting through its low-norm centre.")
    st.latex(r"\operatorname{slerp}(a,b;t)=\frac{\sin((1-t)\Omega)}{\sin\Omega}a+\frac{\sin(t\Omega)}{\sin\Omega}b,"
             r"\quad\cos\Omega=\frac{a\cdot b}{\|a\|\|b\|}")
    if not has_data:
        st.info("Interpolation needs the test images, which are unavailable for this model.")
    else:
        n_test = len(am.data.x_test)
        i1, i2, i3 = st.columns(3)
        a = i1.number_input("from test image #", 0, n_test - 1, 0, key="dg_ia")
        b = i2.number_input("to test image #", 0, n_test - 1, min(1, n_test - 1), key="dg_ib")
        steps = i3.slider("steps", 3, 20, 10, key="dg_isteps")
        with widgets.guard("interpolate"):
            mu = cache.test_scores(am.key, am)["mu"]
            label = int(am.data.y_test[int(a)]) if cfg.n_classes else None
            ends, _ = cache.reconstruct(am, np.array([int(a), int(b)]))
            rows = []
            for method in ("linear", "spherical"):
                path = interpolate(mu[int(a)], mu[int(b)], steps, method)
                rows.append(cache.decode(am, path, label))
            strip = pictures.tile(np.stack(rows))
            widgets.image(pictures.to_uint8(strip, pictures.display_scale(cfg.image_shape[1], 56)),
                     caption=f"top: linear, bottom: spherical — from #{int(a)} to #{int(b)}")
            widgets.image(pictures.to_uint8(pictures.tile(ends[None]), pictures.display_scale(cfg.image_shape[1], 56)),
                     caption="the two input images")
            st.download_button("PNG", pictures.png_bytes(strip, scale), file_name=f"{stem}-interpolation.png",
                               mime="image/png", on_click="ignore", icon=":material/download:", key="dg_interp_png")

with tab_samples:
    st.caption("Images decoded from codes drawn from the prior z ~ N(0, I). Where the aggregate posterior has "
               "holes, some samples look unlike any training image.")
    s1, s2, s3 = st.columns(3)
    count = s1.slider("samples", 5, 100, 40, 5, key="dg_ns")
    seed = s2.number_input("seed", 0, 2**31 - 1, 0, key="dg_seed")
    label = None
    if cfg.n_classes:
        label = s3.selectbox("class", list(range(cfg.n_classes)), key="dg_sclass",
                             format_func=lambda c: class_names[c] if c < len(class_names) else str(c))
    with widgets.guard("sample from the prior"):
        z = np.random.default_rng(int(seed)).standard_normal((count, d))
        picture = pictures.tile(pictures.grid_of(cache.decode(am, z, label), per_row=10 if count >= 10 else count))
        widgets.image(pictures.to_uint8(picture, pictures.display_scale(cfg.image_shape[1], 48)), caption=f"{count} prior samples, seed {seed}")
        st.download_button("PNG", pictures.png_bytes(picture, scale), file_name=f"{stem}-samples.png", mime="image/png",
                           on_click="ignore", icon=":material/download:", key="dg_samples_png")
