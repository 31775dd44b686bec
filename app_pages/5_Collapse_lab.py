"""Posterior-collapse lab: compare β-VAE, free bits and KL warm-up runs on the rate–distortion plane."""
from pathlib import Path

import numpy as np
import streamlit as st


SHOWN = "lab_sweep"
SECTION = "lab_section"  # the part of the lab shown: only its code runs
SECTIONS = {"overview": "Overview", "kl": "KL per dimension & replay", "pictures": "Side by side",
            "surgery": "ELBO surgery", "ppca": "pPCA"}
FORM = ("lab_dataset", "lab_download", "lab_image_size", "lab_latent", "lab_arch", "lab_epochs", "lab_betas", "lab_lams", "lab_warmups", "lab_cycles",
        "lab_capacities", "lab_targets", "lab_aggressive", "lab_ar", "lab_ntrain", "lab_name")

from vae_core.ui import first_paint

first_paint.page_header(
    "Posterior-collapse lab",
    "Each run trains the same VAE with another objective. Rate R is how many nats the code carries about an "
    "image (the KL), distortion D how badly the image is reconstructed; their sum is the −ELBO. When the "
    "KL of a latent dimension falls to 0 its posterior equals the prior: the dimension has collapsed and "
    "carries nothing. β > 1 pushes towards collapse; free bits (a floor λ on each dimension's batch-mean KL) and "
    "warm-up resist it.",
    r"-\mathrm{ELBO}=\underbrace{\mathbb E\,[-\log p(x|z)]}_{D}+\underbrace{\mathbb E\,\mathrm{KL}(q(z|x)\,\|\,p(z))}_{R}"
    r"\qquad \mathcal L_{\beta,\lambda}=D+\beta\sum_j \max\big(\lambda,\ \overline{\mathrm{KL}_j}\big)",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
import pandas as pd  # noqa: E402
from vae_core import collapse, lab_plots, pictures, plots, ppca, replay, store  # noqa: E402
from vae_core.lab_plots import run_label  # noqa: E402
from vae_core.runs import RunSpec  # noqa: E402
from vae_core.sweep import MANIFEST, SweepError, SweepSpec, collapsed_distortion, parse_values, submit_sweep  # noqa: E402
from vae_core.ui import cache, cures, jobs, state, widgets  # noqa: E402
from vae_core.ui.text import plain, sentence  # noqa: E402
state.restore_form("lab", FORM)
state.restore_form("lab-shown", (SHOWN,))
state.restore_form("lab-section", (SECTION,))
ws = store.Workspace()
svc = jobs.service(warm=True)
me = state.browser_id()
widgets.page_link(st, "app_pages/6_Collapse_demo.py", "Teaching? Open the lecture demo", ":material/slideshow:",
                  help="A run collapsing beside the same run cured, epoch by epoch, with a presentation mode (the "
                       "address ?demo=collapse).")


def sweep_options() -> dict[str, str]:
    """{folder: label}: the sweeps shipped with the app and those run by users of this server."""
    options = {str(p): f"shipped · {p.name}" for p in store.shipped_sweeps()}
    options.update({str(p): f"saved · {p.name}" for p in ws.list_sweeps()})
    return options


# ---------------------------------------------------------------- run a new sweep
new_sweep = st.expander("Run a new sweep", expanded=not sweep_options(), key="lab_new_sweep",
                        on_change="rerun")
if new_sweep.open:  # its form is drawn only when open: a new browser then opens the lab half a second sooner
    with new_sweep:
        d1, d2 = st.columns([2, 3])
        _, data_ref, lab_data = widgets.dataset_picker("lab", d1, d2)
        c2, c3, c4 = st.columns(3)
        latent = c2.number_input("Latent size d", 1, 64, 16, key="lab_latent")
        arch = c3.selectbox("Encoder", ["mlp", "conv"], key="lab_arch", format_func=str.upper)
        epochs = c4.number_input("Epochs per run", 1, 200, 20, key="lab_epochs")
        c5, c6, c7 = st.columns(3)
        betas = c5.text_input("β values", "0.5, 1, 4", key="lab_betas",
                              help="Comma-separated; every combination runs.")
        lams = c6.text_input("Free bits λ (nats per dimension)", "0, 0.5", key="lab_lams", help=cures.FREE_BITS)
        warmups = c7.text_input("Warm-up lengths (epochs)", "0", key="lab_warmups",
                                help=cures.SCHEDULES["warm-up"][1])
        st.caption("Every combination of the three lists above runs. Each value below adds one run per β (capacity: "
                   "one run, it does not use β), so that one plane holds every cure side by side against the collapse "
                   "each β causes; leave a field empty to skip it.")
        k1, k2, k3, k4 = st.columns(4)
        cycles = k1.text_input("Cyclical annealing: cycles M", "", key="lab_cycles", placeholder="e.g. 4",
                               help=cures.SCHEDULES["cyclical"][1] + " Ramp share R = 0.5.")
        capacities = k2.text_input("Capacity annealing: C_max (nats)", "", key="lab_capacities", placeholder="e.g. 25",
                                   help=cures.SCHEDULES["capacity"][1]
                                   + " γ = 100, C reaches C_max at the last epoch.")
        targets = k3.text_input("Soft free bits: target rates (nats)", "", key="lab_targets", placeholder="e.g. 10",
                                help=cures.SCHEDULES["soft"][1])
        aggressive = k4.checkbox("Aggressive encoder training", key="lab_aggressive", help=cures.AGGRESSIVE)
        c8, c9, c10 = st.columns(3)
        autoregressive = c8.checkbox("Autoregressive decoder (PixelCNN)", key="lab_ar",
                                     help="A decoder strong enough to model images without z: the classic setting in "
                                          "which the KL collapses even at β = 1. Slow on a CPU: use a subset.")
        n_train = c9.number_input("Training images (0 = all)", 0, 100_000, 0, step=1000, key="lab_ntrain")
        name = c10.text_input("Sweep name", "my-sweep", key="lab_name")
        state.remember_form("lab", FORM)
        new, probes = None, {}
        with widgets.guard("prepare the sweep"):
            if lab_data is not None:
                new = SweepSpec(dataset=data_ref.name, dataset_hash=data_ref.hash, latent_dim=int(latent),
                                architecture=arch, epochs=int(epochs),
                                betas=parse_values(betas, "β"), free_bits=parse_values(lams, "free bits", high=100),
                                warmups=parse_values(warmups, "warm-up", high=10_000),
                                cycles=tuple(int(m) for m in parse_values(cycles, "cycles", 1, 1000, allow_empty=True,
                                                                          integers=True)),
                                capacities=parse_values(capacities, "capacity", high=10_000, allow_empty=True),
                                kl_targets=parse_values(targets, "soft free bits target", high=10_000,
                                                        allow_empty=True),
                                aggressive=aggressive, autoregressive=autoregressive,
                                n_train=int(n_train), n_test=2000 if autoregressive else 0, iwae_k=50)
                new_folder = ws.sweep_path(name)
                if new_folder.name in {p.name for p in store.shipped_sweeps()}:
                    raise ValueError(f"{new_folder.name!r} is the name of a shipped sweep; choose another name")
                image_shape = lab_data.image_shape
                probes = cache.sweep_estimates(new, tuple(image_shape))
                _, expected = jobs.expected_run_seconds(svc, list(probes.values()))
                aggressive_note = next((e.probe_note for e in probes.values() if e.encoder_steps), None)
                st.caption(f"{len(probes)} runs: {expected} on this machine, each with its end-of-run evaluation (IWAE "
                           f"k = {new.iwae_k}); {aggressive_note or next(iter(probes.values())).probe_note}. "
                           "Runs already in a folder of this name with the same settings are reused.")
        if st.button("Run sweep", type="primary", key="lab_run", disabled=new is None) and new is not None:
            with widgets.guard("start the sweep"):
                queued = submit_sweep(svc, new, new_folder, image_shape, owner=me, estimates=probes)
                st.session_state[SHOWN] = str(new_folder)
                if not queued:
                    st.success(f"Every run of this sweep is already in {plain(new_folder.name)}: nothing to train.")

# ---------------------------------------------------------------- sweeps in progress
going: dict[str, list] = {}
for run in svc.runs(owner=me):
    if run.group is not None:
        going.setdefault(run.group, []).append(run)
for group, runs in going.items():
    if not all(r.done for r in runs):
        jobs.watch_sweep(Path(group).name, runs[::-1], svc)

# ---------------------------------------------------------------- pick a sweep
folders = sweep_options()
if not folders:
    st.info("No sweep yet: run one above (the estimate says how long it takes here).")
    widgets.stop()
if st.session_state.get(SHOWN) not in folders:
    st.session_state[SHOWN] = next(iter(folders))
chosen = st.selectbox("Sweep", list(folders), key=SHOWN, format_func=folders.get)
state.remember_form("lab-shown", (SHOWN,))
try:
    manifest_mtime = (Path(chosen) / MANIFEST).stat().st_mtime_ns
    spec, runs = cache.sweep(chosen, manifest_mtime)
except (SweepError, OSError) as err:
    st.error(f"This sweep cannot be read: {plain(sentence(err))} Run it again or pick another one.")
    widgets.stop()
if not runs:
    st.warning("This sweep has no finished run yet: they appear here one by one as they finish.")
    widgets.stop()
evals = [r.evaluation for r in runs]
st.caption(f"{plain(spec.dataset)} · d = {spec.latent_dim} · {spec.architecture.upper()} encoder · "
           f"{'PixelCNN' if spec.autoregressive else spec.architecture.upper()} decoder · {spec.epochs} epochs · "
           f"{len(runs)} of {spec.n_runs} runs finished"
           + (f" · first {spec.n_train:,} training images" if spec.n_train else ""))

# ---------------------------------------------------------------- one part of the lab at a time
n_test = runs[0].checkpoint.dataset.get("n_test") or 1
collapsed = evals[0].get("collapsed_distortion")
if "collapsed_distortion" not in evals[0]:  # saved before the line was recorded: from the sweep's data, if here
    try:
        collapsed = collapsed_distortion(spec, cache.dataset(spec.data_ref()))
    except Exception:  # noqa: BLE001 (without its data, the plane has no line)
        collapsed = None
rd_figure, heat_figure, surgery_figure = cache.sweep_figures(chosen, manifest_mtime, evals, n_test, collapsed)
st.session_state.setdefault(SECTION, "overview")
section = st.segmented_control("Part of the lab", list(SECTIONS), format_func=SECTIONS.get, key=SECTION,
                               required=True, label_visibility="collapsed")
state.remember_form("lab-section", (SECTION,))


def overview() -> None:
    """The rate–distortion plane and the table of every run."""
    st.subheader("Rate–distortion plane")
    st.vega_lite_chart(rd_figure, width="stretch", key="lab_rd")
    st.caption("Dotted diagonals: equal −ELBO = R + D (Alemi et al. 2018). Points at R ≈ 0 have collapsed: "
               "the decoder ignores z. Labels that would cover another are left out: hover a point for its run."
               + ("" if collapsed is None else
                  f" Dashed (or named at the edge when far off): D = {collapsed:.2f}, the cross-entropy of the test "
                  "images against the per-pixel mean of the training images, the best a decoder ignoring z can do "
                  "pixel by pixel; a collapsed run lands on it"
                  + (", unless its PixelCNN decoder models the pixels jointly and goes below it."
                     if spec.autoregressive else ".")))
    st.subheader("Runs")
    iwae = f"IWAE NLL (k={evals[0].get('iwae_k', '?')})"
    table = pd.DataFrame([{
        "run": run_label(e), "rate R": e["rate"], "distortion D": e["distortion"], "active units": e["active_units"],
        "−ELBO": e["test_elbo"], "I(x;z)": e["mutual_info"], "KL(q(z)‖p(z))": e.get("marginal_kl"),
        iwae: e["iwae_nll"], "β": e["beta"], "λ": e["free_bits"], "warm-up": e["warmup"]} for e in evals])
    number = st.column_config.NumberColumn
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "run": st.column_config.TextColumn(pinned=True),
        "rate R": number("R", format="%.2f", help="Rate: KL(q(z|x) ‖ p(z)), nats per test image."),
        "distortion D": number("D", format="%.2f", help="Distortion: −log p(x|z), nats per test image."),
        "active units": number("active", help="Active units: latent dimensions with Cov_x(E_q[z_u|x]) > 0.01."),
        "−ELBO": number(format="%.2f", help="R + D."),
        "I(x;z)": number(format="%.2f", help="Mutual information between image and code under q."),
        "KL(q(z)‖p(z))": number("KL(q(z)‖p(z))", format="%.2f", help="The rest of the rate: the marginal KL."),
        iwae: number("IWAE NLL", format="%.2f", help=f"{iwae}: the importance-weighted bound on −log p(x)."),
        "λ": number(help="Free bits λ, nats per dimension."), "warm-up": number(help="KL warm-up, epochs.")})
    st.caption(f"Nats per test image. Active units: Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2015). "
               f"I(x;z): mutual information under q (He et al. 2019), at most log N = {np.log(n_test):.2f}. "
               "KL(q(z)‖p(z)): the rest of the rate (see ELBO surgery); None for runs evaluated before it was "
               f"recorded. {iwae}: the tighter importance-weighted bound on −log p(x).")
    st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(), "sweep.csv", "text/csv",
                       on_click="ignore", key="lab_csv")


