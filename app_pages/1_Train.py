"""Train: configure a run, follow it live while it trains in the background, reopen and save its model."""
import dataclasses
import time

import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Train a VAE",
    "Fit a variational auto-encoder by maximising the ELBO on the chosen training set; the curves show, per "
    "epoch and in nats per image, the test −ELBO (lower is better) and its two parts — how badly images are "
    "reconstructed, and how far the posteriors sit from the prior (KL). β weighs the KL, free bits stop each "
    "latent dimension's KL, averaged over the batch, from being pushed below λ, and warm-up ramps the KL weight "
    "from 0. Training runs on the server in the background: you can leave this page, or close the tab, and come "
    "back to it.",
    r"\mathcal L=\underbrace{-\tfrac1B\textstyle\sum_b\mathbb E_{q(z|x_b)}\log p(x_b|z)}_{\text{reconstruction}}"
    r"+\beta\sum_{j=1}^{d}\max\Big(\lambda,\ \tfrac1B\textstyle\sum_b\mathrm{KL}\big(q(z_j|x_b)\,\|\,p(z_j)\big)\Big)",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
import pandas as pd  # noqa: E402
from vae_core import checkpoint as ckpt_io  # noqa: E402
from vae_core import store  # noqa: E402
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig, recommended_training, tutorial_preset  # noqa: E402
from vae_core.data import BUILTIN, DataError  # noqa: E402
from vae_core.jobs import DONE, FAILED, format_duration  # noqa: E402
from vae_core.runs import DIVERGED, STOPPED, RunLimitError, RunSpec, default_label, runs_per_owner  # noqa: E402
from vae_core.ui import cache, cures, jobs, state, widgets  # noqa: E402
from vae_core.ui.text import plain  # noqa: E402

LIMIT_KEY = "tr_limit_message"
SIZED_KEY = "tr_sized_for"  # the dataset whose size set the epochs and batch size
FORM = ("tr_dataset", "tr_download", "tr_recipe", "tr_latent", "tr_arch", "tr_hidden", "tr_lik", "tr_beta",
        "tr_free_bits", "tr_schedule", "tr_warmup", "tr_cycles", "tr_ramp", "tr_kl_target", "tr_capacity",
        "tr_capacity_epochs", "tr_gamma", "tr_aggressive", "tr_cvae", "tr_epochs", "tr_lr", "tr_batch", "tr_seed", "tr_save_overwrite", "tr_image_size", SIZED_KEY)
RUN_KEY = "tr_run"  # the id of the run this page shows
ACTIVATED_KEY = "tr_activated"  # runs whose model this session has already made active
SAVED_KEY = "tr_saved"  # {run id: name it was saved under}
UPLOAD_ERROR_KEY = "tr_upload_error"
REGISTER_KEY = "tr_register"  # (job key, file name) of the upload being stored
state.restore_form("train", FORM)
svc = jobs.service(warm=True)
ws = store.Workspace()
me = state.browser_id()
avail = cache.builtin_available()


def dataset_options() -> dict[str, str]:
    """{choice: label}: the built-in datasets, the users' datasets stored in the workspace, an upload."""
    options = {}
    for name in BUILTIN:
        label = state.DATASET_LABELS[name]
        options[name] = label if avail.get(name) else f"{label} (not found locally: needs a download)"
    for d in ws.list_datasets():
        shape = "×".join(map(str, d.image_shape))
        options[f"file:{d.hash}"] = f"file · {d.file_name} ({d.n_images:,} images of {shape}, {d.short})"
    options["upload"] = "upload a file (.zip of images, .npz, .npy or .csv)…"
    return options


def _store_upload() -> None:
    """Store an uploaded data file in the workspace by content hash, as a job (a .zip of many images takes a
    while): the page follows it, and selects the dataset once it is stored."""
    up = st.session_state.get("tr_upload")
    if up is None:
        return
    size = int(st.session_state.get("tr_image_size") or 0) or None
    st.session_state.pop(UPLOAD_ERROR_KEY, None)
    st.session_state[REGISTER_KEY] = (jobs.register_job(up.getvalue(), up.name, size).key, up.name)


