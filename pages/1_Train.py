"""Train: configure, run (with live curves, a decoder preview and a Stop button), save."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, also when this page runs alone

import time  # noqa: E402

import streamlit as st  # noqa: E402

from vae_core import checkpoint as ckpt_io  # noqa: E402
from vae_core import pictures, plots  # noqa: E402
from vae_core import ui  # noqa: E402
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset  # noqa: E402
from vae_core.data import DataError  # noqa: E402
from vae_core.decoding import decode_lattice, lattice_axis  # noqa: E402
from vae_core.model import VAE  # noqa: E402
from vae_core.train import fit  # noqa: E402

ui.page_header(
    "Train a VAE",
    "Fit a variational auto-encoder by maximising the ELBO on the chosen training set; the curves show, per "
    "epoch and in nats per image, the test −ELBO (lower is better) and its two parts — how badly images are "
    "reconstructed, and how far the posteriors sit from the prior (KL). β weighs the KL, free bits stop each "
    "latent dimension's KL from being pushed below λ, and warm-up ramps the KL weight from 0.",
    r"-\mathrm{ELBO}(x)=\underbrace{-\mathbb E_{q(z|x)}\log p(x|z)}_{\text{reconstruction}}"
    r"+\beta\sum_{j=1}^{d}\max\big(\lambda,\ \mathrm{KL}(q(z_j|x)\,\|\,p(z_j))\big)",
)

avail = ui.builtin_available()
DATASETS = ["digits", "mnist", "fashion-mnist", "upload"]


def _dataset_label(name: str) -> str:
    if name == "upload":
        return "your own file (.npz / .npy / .csv)"
    label = ui.DATASET_LABELS[name]
    return label if avail.get(name) else f"{label} (not found locally: needs a download)"


def _apply_recipe() -> None:
    """Fill the form's widgets from the chosen recipe (runs before the form is drawn)."""
    recipe = st.session_state.get("tr_recipe")
    if recipe == "tutorial":
        pre = tutorial_preset(latent_dim=2, epochs=20)
        values = {"tr_latent": pre.model.latent_dim, "tr_arch": "mlp", "tr_lik": "bernoulli", "tr_hidden": "400",
                  "tr_beta": pre.objective.beta, "tr_free_bits": pre.objective.free_bits,
                  "tr_warmup": float(pre.objective.warmup_epochs), "tr_epochs": pre.train.epochs, "tr_lr": pre.train.lr,
                  "tr_batch": pre.train.batch_size, "tr_seed": pre.train.seed, "tr_cvae": False}
    elif recipe == "quick":
        values = {"tr_latent": 2, "tr_arch": "mlp", "tr_lik": "bernoulli", "tr_hidden": "64", "tr_beta": 1.0,
                  "tr_free_bits": 0.0, "tr_warmup": 0.0, "tr_epochs": 2, "tr_lr": 1e-3, "tr_batch": 64, "tr_seed": 0,
                  "tr_cvae": False}
    else:
        return
    st.session_state.update(values)


def _request_stop() -> None:
    st.session_state[ui.STOP_FLAG] = True


# ---------------------------------------------------------------- a run interrupted by Stop (or by navigation)
run = st.session_state.get(ui.TRAIN_RUN)
if run is not None and run["status"] == "running":
    # The script that was training has been interrupted by a rerun (the Stop button or leaving the page):
    # the model object holds the weights reached so far; keep them.
    run["status"] = "stopped"
    n_done = len(run["history"])
    run["message"] = (f"Training stopped by the user after {n_done} complete epoch{'s' if n_done != 1 else ''} "
                      f"of {run['train'].epochs}; the weights reached so far were kept."
                      if st.session_state.get(ui.STOP_FLAG) else
                      f"Training was interrupted after {n_done} complete epoch(s) (the page was left or reloaded); "
                      "the weights reached so far were kept.")
    run["finished"] = True
    st.session_state[ui.STOP_FLAG] = False

# ---------------------------------------------------------------- dataset
st.subheader("1 · Data")
d1, d2 = st.columns([2, 3])
dataset_name = d1.radio("Dataset", DATASETS, format_func=_dataset_label, key="tr_dataset")
data, data_error = None, None
with d2:
    if dataset_name == "upload":
        up = ui.file_upload(st, "Images: .npz with arrays x (N×H×W or N×H×W×C) and optional labels y; .npy; or "
                            ".csv with one image per row (optional label column)", "tr_upload")
        if up is None:
            data_error = "upload a file first"
        else:
            try:
                data = ui.dataset_from_upload(up.getvalue(), up.name)
            except DataError as err:
                data_error = str(err)
                st.error(f"{ui.plain(up.name)} cannot be used: {ui.plain(err)}")
    else:
        download = False
        if not avail.get(dataset_name):
            download = st.checkbox(f"Allow downloading {ui.DATASET_LABELS[dataset_name]} (30 s timeout per connection)",
                                   key="tr_download")
        if avail.get(dataset_name) or download:
            try:
                with st.spinner("Loading the dataset…"):
                    data = ui.get_dataset(dataset_name, download)
            except DataError as err:
                data_error = str(err)
                st.error(str(err))
        else:
            data_error = f"{ui.DATASET_LABELS[dataset_name]} is not available locally"
            st.info(f"{ui.DATASET_LABELS[dataset_name]} was not found on this machine. Tick the box to download it, "
                    "or pick digits.")
    if data is not None:
        info = data.info()
        st.success(f"**{ui.plain(data.name)}**: {info['n_train']:,} training and {info['n_test']:,} test images of "
                   f"{'×'.join(map(str, data.image_shape))} (C×H×W), {info['n_classes'] or 'no'} classes.")