def kl_and_replay() -> None:
    """KL per dimension of every run, and one run's KL over the epochs, its collapse verdict and its replay."""
    st.subheader("KL per latent dimension")
    h1, h2 = st.columns(2)
    with h1:
        st.plotly_chart(heat_figure, width="stretch", key="lab_heat")
        st.caption("One row per run, one column per latent dimension: dark cells are collapsed dimensions.")
    with h2:  # keyed by sweep: another sweep's picker opens on its own most instructive run
        pick = st.selectbox("Run", list(range(len(runs))), key=f"lab_timeline_run_{Path(chosen).name}",
                            index=lab_plots.most_instructive([r.checkpoint.history for r in runs], evals),
                            format_func=lambda i: run_label(evals[i]))
        run_name = f"{Path(chosen).name}/{runs[pick].path.stem}"  # what ?model= holds for it
        located = ws.find_sweep_run(run_name)
        opens = located is not None and located[1].resolve() == runs[pick].path.resolve()  # not shadowed
        st.button("Open as the active model", key="lab_open", on_click=state.open_sweep_run,
                  args=(f"sweep:{run_name}",), icon=":material/open_in_new:", disabled=not opens,
                  help="Every page then shows this run's model (listed in the sidebar under 'sweep'); the address "
                       f"?model={run_name} opens it in any browser." if opens else
                       "A shipped sweep has this sweep's name, so its address would open the shipped run instead.")
        if f"sweep:{run_name}" in (st.session_state.get(state.PENDING_KEY), st.session_state.get(state.SELECT_KEY)):
            widgets.page_link(st, "app_pages/4_Anomalies.py", "This run is the active model: open Anomalies",
                              ":material/troubleshoot:")
        hist = runs[pick].checkpoint.history
        if hist:
            st.plotly_chart(cache.kl_timeline(str(runs[pick].path), manifest_mtime, hist, evals[pick]["free_bits"]),
                            width="stretch", key="lab_time")
            st.caption("Each dimension's test KL after every epoch: collapse as it happens.")
    picked = runs[pick].checkpoint
    found = collapse.verdict({**(hist[-1] if hist else {}), **evals[pick]},
                             RunSpec(data=spec.data_ref(), model=picked.config, objective=picked.objective,
                                     train=picked.train))
    if found.n_collapsed:
        st.warning(f"**{run_label(evals[pick])}: {found.headline}** {found.measures} {found.reason}  \n"
                   + "  \n".join(f"Fix {rank}: **{plain(fix.label)}**. {fix.why}"
                                 for rank, fix in enumerate(found.fixes, 1))
                   + "  \nThe Train page offers each fix as a one-click run; a sweep here sets them side by side.",
                   icon=":material/compress:")
    else:
        st.info(f"**{run_label(evals[pick])}: {found.headline}** {found.measures}", icon=":material/check_circle:")
    st.subheader("Watch it happen")
    if replay.path_for(runs[pick].path).is_file():
        st.caption(f"The run picked above, **{run_label(evals[pick])}**, epoch by epoch.")
        widgets.replay_panel(runs[pick].path, f"lab_{pick}")
    else:
        st.info("This run was trained before training replays were recorded: run the sweep again to record one.")