def _stored_upload() -> None:
    """The upload being stored (before the dataset selector is drawn): once stored, select it; if it failed, say
    why (the upload's fault, in its words)."""
    key, name = st.session_state.get(REGISTER_KEY) or (None, None)
    job = jobs.board().get(key) if key else None
    if job is None or not job.done:
        return
    st.session_state.pop(REGISTER_KEY)
    if job.status == DONE:
        st.session_state["tr_dataset"] = f"file:{job.result.hash}"
    elif job.status == FAILED:
        st.session_state[UPLOAD_ERROR_KEY] = f"{name} cannot be used: {job.error}"


def _apply_recipe() -> None:
    """Fill the form's widgets from the chosen recipe (runs before the widgets are drawn)."""
    recipe = st.session_state.get("tr_recipe")
    if recipe == "tutorial":
        pre = tutorial_preset(latent_dim=2, epochs=20)
        values = {"tr_latent": pre.model.latent_dim, "tr_arch": "mlp", "tr_lik": "bernoulli", "tr_hidden": "400",
                  "tr_beta": pre.objective.beta, "tr_free_bits": pre.objective.free_bits,
                  "tr_schedule": cures.schedule_of(pre.objective), "tr_warmup": float(pre.objective.warmup_epochs),
                  "tr_aggressive": False, "tr_epochs": pre.train.epochs, "tr_lr": pre.train.lr,
                  "tr_batch": pre.train.batch_size, "tr_seed": pre.train.seed, "tr_cvae": False}
    elif recipe == "quick":
        values = {"tr_latent": 2, "tr_arch": "mlp", "tr_lik": "bernoulli", "tr_hidden": "64", "tr_beta": 1.0,
                  "tr_free_bits": 0.0, "tr_schedule": "none", "tr_warmup": 0.0, "tr_aggressive": False, "tr_epochs": 2, "tr_lr": 1e-3, "tr_batch": 64, "tr_seed": 0,
                  "tr_cvae": False}
    else:
        return
    st.session_state.update(values)


# ---------------------------------------------------------------- 1 · data
st.subheader("1 · Data")
_stored_upload()
options = dataset_options()
if st.session_state.get("tr_dataset") not in options:
    st.session_state["tr_dataset"] = "digits"
d1, d2 = st.columns([2, 3])
choice = d1.selectbox("Dataset", list(options), format_func=options.get, key="tr_dataset",
                      help="Files you upload are validated once and kept in the workspace under their content hash: "
                           "they stay listed here, for everyone using this server, and models trained on them find "
                           "them again in any session.")
