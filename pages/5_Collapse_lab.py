"""Posterior-collapse lab: compare β-VAE, free bits and KL warm-up runs on the rate–distortion plane."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, also when this page runs alone

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from vae_core import checkpoint as ckpt_io  # noqa: E402
from vae_core import lab_plots, pictures, plots  # noqa: E402
from vae_core import ui  # noqa: E402
from vae_core.data import BUILTIN  # noqa: E402
from vae_core.lab_plots import run_label  # noqa: E402
from vae_core.sweep import SweepError, SweepSpec, list_sweeps, load_sweep, parse_values, run_sweep  # noqa: E402

SWEEP_ROOT = ckpt_io.CHECKPOINT_DIR / "sweeps"
SHOWN = "lab_sweep"

ui.page_header(
    "Posterior-collapse lab",
    "Each run trains the same VAE with another objective. Rate R is how many nats the code carries about an "
    "image (the KL), distortion D how badly the image is reconstructed; their sum is the −ELBO. When the "
    "KL of a latent dimension falls to 0 its posterior equals the prior: the dimension has collapsed and "
    "carries nothing. β > 1 pushes towards collapse; free bits (a floor λ per dimension) and warm-up resist it.",
    r"-\mathrm{ELBO}=\underbrace{\mathbb E\,[-\log p(x|z)]}_{D}+\underbrace{\mathbb E\,\mathrm{KL}(q(z|x)\,\|\,p(z))}_{R}"
    r"\qquad \mathcal L_{\beta,\lambda}=D+\beta\sum_j \max\big(\lambda,\ \mathrm{KL}_j\big)",
)


@st.cache_resource(show_spinner="Loading the sweep…", max_entries=8)
def cached_sweep(folder: str, mtime_ns: int):
    return load_sweep(folder, device=ui.device())


@st.cache_resource(show_spinner=False, max_entries=32)
def cached_figures(folder: str, mtime_ns: int, _evals: list[dict]):
    """The R–D plane and the KL heatmap of one saved sweep, built once per sweep file version."""
    return lab_plots.rd_plane(_evals), lab_plots.kl_heatmap(_evals)


@st.cache_resource(show_spinner=False, max_entries=128)
def cached_timeline(path: str, mtime_ns: int, _history: list[dict], free_bits: float):
    return lab_plots.kl_timeline(_history, free_bits)


def sweep_options() -> list[Path]:
    return list_sweeps(SWEEP_ROOT)


@st.cache_resource(show_spinner=False, max_entries=64)
def run_pictures(path: str, mtime_ns: int, _model, _x: torch.Tensor, n: int = 8, scale: int = 1):
    """PNG bytes of (inputs over reconstructions, prior samples) of one run; cached per checkpoint file, so a
    rerun sends the same bytes without decoding or encoding anything."""
    torch.manual_seed(0)
    with torch.no_grad():
        model = _model.eval()
        x = _x[:n]
        recon = model.reconstruct(x)  # (n, C, H, W)
        samples = model.sample_images(torch.randn(n, model.latent_dim, device=x.device))
    pair = np.stack([x.cpu().numpy(), recon.cpu().numpy()])  # (2, n, C, H, W)
    return pictures.png_bytes(pictures.tile(pair), scale), pictures.png_bytes(pictures.tile(samples.cpu().numpy()[None]), scale)


# ---------------------------------------------------------------- run a new sweep
with st.expander("Run a new sweep", expanded=not sweep_options()):
    with st.form("lab_form"):
        c1, c2, c3, c4 = st.columns(4)
        avail = ui.builtin_available()
        dataset = c1.selectbox("Dataset", [b for b in BUILTIN if avail.get(b)], key="lab_dataset",
                               format_func=ui.DATASET_LABELS.get)
        latent = c2.number_input("Latent size d", 1, 64, 16, key="lab_latent")
        arch = c3.selectbox("Encoder", ["mlp", "conv"], key="lab_arch", format_func=str.upper)
        epochs = c4.number_input("Epochs per run", 1, 200, 20, key="lab_epochs")
        c5, c6, c7 = st.columns(3)
        betas = c5.text_input("β values", "0.5, 1, 4", key="lab_betas", help="Comma-separated; every combination runs.")
        lams = c6.text_input("Free bits λ (nats per dimension)", "0, 0.5", key="lab_lams",
                             help="A floor on each latent dimension's batch-mean KL (Kingma et al. 2016).")
        warmups = c7.text_input("Warm-up lengths (epochs)", "0", key="lab_warmups",
                                help="The KL weight grows linearly from 0 to β over this many epochs.")
        c8, c9, c10 = st.columns(3)
        autoregressive = c8.checkbox("Autoregressive decoder (PixelCNN)", key="lab_ar",
                                     help="A decoder strong enough to model images without z: the classic "
                                          "setting in which the KL collapses even at β = 1. Slow on a CPU: use a subset.")
        n_train = c9.number_input("Training images (0 = all)", 0, 100_000, 0, step=1000, key="lab_ntrain")
        name = c10.text_input("Sweep name", "my-sweep", key="lab_name")
        submitted = st.form_submit_button("Run sweep", type="primary")
    if submitted:
        with ui.guard("run the sweep"):
            spec = SweepSpec(dataset=dataset, latent_dim=int(latent), architecture=arch, epochs=int(epochs),
                             betas=parse_values(betas, "β"), free_bits=parse_values(lams, "free bits", high=100),
                             warmups=parse_values(warmups, "warm-up", high=10_000), autoregressive=autoregressive,
                             n_train=int(n_train), n_test=2000 if autoregressive else 0, iwae_k=50)
            folder = SWEEP_ROOT / ckpt_io.safe_name(name)
            data = ui.get_dataset(dataset)
            n_runs = len(spec.settings())
            overall = st.progress(0.0, text=f"Sweep: 0 of {n_runs} runs")
            one = st.progress(0.0, text="Run 1")
            state = {"run": 0, "label": ""}

            def on_run(i, n, obj):
                state.update(run=i, epoch=0, label=run_label({"beta": obj.beta, "free_bits": obj.free_bits,
                                                      "warmup": obj.warmup_epochs}))
                overall.progress(i / n, text=f"Sweep: run {i + 1} of {n} ({state['label']})")

            def on_step(step, steps, loss, _last=[0.0]):  # noqa: B006 — a cheap throttle
                frac = (state.get("epoch", 0) + (step + 1) / steps) / spec.epochs
                if step == steps - 1 or frac - _last[0] > 0.02 or frac < _last[0]:
                    _last[0] = frac
                    one.progress(min(1.0, frac), text=f"{state['label']}: epoch {state.get('epoch', 0) + 1} of {spec.epochs}")

            def on_epoch(rec, _m):
                state["epoch"] = rec["epoch"] % spec.epochs

            runs = run_sweep(spec, data, folder, on_run=on_run, on_step=on_step, on_epoch=on_epoch)
            overall.progress(1.0, text=f"Sweep done: {len(runs)} runs saved in checkpoints/sweeps/{folder.name}")
            one.empty()
            st.session_state[SHOWN] = str(folder)

# ---------------------------------------------------------------- pick a sweep
folders = sweep_options()
if not folders:
    st.info("No sweep yet: run one above (digits with 20 epochs takes about a minute).")
    st.stop()
names = [str(f) for f in folders]
if st.session_state.get(SHOWN) not in names:
    st.session_state[SHOWN] = names[0]
chosen = st.selectbox("Sweep", names, key=SHOWN, format_func=lambda p: Path(p).name)
try:
    manifest_mtime = (Path(chosen) / "sweep.json").stat().st_mtime_ns
    spec, runs = cached_sweep(chosen, manifest_mtime)
except (SweepError, OSError) as err:
    st.error(f"This sweep cannot be read: {err}. Run it again or pick another one.")
    st.stop()
if not runs:
    st.warning("This sweep has no finished run yet.")
    st.stop()
evals = [r.evaluation for r in runs]
rd_figure, heat_figure = cached_figures(chosen, manifest_mtime, evals)
st.caption(f"{spec.dataset} · d = {spec.latent_dim} · {spec.architecture.upper()} encoder · "
           f"{'PixelCNN' if spec.autoregressive else spec.architecture.upper()} decoder · {spec.epochs} epochs · "
           f"{len(runs)} runs" + (f" · first {spec.n_train:,} training images" if spec.n_train else ""))

# ---------------------------------------------------------------- rate–distortion plane and the table
left, right = st.columns([3, 2])
with left:
    st.subheader("Rate–distortion plane")
    st.plotly_chart(rd_figure, width="stretch", key="lab_rd")
    st.caption("Dotted diagonals: equal −ELBO = R + D (Alemi et al. 2018). Points at R ≈ 0 have collapsed: "
               "the decoder ignores z.")
with right:
    st.subheader("Runs")
    table = pd.DataFrame([{
        "β": e["beta"], "λ": e["free_bits"], "warm-up": e["warmup"], "rate R": e["rate"],
        "distortion D": e["distortion"], "−ELBO": e["test_elbo"], "active units": e["active_units"],
        "I(x;z)": e["mutual_info"], f"IWAE NLL (k={e.get('iwae_k', '?')})": e["iwae_nll"]} for e in evals])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in table.columns if c not in ("active units",)})
    n_test = runs[0].checkpoint.dataset.get("n_test") or 0
    st.caption(f"Nats per test image. Active units: Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2015). "
               f"I(x;z): mutual information under q (He et al. 2019), at most log N = {np.log(max(n_test, 1)):.2f}. "
               "IWAE NLL: the tighter importance-weighted bound on −log p(x).")
    st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(), "sweep.csv", "text/csv",
                       on_click="ignore", key="lab_csv")

# ---------------------------------------------------------------- KL per dimension
st.subheader("KL per latent dimension")
h1, h2 = st.columns(2)
with h1:
    st.plotly_chart(heat_figure, width="stretch", key="lab_heat")
    st.caption("One row per run, one column per latent dimension: dark cells are collapsed dimensions.")
with h2:
    pick = st.selectbox("Run", list(range(len(runs))), key="lab_timeline_run",
                        format_func=lambda i: run_label(evals[i]))
    hist = runs[pick].checkpoint.history
    if hist:
        st.plotly_chart(cached_timeline(str(runs[pick].path), manifest_mtime, hist, evals[pick]["free_bits"]),
                        width="stretch", key="lab_time")
        st.caption("Each dimension's test KL after every epoch: collapse as it happens.")

# ---------------------------------------------------------------- side by side
st.subheader("Side by side")
try:
    data = ui.get_dataset(spec.dataset).subset(0, spec.n_test)
except Exception as err:  # noqa: BLE001
    st.warning(f"The test images of {spec.dataset} are not available ({err}).")
    st.stop()
n_show = 8
st.caption(f"For each run: {n_show} test images (top) over their reconstructions (bottom), and {n_show} samples "
           "from the prior decoded. A collapsed model reconstructs every image as the same blur.")
scale = pictures.display_scale(data.image_shape[1], 28)
for run in runs:
    mtime = run.path.stat().st_mtime_ns if run.path.exists() else 0
    recon, samples = run_pictures(str(run.path), mtime, run.checkpoint.model, data.x_test, n_show, scale)
    c_lab, c_rec, c_smp = st.columns([1, 2, 2])
    ev = run.evaluation
    c_lab.markdown(f"**{run_label(ev)}**  \nR = {ev['rate']:.2f}, AU = {ev['active_units']}")
    with c_rec:
        ui.image(recon)
    with c_smp:
        ui.image(samples)

if spec.latent_dim == 2:
    st.subheader("Latent space of each run")
    cols = st.columns(min(3, len(runs)))
    y = None if data.y_test is None else data.y_test.cpu().numpy()
    for i, run in enumerate(runs):
        with torch.no_grad():
            mu, _ = run.checkpoint.model.encode(data.x_test)
        mu = mu.cpu().numpy()
        fig = plots.latent_scatter(mu, np.arange(len(mu)), color=y, categorical=y is not None, labels=y,
                                   class_names=data.class_names, title=run_label(run.evaluation), height=360)
        cols[i % len(cols)].plotly_chart(fig, width="stretch", key=f"lab_scatter_{i}")