def side_by_side() -> None:
    """Every run's reconstructions and prior samples (and, for a 2-D code, its latent space)."""
    st.subheader("Side by side")
    try:
        data = cache.dataset(store.DataRef(spec.dataset, spec.dataset_hash, n_test=spec.n_test))
    except Exception as err:  # noqa: BLE001
        st.warning(f"The test images of {plain(spec.dataset)} are not available ({plain(err)}).")
        return
    draws = 3
    column = "the first test image of one class" if data.y_test is not None else "one of the first ten test images"
    if spec.autoregressive:
        st.caption(f"Each column is {column}. The rows under it are generated from z alone "
                   "(the PixelCNN never sees the input), each pixel set to its probability given z and the pixels "
                   "before it, fed forward: a healthy run gives back the input's kind of garment, its shape and "
                   "shade, and its draws of z from q(z|x) stay that garment; a collapsed run gives a generic top or "
                   "shoe whatever the input, and its draws wander. The teacher-forced row looks right for every run, "
                   "collapsed or not: there the decoder copies the input's own earlier pixels.")
        captions = {"recon": f"inputs (top row); generated from z alone, conditional mean fed forward: at z = μ(x) "
                             f"(row 2), then {draws} draws z ~ q(z|x) each (rows 3–{2 + draws})",
                    "teacher_forced": "teacher-forced (the decoder sees the input's earlier pixels)",
                    "samples": "prior samples (conditional mean fed forward)"}
    else:
        st.caption(f"Each column is {column}, over its reconstruction from z = μ(x); beside them, samples from the "
                   "prior decoded. A collapsed run reconstructs every image as the same blur.")
        captions = {"recon": "inputs (top) over reconstructions from z = μ(x)",
                    "samples": "prior samples (decoder mean)"}
    scale = pictures.display_scale(data.image_shape[1], 28)
    for run in runs:
        mtime = run.path.stat().st_mtime_ns if run.path.exists() else 0
        pics = cache.run_pictures(str(run.path), mtime, run.checkpoint.model, data.x_test, data.y_test, draws, scale)
        c_lab, c_rec, c_smp = st.columns([1, 2, 2])
        ev = run.evaluation
        c_lab.markdown(f"**{run_label(ev)}**  \nR = {ev['rate']:.2f}, AU = {ev['active_units']}")
        with c_rec:
            for name in ("recon", "teacher_forced"):
                if name in pics:
                    widgets.image(pics[name], caption=captions[name])
        with c_smp:
            widgets.image(pics["samples"], caption=captions["samples"])
    if spec.latent_dim == 2:
        st.subheader("Latent space of each run")
        cols = st.columns(min(3, len(runs)))
        y = None if data.y_test is None else data.y_test.cpu().numpy()
        for i, run in enumerate(runs):
            mtime = run.path.stat().st_mtime_ns if run.path.exists() else 0
            mu = cache.run_means(str(run.path), mtime, run.checkpoint.model, data.x_test)
            fig = plots.latent_scatter(mu, np.arange(len(mu)), color=y, categorical=y is not None, labels=y,
                                       class_names=data.class_names, title=run_label(run.evaluation), height=360)
            cols[i % len(cols)].plotly_chart(fig, width="stretch", key=f"lab_scatter_{i}")