data, ref = None, None
with d2:
    if choice == "upload":
        u1, u2 = st.columns([3, 1])
        u2.number_input("Image size for a .zip (px, 0 = most common)", 0, 256, 0, key="tr_image_size",
                        on_change=_store_upload,
                        help="Images in a .zip are scaled so that the shorter side fits, then cropped to a square of "
                             "this size. 0 keeps the most common size in the file, scaled down to at most 64 px.")
        widgets.file_upload(u1, "Images: a .zip of PNG/JPEG files (one subfolder per class gives the labels), "
                            ".npz with arrays x (N×H×W or N×H×W×C) and optional labels y, .npy, or .csv with one "
                            "image per row (optional label column)", "tr_upload", on_change=_store_upload)
        storing = jobs.board().get(st.session_state[REGISTER_KEY][0]) if REGISTER_KEY in st.session_state else None
        if storing is not None and storing.done:
            st.rerun()  # it ended during this run: the top of the page takes its result
        elif storing is not None:
            jobs.follow(storing, storing.label)
        elif st.session_state.get(UPLOAD_ERROR_KEY):
            st.error(plain(st.session_state[UPLOAD_ERROR_KEY]))
        else:
            st.info("Choose a file: it is checked, stored in the workspace and selected above (a .zip of many images "
                    "is decoded in the background, with its progress here and a Cancel button).")
    else:
        ref = store.DataRef(choice) if choice in BUILTIN else store.DataRef(ws.dataset_info(choice[5:]).file_name,
                                                                            choice[5:])
        download = False
        if ref.builtin and not avail.get(choice):
            download = st.checkbox(f"Allow downloading {state.DATASET_LABELS[choice]} (30 s timeout per connection)",
                                   key="tr_download")
        if not ref.builtin or avail.get(choice) or download:
            try:
                data = cache.dataset(ref, download)
            except DataError as err:
                st.error(plain(err))
        else:
            st.info(f"{state.DATASET_LABELS[choice]} was not found on this machine. Tick the box to download it, "
                    "or pick digits.")
    if data is not None:
        info = data.info()
        if st.session_state.get(SIZED_KEY) != choice:  # a new dataset: epochs and batch to fit its size
            fit = recommended_training(info["n_train"])
            st.session_state.update({SIZED_KEY: choice, "tr_epochs": fit.epochs, "tr_batch": fit.batch_size})
        st.success(f"**{plain(data.name)}**: {info['n_train']:,} training and {info['n_test']:,} test images of "
                   f"{'×'.join(map(str, data.image_shape))} (C×H×W), {info['n_classes'] or 'no'} classes.")

# ---------------------------------------------------------------- 2 · model and objective
st.subheader("2 · Model and objective")
st.selectbox("Recipe", ["custom", "tutorial", "quick"], key="tr_recipe", on_change=_apply_recipe,
             format_func={"custom": "custom (keep my settings)",
                          "tutorial": "tutorial recipe (pytorch/examples: MLP 400, Adam 1e-3, batch 128, 20 epochs)",
                          "quick": "quick test (MLP 64, 2 epochs)"}.get,
             help="Choosing a recipe fills in the fields below; you can still change any of them.")
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
                            help=cures.FREE_BITS)
schedule = g3.selectbox("KL weight over training", list(cures.SCHEDULES), key="tr_schedule",
                        format_func=lambda k: cures.SCHEDULES[k][0],
                        help="How the weight on the rate term changes during training: one rule per run.")
cvae = g4.checkbox("Conditional (CVAE)", key="tr_cvae", help="Encoder and decoder also see the one-hot label.",
                   disabled=data is not None and data.y_train is None)
aggressive = g4.checkbox("Aggressive encoder training", key="tr_aggressive", help=cures.AGGRESSIVE)
schedule_settings = {}
if schedule != "none":
    with st.container(border=True):
        s1, s2, s3, s4 = st.columns([1, 1, 1, 3])
        if schedule == "warm-up":
            schedule_settings["warmup_epochs"] = s1.number_input("Warm-up (epochs)", 0.0, 1000.0, 5.0, 1.0,
                                                                 key="tr_warmup")
        elif schedule == "cyclical":
            schedule_settings.update(
                kl_schedule="cyclical", cycles=int(s1.number_input("Cycles M", 1, 1000, 4, key="tr_cycles")),
                ramp=s2.number_input("Ramp share R", 0.01, 1.0, 0.5, 0.05, key="tr_ramp"))
        elif schedule == "soft":
            schedule_settings["kl_target"] = s1.number_input("Target rate (nats)", 0.1, 10000.0, 5.0, 0.5,
                                                             key="tr_kl_target")
        else:
            schedule_settings.update(
                capacity=s1.number_input("C_max (nats)", 0.1, 10000.0, 25.0, 1.0, key="tr_capacity"),
                capacity_epochs=s2.number_input("Epochs to reach it (0: all)", 0.0, 1000.0, 0.0, 1.0,
                                                key="tr_capacity_epochs"),
                gamma=s3.number_input("γ", 0.0, 100000.0, 100.0, 10.0, key="tr_gamma"))
        s4.caption(cures.SCHEDULES[schedule][1])