# ---------------------------------------------------------------- configuration
st.subheader("2 · Model and objective")
st.selectbox("Recipe", ["custom", "tutorial", "quick"], key="tr_recipe", on_change=_apply_recipe,
             format_func={"custom": "custom (keep my settings)",
                          "tutorial": "tutorial recipe (pytorch/examples: MLP 400, Adam 1e-3, batch 128, 20 epochs)",
                          "quick": "quick test (MLP 64, 2 epochs)"}.get,
             help="Choosing a recipe fills in the form below; you can still change any field.")
with st.form("tr_form"):
    f1, f2, f3, f4 = st.columns(4)
    latent = f1.number_input("Latent size d", 1, 64, 2, key="tr_latent")
    arch = f2.selectbox("Architecture", ["mlp", "conv"], key="tr_arch", format_func={"mlp": "MLP", "conv": "conv"}.get)
    hidden_text = f3.text_input("MLP widths (comma-separated)", "512, 256", key="tr_hidden",
                                help="Encoder layer widths; the decoder mirrors them. Conv uses 32, 64 channels.")
    likelihood = f4.selectbox("Likelihood p(x|z)", ["bernoulli", "gaussian"], key="tr_lik",
                              format_func={"bernoulli": "Bernoulli (BCE)", "gaussian": "Gaussian (learned σ)"}.get)
    g1, g2, g3, g4 = st.columns(4)
    beta = g1.number_input("β (KL weight)", 0.0, 100.0, 1.0, 0.1, key="tr_beta")
    free_bits = g2.number_input("Free bits λ (nats per latent dimension)", 0.0, 10.0, 0.0, 0.05, key="tr_free_bits",
                                help="Each dimension's KL counts as at least λ nats in the objective.")
    warmup = g3.number_input("KL warm-up (epochs)", 0.0, 1000.0, 0.0, 1.0, key="tr_warmup",
                             help="The KL weight grows linearly from 0 to β over this many epochs.")
    cvae = g4.checkbox("Conditional (CVAE)", key="tr_cvae", help="Encoder and decoder also see the one-hot label.",
                       disabled=data is not None and data.y_train is None)
    h1, h2, h3, h4 = st.columns(4)
    epochs = h1.number_input("Epochs", 1, 1000, 10, key="tr_epochs")
    lr = h2.number_input("Learning rate", 1e-6, 100.0, TrainConfig.lr, format="%g", key="tr_lr")
    batch = h3.number_input("Batch size", 1, 8192, TrainConfig.batch_size, key="tr_batch")
    seed = h4.number_input("Random seed", 0, 2**31 - 1, 0, key="tr_seed")
    submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")

configs = None
if submitted:
    if data is None:
        st.error(f"No training data: {ui.plain(data_error)}. Choose or fix the dataset above.")
    else:
        try:
            hidden = tuple(int(w) for w in hidden_text.replace(";", ",").split(",") if w.strip())
            model_cfg = ModelConfig(image_shape=data.image_shape, latent_dim=int(latent), architecture=arch,
                                    hidden=hidden or (512, 256), likelihood=likelihood,
                                    n_classes=data.n_classes if cvae and data.y_train is not None else 0)
            n_weights = ui.parameter_count(model_cfg)
            if n_weights > ui.MAX_PARAMETERS:  # e.g. many 8192-wide layers: would exhaust the server's memory
                raise ValueError(f"this model would have {n_weights:,} weights; the limit is {ui.MAX_PARAMETERS:,} "
                                 "(use fewer or narrower layers)")
            configs = (model_cfg, ObjectiveConfig(beta=float(beta), free_bits=float(free_bits),
                                                  warmup_epochs=float(warmup)),
                       TrainConfig(epochs=int(epochs), lr=float(lr), batch_size=int(batch), seed=int(seed)))
        except ValueError as err:  # ConfigError, or a width that is not a number
            st.error(f"Invalid settings: {ui.plain(err)}. Fix the field and press Train again.")