def elbo_surgery() -> None:
    """Each run's rate split into the mutual information and the marginal KL."""
    st.subheader("Where the rate goes")
    st.plotly_chart(surgery_figure, width="stretch", key="lab_surgery")
    st.caption("Each run's rate split in two (Hoffman & Johnson 2016, “ELBO surgery”): "
               r"$R=\mathbb{E}_x\mathrm{KL}(q(z|x)\Vert p(z))=I(x;z)+\mathrm{KL}(q(z)\Vert p(z))$, where the aggregate "
               f"posterior q(z) averages q(z|x) over the N = {n_test:,} test images. Blue, the mutual information, is "
               f"what the code tells about which image it came from and cannot pass log N = {np.log(n_test):.2f} "
               "(dashed); orange, the marginal KL, is rate spent because q(z) does not match the prior: it tells the "
               "decoder nothing, and where it is large, samples from the prior fall where no image's code does. The "
               "black tick is R: the bars are Monte Carlo estimates and end near it.")


def ppca_panel() -> None:
    """Probabilistic PCA: the linear VAE whose collapse has a closed form, beside its exact fit."""
    st.subheader("Collapse without any optimisation problem")
    if spec.sigma2s:  # a pPCA sweep: its data, noise variances and latent size, and its SGD runs beside the exact answer
        ppca_data, sigma2s, ppca_d = cache.dataset(spec.data_ref()), tuple(spec.sigma2s), spec.latent_dim
    else:
        ppca_data, sigma2s, ppca_d = cache.dataset(store.DataRef("digits")), (0.05, 0.1, 0.2), 64
    st.caption(
        f"A linear VAE (linear encoder and decoder, p(x|z) = N(Wz + b, σ²I) with σ² fixed) on "
        f"{plain(ppca_data.name)}'s {len(ppca_data.x_train):,} training images has an exact optimum, probabilistic "
        "PCA (Tipping & Bishop 1999; Lucas et al. 2019): latent i is active if and only if the data covariance's "
        r"eigenvalue λᵢ exceeds σ², and the rate is $\sum_{\lambda_i>\sigma^2}\tfrac12\log(\lambda_i/\sigma^2)$. So "
        "latents collapse here with no lagging encoder and no local optimum: the noise σ² alone decides which "
        "directions are worth a code. The table sets the closed form beside a linear VAE fitted to its exact optimum "
        "(and a pPCA sweep's SGD runs).")
    eigenvalues = cache.covariance_eigenvalues(f"{ppca_data.name}:{len(ppca_data.x_train)}", ppca_data.x_train)
    st.plotly_chart(lab_plots.ppca_spectrum(eigenvalues, list(sigma2s), ppca_d), width="stretch", key="lab_ppca")
    closed = {s2: ppca.closed_form(eigenvalues, s2, ppca_d, len(ppca_data.x_train)) for s2 in sigma2s}
    fits = {}
    started = jobs.board().get(("ppca", ppca_data.name, len(ppca_data.x_train), sigma2s, ppca_d))
    if started is None:
        if st.button("Fit the linear VAE exactly", key="lab_ppca_fit", icon=":material/play_arrow:"):
            started = jobs.ppca_job(ppca_data, sigma2s, ppca_d)
        else:
            st.caption(f"One fit at each σ² = {', '.join(f'{s:g}' for s in sigma2s)}: a few seconds each "
                       "(L-BFGS on W, the rest in closed form).")
    if started is not None:
        fits = {row["sigma2"]: row for row in (jobs.follow(started, started.label) or [])}
    sgd = {e["sigma2"]: e for e in evals if e.get("sigma2") is not None}
    st.dataframe(pd.DataFrame([{
        "σ²": s2, "AU closed form": closed[s2]["active"], "AU exact fit": fits.get(s2, {}).get("au_trained"),
        "rate closed form": closed[s2]["rate"], "rate exact fit": fits.get(s2, {}).get("rate_trained"),
        "−log p (pPCA)": closed[s2]["neg_loglik"], "−ELBO exact fit": fits.get(s2, {}).get("neg_elbo_trained"),
        **({"AU SGD run (test)": sgd[s2]["active_units"], "rate SGD run (test)": sgd[s2]["rate"]}
           if s2 in sgd else {})} for s2 in sigma2s]), hide_index=True, width="stretch",
        column_config={c: st.column_config.NumberColumn(format="%.4f") for c in
                       ("rate closed form", "rate exact fit", "−log p (pPCA)", "−ELBO exact fit",
                        "rate SGD run (test)")})
    if len(fits) == len(sigma2s):
        same_au = sum(fits[s2]["au_trained"] == closed[s2]["active"] for s2 in sigma2s)
        rate_gap = max(abs(fits[s2]["rate_trained"] - closed[s2]["rate"]) for s2 in sigma2s)
        elbo_gap = max(abs(fits[s2]["neg_elbo_trained"] - closed[s2]["neg_loglik"]) for s2 in sigma2s)
        st.success(f"Exact fits: the same active units as the closed form at {same_au} of {len(sigma2s)} noise "
                   f"variances; rates within {rate_gap:.1e} nats, −ELBO within {elbo_gap:.1e} nats of −log p.")
    st.caption(f"Nats per training image, d = {ppca_d}. At the exact optimum the ELBO is tight: −ELBO equals "
               "pPCA's −log p(x). Minibatch SGD gets the rate close but leaves the latent axes slowly rotating, "
               "so it can count more active units than the closed form.")


{"overview": overview, "kl": kl_and_replay, "pictures": side_by_side, "surgery": elbo_surgery,
 "ppca": ppca_panel}[section]()