h1, h2, h3, h4 = st.columns(4)
SIZED_HELP = ("Set from the dataset's size when you choose it: about 20 or more batches per epoch and at least 700 "
              "optimiser steps, so that a first run does not end before the encoder has learnt anything.")
epochs = h1.number_input("Epochs", 1, 1000, 10, key="tr_epochs", help=SIZED_HELP)
lr = h2.number_input("Learning rate", 1e-6, 100.0, TrainConfig.lr, format="%g", key="tr_lr")
batch = h3.number_input("Batch size", 1, 8192, TrainConfig.batch_size, key="tr_batch", help=SIZED_HELP)
seed = h4.number_input("Random seed", 0, 2**31 - 1, 0, key="tr_seed")
state.remember_form("train", FORM)

spec, spec_error = None, None
if data is not None:
    try:
        hidden = tuple(int(w) for w in hidden_text.replace(";", ",").split(",") if w.strip())
        model_cfg = ModelConfig(image_shape=data.image_shape, latent_dim=int(latent), architecture=arch,
                                hidden=hidden or (512, 256), likelihood=likelihood,
                                n_classes=data.n_classes if cvae and data.y_train is not None else 0)
        n_weights = cache.parameter_count(model_cfg)
        if n_weights > widgets.MAX_PARAMETERS:  # e.g. many 8192-wide layers: would exhaust the server's memory
            raise ValueError(f"this model would have {n_weights:,} weights; the limit is {widgets.MAX_PARAMETERS:,} "
                             "(use fewer or narrower layers)")
        spec = RunSpec(data=ref, model=model_cfg,
                       objective=ObjectiveConfig(beta=float(beta), free_bits=float(free_bits),
                                                 aggressive=bool(aggressive), **schedule_settings),
                       train=TrainConfig(epochs=int(epochs), lr=float(lr), batch_size=int(batch), seed=int(seed)))
    except ValueError as err:  # ConfigError, or a width that is not a number
        spec_error = str(err)

busy = [r for r in svc.runs(owner=me) if r.limited and not r.done]
at_limit = len(busy) >= runs_per_owner()
b1, b2 = st.columns([1, 4], vertical_alignment="center")
pressed = b1.button("Train", type="primary", icon=":material/play_arrow:", key="tr_train",
                    disabled=spec is None or at_limit)
est = None
with b2:
    if at_limit:
        st.info(f"Your run **{plain(busy[0].label)}** is {busy[0].status}. This server trains "
                f"{runs_per_owner()} model(s) at a time per user (`$VAE_RUNS_PER_SESSION`), so everyone gets a turn: "
                "wait for it below, or stop it.")
    elif spec_error:
        st.error(f"Invalid settings: {plain(spec_error)}. Fix the field, then press Train.")
    elif spec is not None:
        with widgets.guard("estimate the training time"):
            est = cache.run_estimate(spec)
            running, queued = svc.load()
            workers = svc.executor.max_workers
            ahead = (f" The server trains {workers} model(s) at a time and is busy ({running} training, {queued} "
                     "waiting): yours would wait its turn, and the page says when it should start."
                     if running >= workers else "")
            st.caption(f"Estimated time on this machine: about **{format_duration(est.seconds)}** "
                       f"({spec.train.epochs} epochs × {format_duration(est.epoch_seconds)}: {est.steps_per_epoch} "
                       f"steps of {spec.train.batch_size} images and a test evaluation each; {est.probe_note})."
                       + ahead)
    else:
        st.caption("Choose a dataset above to train.")


def submit(run_spec: RunSpec, expected_seconds: float | None = None) -> bool:
    """Submit a training for this browser and make it the one shown; False (and a message) at the user's limit."""
    try:
        started = svc.submit(run_spec, owner=me, label=f"{default_label(run_spec)}-{time.strftime('%H%M%S')}",
                             limited=True, expected_seconds=expected_seconds)
    except RunLimitError as err:
        st.session_state[LIMIT_KEY] = str(err)
        return False
    st.session_state[RUN_KEY] = started.id
    return True