# ---------------------------------------------------------------- training
st.subheader("3 · Training")
if configs is not None:
    model_cfg, objective, train_cfg = configs
    import torch

    torch.manual_seed(train_cfg.seed)
    model = VAE(model_cfg).to(data.device)
    run = {"status": "running", "history": [], "model": model, "data": data, "objective": objective,
           "train": train_cfg, "message": None, "finished": False, "saved": None, "model_id": None,
           "name": f"{data.name.replace('upload:', '')}-{model_cfg.latent_dim}d-{time.strftime('%H%M%S')}"}
    st.session_state[ui.TRAIN_RUN] = run
    st.session_state[ui.STOP_FLAG] = False
    st.button("Stop (keep the weights so far)", on_click=_request_stop, key="tr_stop", icon=":material/stop:")
    bar = st.progress(0.0, text="starting…")
    live_l, live_r = st.columns([3, 2])
    curves_slot, grid_slot = live_l.empty(), live_r.empty()
    axis = lattice_axis(8, "quantile")
    dims = (0, 1)
    state = {"last": 0.0}

    def on_step(step, steps, loss):
        now = time.monotonic()
        if now - state["last"] > 0.25 or step == steps - 1:
            state["last"] = now
            done = len(run["history"]) + (step + 1) / steps
            bar.progress(min(1.0, done / train_cfg.epochs),
                         text=f"epoch {len(run['history']) + 1}/{train_cfg.epochs} · step {step + 1}/{steps} · "
                              f"batch loss {float(loss.total.detach()):.1f}")

    def on_epoch(record, m):
        run["history"].append(record)
        with curves_slot.container():
            st.plotly_chart(plots.loss_curves(run["history"]), key=f"tr_live_{record['epoch']}")
        label = 0 if m.config.n_classes else None
        images = decode_lattice(m, axis, axis, dims=dims, label=label)
        grid_slot.image(pictures.to_uint8(pictures.tile(images), pictures.display_scale(m.config.image_shape[1], 28)),
                        caption=f"decoder over z0, z1 after epoch {record['epoch']} (prior quantiles)", output_format="PNG")

    with ui.guard("train the model"):
        result = fit(model, data, objective, train_cfg, on_step=on_step, on_epoch=on_epoch,
                     should_stop=lambda: bool(st.session_state.get(ui.STOP_FLAG)))
        bar.progress(1.0, text="finished")
        run["status"] = "diverged" if result.diverged else ("stopped" if result.stop_reason else "done")
        run["message"] = result.stop_reason
    run["finished"] = True
    if run["status"] == "running":  # the guard caught an error
        run["status"] = "failed"

run = st.session_state.get(ui.TRAIN_RUN)
if run is None:
    st.info("Configure above and press **Train**. On the 8×8 digits a 10-epoch run takes a few seconds.")
elif run.get("finished"):
    model, hist = run["model"], run["history"]
    if run["status"] == "diverged":
        st.warning(run["message"], icon=":material/warning:")
        if not hist:
            st.info("No epoch completed, so there is no model to keep. Lower the learning rate (1e-3 is a good "
                    "start) and press Train again.")
    elif run["status"] == "stopped":
        st.info(run["message"])
    elif run["status"] == "failed":
        st.error("Training failed (see the message above). Change the settings and press Train again.")
    else:
        st.success(f"Training finished: {len(hist)} epochs.")
    if hist:
        last = hist[-1]
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("test −ELBO (nats/image)", f"{last['test_elbo']:.2f}")
        m2.metric("reconstruction", f"{last['test_recon']:.2f}")
        m3.metric("KL", f"{last['test_kl']:.2f}")
        m4.metric("active units", f"{last['active_units']} / {model.config.latent_dim}")
        st.plotly_chart(plots.loss_curves(hist), key="tr_final_curves")
    if run["status"] != "failed" and run["model_id"] is None and (hist or run["status"] == "stopped"):
        ckpt = ckpt_io.Checkpoint(model=model.eval(), objective=run["objective"], train=run["train"],
                                  dataset=run["data"].info(), history=hist,
                                  extra={"stop_reason": run["message"]} if run["message"] else {})
        builtin = run["data"].name in ui.DATASET_LABELS
        run["model_id"] = ui.register_session_model(
            ui.SessionModel(label=run["name"], ckpt=ckpt, data=None if builtin else run["data"]))
        run["ckpt"] = ckpt
        st.rerun()  # show the new model as the active one in the sidebar
    if run.get("ckpt") is not None:
        st.subheader("4 · Save")
        st.caption("The model is already active for this browser session (under 'this session' in the sidebar). Save it to "
                   "checkpoints/ to keep it and share it with other sessions.")
        s1, s2, s3 = st.columns([3, 1, 1])
        name = s1.text_input("Name", run["name"], key=f"tr_save_name_{run['name']}",
                             help="Letters, digits, '-', '_' and '.'; saved as checkpoints/NAME.safetensors")
        overwrite = s2.checkbox("Overwrite if it exists", key="tr_overwrite")
        if s3.button("Save", key="tr_save", icon=":material/save:"):
            try:
                path = ckpt_io.save(ckpt_io.checkpoint_path(name), run["ckpt"], overwrite=overwrite)
                run["saved"] = path.name
            except ckpt_io.CheckpointExistsError as err:
                st.warning(f"{ui.plain(err)} — or tick 'Overwrite if it exists'.")
            except (ckpt_io.CheckpointError, OSError) as err:
                st.error(f"Could not save: {ui.plain(err)}")
        if run.get("saved"):
            st.success(f"Saved as checkpoints/{run['saved']} (listed under 'file' in the sidebar).")
