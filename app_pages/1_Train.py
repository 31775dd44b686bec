"""Train: configure a run, follow it live while it trains in the background, reopen and save its model."""
import time

import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Train a VAE",
    "Fit a variational auto-encoder by maximising the ELBO on the chosen training set; the curves show, per "
    "epoch and in nats per image, the test −ELBO (lower is better) and its two parts — how badly images are "
    "reconstructed, and how far the posteriors sit from the prior (KL, on its own panel: it is often hundreds of "
    "times smaller), with the number of active latent units under it. β weighs the KL, free bits stop each "
    "latent dimension's KL, averaged over the batch, from being pushed below λ, and warm-up ramps the KL weight "
    "from 0. A finished run says whether its latent dimensions collapsed, why, and which fixes work for it. "
    "Training runs on the server in the background: you can leave this page, or close the tab, and come back to it.",
    r"\mathcal L=\underbrace{-\tfrac1B\textstyle\sum_b\mathbb E_{q(z|x_b)}\log p(x_b|z)}_{\text{reconstruction}}"
    r"+\beta\sum_{j=1}^{d}\max\Big(\lambda,\ \tfrac1B\textstyle\sum_b\mathrm{KL}\big(q(z_j|x_b)\,\|\,p(z_j)\big)\Big)",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
import pandas as pd  # noqa: E402
from vae_core import checkpoint as ckpt_io  # noqa: E402
from vae_core import collapse  # noqa: E402
from vae_core import store  # noqa: E402
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig, recommended_training, tutorial_preset  # noqa: E402
from vae_core.jobs import format_duration  # noqa: E402
from vae_core.resume import ResumeError  # noqa: E402
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
state.restore_form("train", FORM)
svc = jobs.service(warm=True)
ws = store.Workspace()
me = state.browser_id()


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
d1, d2 = st.columns([2, 3])
choice, ref, data = widgets.dataset_picker("tr", d1, d2)
with d2:
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
            _, expected = jobs.expected_run_seconds(svc, [est])
            st.caption(f"Estimated time on this machine: {expected}. Its probe: {spec.train.epochs} epochs × "
                       f"{format_duration(est.epoch_seconds)} ({est.steps_per_epoch} steps of "
                       f"{spec.train.batch_size} images, a test evaluation, a replay frame and a saved state each; "
                       f"{est.probe_note}).")
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


def resume_run(run_id: str) -> None:
    """A button's callback: continue this browser's interrupted or stopped run from its last complete epoch."""
    try:
        svc.resume(run_id, limited=True)
    except (RunLimitError, ResumeError) as err:
        st.session_state[LIMIT_KEY] = str(err)


FIX_FIELDS = {"beta": "tr_beta", "free_bits": "tr_free_bits", "epochs": "tr_epochs"}  # a fix's setting → its widget


def retrain(run_spec: RunSpec, fix: collapse.Fix) -> None:
    """A button's callback: the same run with one `fix` of its collapse, put into the form too, and started (one
    click)."""
    fixed = fix.apply(run_spec)
    values = {**fixed.model.to_dict(), **fixed.objective.to_dict(), **fixed.train.to_dict()}
    st.session_state.update({key: values[name] for name, key in FIX_FIELDS.items() if name in fix.changes})
    st.session_state.update({"tr_schedule": cures.schedule_of(fixed.objective), "tr_recipe": "custom"})
    submit(fixed)


if pressed and spec is not None and submit(spec, est.seconds if est else None):
    st.rerun()  # redraw with the Train button reflecting the run in progress
if st.session_state.get(LIMIT_KEY):
    st.warning(plain(st.session_state.pop(LIMIT_KEY)))

def collapse_notice(run) -> None:
    """Whether the finished run collapsed (`collapse.verdict`: which dimensions, by KL per dimension and by active
    units), why for its settings, and each measured fix as a one-click run, best first."""
    if run.status not in ("done", STOPPED):
        return
    found = collapse.verdict(run.history[-1], run.spec)
    if not found.n_collapsed:
        st.info(f"**{found.headline}** {found.measures}", icon=":material/check_circle:")
        return
    with st.container(border=True):
        st.warning(f"**{found.headline}** {found.measures} {found.reason} Each button below trains again with one "
                   "fix, the first the surest; the KL panel of the curves shows when each dimension fell to 0.",
                   icon=":material/compress:")
        columns = st.columns(len(found.fixes) + 1)
        for column, fix in zip(columns, found.fixes):
            column.button(fix.label, key=f"tr_fix_{fix.key}", disabled=at_limit, on_click=retrain,
                          args=(run.spec, fix), help=fix.why)
        widgets.page_link(columns[-1], "app_pages/5_Collapse_lab.py", "Compare the cures in the Collapse lab",
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
    if run.owner == me and svc.resumable(run):
        st.button(f"Resume from epoch {len(hist)} (to {run.spec.train.epochs})", key="tr_resume", on_click=resume_run,
                  args=(run.id,), disabled=at_limit, icon=":material/play_circle:",
                  help="Continues from the state saved after the last complete epoch; it ends as the run would "
                       "have ended had it never stopped.")
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
        replay_box = st.expander("Watch the training again (replay)", key=f"tr_replay_{run.id}", on_change="rerun",
                                 expanded=last["active_units"] < run.spec.model.latent_dim)
        if replay_box.open:  # drawn only when open: a class's finished runs would otherwise all draw theirs
            with replay_box:
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
            path = svc.save(run, name, overwrite=overwrite)
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
                   f"in the sidebar, and opened anywhere with `?model={saved_as}`.")