def retrain(run_spec: RunSpec, **changes) -> None:
    """A button's callback: the same run with the objective or training `changes`, put into the form too, and
    started (one click)."""
    objective = dataclasses.replace(run_spec.objective, **{k: v for k, v in changes.items()
                                                          if k in ("free_bits", "warmup_epochs")})
    train = dataclasses.replace(run_spec.train, **{k: v for k, v in changes.items() if k == "epochs"})
    st.session_state.update({"tr_free_bits": objective.free_bits, "tr_warmup": objective.warmup_epochs,
                             "tr_schedule": cures.schedule_of(objective), "tr_epochs": train.epochs,
                             "tr_recipe": "custom"})
    submit(dataclasses.replace(run_spec, objective=objective, train=train))


if pressed and spec is not None and submit(spec, est.seconds if est else None):
    st.rerun()  # redraw with the Train button reflecting the run in progress
if st.session_state.get(LIMIT_KEY):
    st.warning(plain(st.session_state.pop(LIMIT_KEY)))

def collapse_notice(run) -> None:
    """Say so when a plain run (β ≤ 1, no cure) ended with collapsed latent dimensions, why, and the fixes."""
    spec_, last = run.spec, run.history[-1]
    d, active = spec_.model.latent_dim, last["active_units"]
    if active >= d or spec_.objective.beta > 1 or not spec_.objective.is_plain or run.status not in ("done", STOPPED):
        return
    with st.container(border=True):
        st.warning(
            f"**{d - active} of {d} latent dimensions collapsed.** Their posterior is the prior for every image "
            f"(KL ≈ 0), so the decoder ignores them{' and this model is no better than the mean image' if not active else ''}."
            " This is common early in training: the decoder learns faster than the encoder, and while the codes "
            "still carry little information the cheapest way to lower the loss is to switch them off (the encoder "
            "lags the decoder; He et al. 2019). It is not a property of your data. Each button below trains again "
            "with one fix.", icon=":material/compress:")
        longer = min(1000, max(3 * spec_.train.epochs, spec_.train.epochs + 20))
        c1, c2, c3, c4 = st.columns(4)
        c1.button(f"Train longer ({longer} epochs)", key="tr_fix_longer", disabled=at_limit, on_click=retrain,
                  args=(spec_,), kwargs={"epochs": longer})
        c2.button("Free bits λ = 0.5", key="tr_fix_free_bits", disabled=at_limit, on_click=retrain, args=(spec_,),
                  kwargs={"free_bits": 0.5},
                  help="Each dimension's KL counts as at least 0.5 nats, so switching it off gains nothing.")
        warm = float(max(1, round(spec_.train.epochs / 3)))
        c3.button(f"KL warm-up ({warm:g} epochs)", key="tr_fix_warmup", disabled=at_limit, on_click=retrain,
                  args=(spec_,), kwargs={"warmup_epochs": warm},
                  help="The KL weight starts at 0, so the encoder learns to use the codes before they cost.")
        widgets.page_link(c4, "app_pages/5_Collapse_lab.py", "Compare the cures in the Collapse lab",
                          ":material/compress:")


# ---------------------------------------------------------------- 3 · training
st.subheader("3 · Training")
mine = svc.runs(owner=me)
run = svc.get(st.session_state.get(RUN_KEY, "")) or (mine[0] if mine else None)
if run is None:
    st.info("Configure above and press **Train**. On the 8×8 digits a 10-epoch run takes a few seconds.")
    widgets.stop()
st.markdown(f"**{plain(run.label)}** · {plain(run.spec.data.name)} · d = {run.spec.model.latent_dim} · "
            f"{run.spec.objective.label} · {run.spec.train.epochs} epochs")
if not run.done:
    jobs.watch_run(run, svc)
    widgets.stop()

hist = run.history
if run.status == DIVERGED:
    st.warning(run.reason, icon=":material/warning:")
    if not hist:
        st.info("No epoch completed, so there is no model to keep. Lower the learning rate (1e-3 is a good start) "
                "and press Train again.")
elif run.status == STOPPED or run.status == "interrupted":
    st.info(f"Training {run.reason}." if run.status == STOPPED else f"Training was interrupted: {run.reason}.")
elif run.status == "failed":
    st.error(f"Training failed: {plain(run.error)}. Change the settings and press Train again.")
elif run.status == "cancelled":
    st.info("This run was cancelled before it started.")
else:
    st.success(f"Training finished: {len(hist)} epochs in {format_duration(run.elapsed)}.")
if hist:
    last = hist[-1]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("test −ELBO (nats/image)", f"{last['test_elbo']:.2f}")
    m2.metric("reconstruction", f"{last['test_recon']:.2f}")
    m3.metric("KL", f"{last['test_kl']:.2f}")
    m4.metric("active units", f"{last['active_units']} / {run.spec.model.latent_dim}")
    collapse_notice(run)
    jobs.run_live(run, svc)
    if run.saved is not None:
        with st.expander("Watch the training again (replay)", expanded=last["active_units"] < run.spec.model.latent_dim):
            widgets.replay_panel(run.saved, f"run_{run.id}")
if run.saved is not None and run.id not in st.session_state.setdefault(ACTIVATED_KEY, set()):
    st.session_state[ACTIVATED_KEY].add(run.id)
    st.session_state[state.PENDING_KEY] = f"run:{run.id}"
    st.rerun()  # show the new model as the active one in the sidebar

# ---------------------------------------------------------------- your runs
if len(mine) > 1:
    with st.expander(f"Your runs on this server ({len(mine)})"):
        st.dataframe(pd.DataFrame([{
            "run": r.label, "status": r.status, "epochs": f"{len(r.history)} / {r.spec.train.epochs}",
            "test −ELBO": r.history[-1]["test_elbo"] if r.history else None,
            "time": format_duration(r.elapsed), "id": r.id} for r in mine]),
            hide_index=True, width="stretch", column_config={"test −ELBO": st.column_config.NumberColumn(format="%.2f")})
        shown = st.selectbox("Show run", [r.id for r in mine], index=[r.id for r in mine].index(run.id),
                             format_func=lambda i: svc.get(i).label, key="tr_show_run")
        if shown != run.id:
            st.session_state[RUN_KEY] = shown
            st.rerun()

# ---------------------------------------------------------------- 4 · save
if run.saved is not None:
    st.subheader("4 · Save")
    st.caption("The model is already active for you (under 'run' in the sidebar) and recorded on the server. Save "
               "it under a name to keep it for good: saved models are listed for everyone using this server, and "
               "`?model=NAME` opens them from any browser.")
    s1, s2, s3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    name = s1.text_input("Name", run.label, key=f"tr_save_name_{run.id}",
                         help="Letters, digits, '-', '_' and '.'; saved as models/NAME.safetensors in the workspace")
    overwrite = s2.checkbox("Overwrite if it exists", key="tr_save_overwrite")
    if s3.button("Save", key="tr_save", icon=":material/save:"):
        try:
            ckpt = cache.load_checkpoint_file(str(run.saved), run.saved.stat().st_mtime_ns)
            path = ws.save_model(name, ckpt, overwrite=overwrite, replay_of=run.saved)
            st.session_state.setdefault(SAVED_KEY, {})[run.id] = path.stem
            st.session_state[state.PENDING_KEY] = f"saved:{path.stem}"
            st.rerun()
        except ckpt_io.CheckpointExistsError as err:
            st.warning(f"{plain(err)} — or tick 'Overwrite if it exists'.")
        except (ckpt_io.CheckpointError, OSError) as err:
            st.error(f"Could not save: {plain(err)}")
    saved_as = st.session_state.get(SAVED_KEY, {}).get(run.id)
    if saved_as:
        st.success(f"Saved as **{plain(saved_as)}** in the workspace ({plain(ws.models_dir)}): listed under 'saved' "
                   f"in the sidebar, and opened anywhere with `?model={plain(saved_as)}`.")
