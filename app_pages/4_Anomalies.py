"""Anomalies: per-image scores of the test set, the flagged images, a second dataset scored against the test set
(raw and complexity-corrected), and the held-out-class experiment."""
import numpy as np
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Anomalies",
    "An image the model explains badly gets a high score: its −ELBO (nats; an upper bound on −log p(x)), its "
    "reconstruction error, or the tighter IWAE bound with k importance samples. Move the threshold to flag the "
    "tail of the histogram and inspect those images next to their reconstructions. The held-out-class "
    "experiment trains a quick model without one class and asks how well the score separates that class "
    "(AUROC 1 = perfectly, 0.5 = chance). **Score new data** runs the model on a second dataset and asks the same "
    "of it, with −ELBO and with the complexity-corrected score S(x) = −ELBO(x) − L(x) of Serrà et al. 2020: L(x) is "
    "the image's length in nats under a lossless compressor, because a likelihood favours simple images, even "
    "ones it never saw (Nalisnick et al. 2019), and subtracting L(x) removes that bias.",
    r"\text{score}(x)=-\mathrm{ELBO}(x)=-\mathbb E_{q(z|x)}[\log p(x|z)]+\mathrm{KL}(q(z|x)\,\|\,p(z))"
    r"\;\ge\;-\log\tfrac1k\textstyle\sum_{i=1}^k\frac{p(x,z_i)}{q(z_i|x)}\;\ge\;-\log p(x)",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
import torch  # noqa: E402
from vae_core import pictures, plots, store  # noqa: E402
from vae_core.anomaly import (CHANCE_BAND, CORRECTED_SCORE, RAW_SCORE, SCORE_KEYS, explain_auroc, threshold_flags,  # noqa: E402
                              top_k, top_new_images)
from vae_core.complexity import COMPRESSOR  # noqa: E402
from vae_core.config import ModelConfig, TrainConfig  # noqa: E402
from vae_core.data import BUILTIN, DataError, load_array_file  # noqa: E402
from vae_core.export import latents_table  # noqa: E402
from vae_core.pixels import as_float  # noqa: E402
from vae_core.jobs import format_duration  # noqa: E402
from vae_core.runs import DONE, RunLimitError, RunSpec  # noqa: E402
from vae_core.store import DataRef  # noqa: E402
from vae_core.ui import cache, jobs, state, widgets  # noqa: E402
from vae_core.ui.text import plain, sentence  # noqa: E402

HELD_OUT_KEY = "an_held_out_runs"  # {experiment key: run id}
NEW_CAP = 10_000  # new images scored at most: the first ones of the dataset
NEW_SOURCE, NEW_UPLOAD, NEW_ERROR = "an_new_source", "an_new_upload", "an_new_upload_error"
NEW_FORM = (NEW_SOURCE, "an_new_score", "an_new_top")  # kept when the user leaves the page and comes back
BUILTIN_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}  # (C, H, W)
NEW_SCORES = {RAW_SCORE: "raw −ELBO (nats)", CORRECTED_SCORE: "corrected S(x) = −ELBO − L(x) (nats)"}
state.restore_form("anomalies", NEW_FORM)

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
        values = jobs.follow_or_offer(
            jobs.iwae_started(am.key, k),
            lambda: cache.iwae_estimate(am.key, am.model, am.data.x_test, am.labels_for_model, k),
            lambda seconds: jobs.iwae_job(am.key, am, k, seconds), label, "Compute the IWAE bound", "an_iwae_start")


def test_set_section(values: np.ndarray) -> None:
    """The histogram of the chosen score with its threshold, the flagged images' exports, and the top images."""
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
        flagged_frame = (frame[frame["selected"]].drop(columns=["selected"]).set_index("index").loc[flagged]
                         .reset_index())
        st.download_button("Flagged indices and scores (CSV)", lambda: flagged_frame.to_csv(index=False).encode(),
                           file_name=f"{stem}-flagged.csv", mime="text/csv", on_click="ignore",
                           icon=":material/download:", key="an_dl_flagged", disabled=len(flagged) == 0)
        st.download_button("All scores (CSV)",
                           lambda: frame.rename(columns={"selected": "flagged"}).to_csv(index=False).encode(),
                           file_name=f"{stem}-scores.csv", mime="text/csv", on_click="ignore",
                           icon=":material/download:", key="an_dl_all")

    st.subheader("Most anomalous test images")
    top = st.slider("how many", 4, 48, 16, 4, key="an_top")
    with widgets.guard("show the most anomalous images"):
        idx = top_k(values, top)
        x, r = cache.reconstruct(am, idx)
        widgets.image(pictures.to_uint8(pictures.tile(pictures.pairs_picture(x, r, per_row=8)),
                                        pictures.display_scale(am.config.image_shape[1], 56)),
                      caption="inputs (upper rows) and reconstructions (lower rows), highest score first: "
                              + ", ".join(f"#{i} ({values[i]:.1f})" for i in idx))


if values is not None:
    test_set_section(values)

# ---------------------------------------------------------------- score new data

def describe_shape(shape) -> str:
    """'grey 8×8', 'colour 32×32' or '2-channel 16×16' for a (C, H, W) image shape."""
    c, h, w = shape
    kind = {1: "grey", 3: "colour", 4: "colour (with alpha)"}.get(c, f"{c}-channel")
    return f"{kind} {h}×{w}"


def shape_problem(got, want, what: str) -> str | None:
    """Why images of shape `got` (C, H, W) cannot be scored by a model of `want`, in words, or None."""
    got, want = tuple(int(v) for v in got), tuple(int(v) for v in want)
    if got == want:
        return None
    if got[0] != want[0]:
        return (f"{what} holds {describe_shape(got)} images but this model takes {describe_shape(want)} images: "
                "grey and colour must match the model's.")
    square = want[1] == want[2]
    how = (f" A .zip of PNG/JPEG images is resized to {want[1]}×{want[2]} for you; arrays (.npz, .npy, .csv) must "
           "already have that size." if square else " Resize the images to that size first.")
    return f"{what} holds {got[1]}×{got[2]} images but this model takes {want[1]}×{want[2]} images.{how}"


def new_data_options() -> tuple[dict[str, str], list[str]]:
    """({choice: label} of the second datasets this model can score, what is not offered and why)."""
    shape = tuple(am.config.image_shape)
    own_hash = am.ckpt.dataset.get("hash") or None
    avail = cache.builtin_available()
    options, notes = {}, []
    for name in BUILTIN:
        label = state.DATASET_LABELS[name].split(" (")[0]
        if own_hash is None and name == am.dataset_name:
            notes.append(f"{label} (the model's own data: its test set is what the new images are compared with)")
        elif BUILTIN_SHAPES[name] != shape:
            notes.append(f"{label} ({describe_shape(BUILTIN_SHAPES[name])} images)")
        elif not avail.get(name):
            notes.append(f"{label} (not found on this machine)")
        else:
            options[f"builtin:{name}"] = f"{label} (built-in, its test split)"
    other = 0
    for d in store.Workspace().list_datasets():
        if d.hash == own_hash:
            notes.append(f"{d.file_name} (the model's own data)")
            continue
        if tuple(d.image_shape) != shape:
            other += 1
            continue
        options[f"file:{d.hash}"] = f"file · {d.file_name} ({d.n_images:,} images, {d.short})"
    if other:
        notes.append(f"{other} stored dataset{'s' if other > 1 else ''} of another image shape")
    options["upload"] = "upload a file (.zip of images, .npz, .npy or .csv)…"
    return options, notes


def _store_new_upload(shape: tuple[int, int, int], own_hash: str | None) -> None:
    """Validate an uploaded second dataset against the model's image shape, store it in the workspace by content
    hash (so it is listed next time) and select it."""
    up = st.session_state.get(NEW_UPLOAD)
    if up is None:
        return
    _, h, w = shape
    try:  # a .zip is resized to the model's image size when that is a square, as the Train page does
        arrays = load_array_file(up.getvalue(), up.name, image_size=h if h == w else None)
        problem = shape_problem(arrays.x.shape[1:], shape, up.name)
        if problem:
            st.session_state[NEW_ERROR] = problem
            return
        stored = store.Workspace().put_dataset(arrays, up.name, owner=state.browser_id())
    except DataError as err:
        st.session_state[NEW_ERROR] = f"{up.name} cannot be used: {sentence(err)}"
        return
    if stored.hash == own_hash:
        st.session_state[NEW_ERROR] = (f"{up.name} holds the very images this model was trained and tested on; "
                                       "choose other images.")
        return
    st.session_state.pop(NEW_ERROR, None)
    st.session_state[NEW_SOURCE] = f"file:{stored.hash}"


def new_images(choice: str):
    """(images (K, C, H, W), labels or None, how many the dataset holds, its name, which images they are) of the
    chosen second dataset, at most NEW_CAP of them."""
    if choice.startswith("builtin:"):
        name = choice.split(":", 1)[1]
        data = cache.dataset(DataRef(name))
        x, y, which_part = data.x_test, data.y_test, "its test split"
        title = state.DATASET_LABELS[name].split(" (")[0]
    else:
        arrays, file_name = cache.stored_images(choice.split(":", 1)[1])
        first = arrays.in_file_order(NEW_CAP)  # the file's own order: the export's indices are its rows
        return first.x, first.y, len(arrays.x), file_name, "the whole file"
    return x[:NEW_CAP], None if y is None else y[:NEW_CAP], len(x), title, which_part


def label_problem(y, title: str) -> str | None:
    """Why a conditional model cannot score these images (it needs their labels, within its classes), or None."""
    k = am.config.n_classes
    if not k:
        return None
    if y is None:
        return (f"This model is a conditional VAE ({k} classes): it scores an image together with its label, and "
                f"{plain(title)} has no labels. Use a file with labels (y in a .npz, a label column in a .csv, "
                "class folders in a .zip).")
    top = int(y.max())
    if top >= k:
        return (f"The labels of {plain(title)} go up to {top}, but this conditional VAE knows classes 0…{k - 1} "
                "only.")
    return None


def rows_of(x, idx: np.ndarray) -> np.ndarray:
    """Images `idx` of `x` (a tensor on any device, or an array) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return as_float(x[torch.as_tensor(idx, device=x.device)]).cpu().numpy()
    return as_float(np.asarray(x)[idx])


def corrected_in_words(auroc: float, unseen: str, seen: str) -> str:
    """`explain_auroc` for the corrected score, except below chance, where the likelihood is not what failed."""
    if auroc >= 0.5 - CHANCE_BAND:
        return explain_auroc(auroc, unseen, seen)
    return (f"AUROC {auroc:.2f}: below chance: the corrected score ranks {unseen} BELOW {seen}, because their "
            "compressed length L(x) exceeds the test images' by more than their −ELBO does. Images that no "
            "compressor can shorten (noise, fine texture) get a low corrected score even when the model finds them "
            "strange; the raw score is the better guide here.")


def new_data_results(result_key: str, result: dict, x_new) -> None:
    """AUROCs of both scores side by side (and what they mean), the overlaid histograms, the ROC curves, the
    top-scored new images and the CSV of every score."""
    raw, corrected = result["auroc"][RAW_SCORE], result["auroc"][CORRECTED_SCORE]
    n_test, n_new = result["n_test"], result["n_new"]
    m1, m2 = st.columns(2)
    m1.metric("New vs. test AUROC · raw −ELBO", f"{raw:.3f}",
              help="How well −ELBO ranks the new images above the test images: 1 = perfectly, 0.5 = chance, "
                   "below 0.5 = the new images look MORE likely to the model.")
    m2.metric("New vs. test AUROC · corrected −ELBO − L(x)", f"{corrected:.3f}",
              delta=f"{corrected - raw:+.3f} vs. raw",
              help=f"The same with S(x) = −ELBO(x) − L(x), where L(x) is the image's length under "
                   f"{result['compressor']} in nats (Serrà et al. 2020).")
    unseen, seen = "the new images", "the test images"
    if raw < 0.5:
        st.warning(plain(
            f"Raw −ELBO: {explain_auroc(raw, unseen, seen)} Why it can fall below 0.5: a likelihood model can prefer "
            f"simpler data it never saw (Nalisnick et al. 2019): an image with large flat areas and few edges costs "
            f"few nats to describe, whatever it shows, so it gets a low −ELBO even from a model that has never seen "
            f"anything like it. "
            f"The corrected score of Serrà et al. 2020 subtracts the image's compressed length L(x) in nats "
            f"({result['compressor']}), which measures that simplicity, and keeps how many more nats the model needs "
            f"than a generic compressor. Corrected: {corrected_in_words(corrected, unseen, seen)}"))
    else:
        st.caption(plain(f"Raw −ELBO: {explain_auroc(raw, unseen, seen)}"))
        words = plain(f"Corrected, L(x) measured with {result['compressor']}: "
                      f"{corrected_in_words(corrected, unseen, seen)}")
        (st.warning if corrected < 0.5 - CHANCE_BAND else st.caption)(words)

    chosen = st.radio("Score for the histogram and the top images", list(SCORE_KEYS), format_func=NEW_SCORES.get,
                      horizontal=True, key="an_new_score")
    key = SCORE_KEYS[chosen]
    g1, g2 = st.columns([3, 2])
    with g1:
        st.plotly_chart(plots.overlaid_histograms({f"test images ({n_test:,})": result["test"][key],
                                                   f"new images ({n_new:,})": result["new"][key]},
                                                  NEW_SCORES[chosen]), key="an_new_hist")
    with g2:
        st.plotly_chart(plots.roc_figure(result["curves"], height=360), key="an_new_roc")

    top = st.slider("how many new images", 4, 48, 16, 4, key="an_new_top")
    idx = top_new_images(result, top, key)
    values = result["new"][key]
    widgets.image(pictures.to_uint8(pictures.tile(pictures.grid_of(rows_of(x_new, idx), per_row=8)),
                                    pictures.display_scale(am.config.image_shape[1], 56)),
                  caption=f"new images with the highest {NEW_SCORES[chosen]}, highest first: "
                          + ", ".join(f"#{i} ({values[i]:.1f})" for i in idx))
    st.download_button("Scores of both sets (CSV)", cache.new_data_csv(result_key, result),
                       file_name=f"{stem}-new-data-scores.csv", mime="text/csv", on_click="ignore",
                       icon=":material/download:", key="an_dl_new",
                       help="One row per image, test images first: source, index, label, neg_elbo, "
                            "complexity_nats (L(x)) and corrected, all in nats.")


def new_data_section() -> None:
    st.subheader("Score new data")
    st.caption("Score a second dataset with this model and ask how well each score tells its images from the test "
               "set (new = anomalous): the raw −ELBO, and the complexity-corrected score, which subtracts the image's "
               f"length L(x) in nats under a lossless compressor, here {COMPRESSOR}. It runs on the server, with "
               "progress and a Cancel button, and the result stays while the server runs.")
    st.latex(r"S(x)=-\mathrm{ELBO}(x)-L(x)")
    options, notes = new_data_options()
    if st.session_state.get(NEW_SOURCE) not in options:
        st.session_state[NEW_SOURCE] = None
    s1, s2 = st.columns([2, 3])
    choice = s1.selectbox("Second dataset", list(options), format_func=options.get, key=NEW_SOURCE, index=None,
                          placeholder="choose a dataset to score…",
                          on_change=lambda: st.session_state.pop(NEW_ERROR, None),
                          help="Built-in datasets whose images have the model's shape, the datasets stored in "
                               "the workspace, or a file of yours (stored there once checked).")
    shape = tuple(am.config.image_shape)
    if notes:
        s1.caption(plain(f"Not offered for this model ({describe_shape(shape)} images): " + "; ".join(notes) + "."))
    if choice == "upload":
        with s2:
            own_hash = am.ckpt.dataset.get("hash") or None
            square = shape[1] == shape[2]
            widgets.file_upload(st, f"Images of {describe_shape(shape)} pixels: a .zip of PNG/JPEG files"
                                    + (f" (resized to {shape[1]}×{shape[2]})" if square else "")
                                    + ", .npz with an array x (and optional labels y), .npy, or .csv with one image "
                                      "per row", NEW_UPLOAD, on_change=_store_new_upload, args=(shape, own_hash))
            if st.session_state.get(NEW_ERROR):
                st.error(plain(st.session_state[NEW_ERROR]))
            else:
                st.info("Choose a file: it is checked, stored in the workspace and selected on the left.")
        return
    if choice is None:
        return
    loaded = None
    with widgets.guard("load the second dataset"):
        loaded = new_images(choice)
    if loaded is None:
        return
    x_new, y_new, total, title, which_part = loaded
    problem = shape_problem(x_new.shape[1:], shape, plain(title)) or label_problem(y_new, title)
    if problem:
        s2.error(problem)
        return
    k = len(x_new)
    capped = f"the first {k:,} are scored" if total > k else "all are scored"
    s2.caption(f"**{plain(title)}** ({which_part}): {total:,} images of {describe_shape(shape)}; {capped} "
               f"(at most {NEW_CAP:,}), against the {n:,} test images of {plain(am.dataset_name)}.")
    label = f"Scoring {k:,} new images against {n:,} test images"
    result = None
    with widgets.guard("score the new images"):
        result = jobs.follow_or_offer(
            jobs.new_data_started(am.key, choice),
            lambda: cache.new_data_estimate(am.key, choice, am.model, x_new, y_new, n),
            lambda seconds: jobs.new_data_job(am.key, am, choice, x_new, y_new, scores, seconds), label,
            "Score the new images", "an_new_start")
    if result is not None:
        with widgets.guard("show the scores of the new images"):
            new_data_results(f"{am.key}|{choice}", result, x_new)


st.divider()
new_data_section()
state.remember_form("anomalies", NEW_FORM)

st.divider()
st.subheader("Held-out-class experiment")
st.caption("Train a small, quick VAE on the training set with one class removed, score the whole test set with "
           "it, and measure how well each score ranks the unseen class above the rest: the ROC curve and its "
           "area (AUROC). It trains on the server like any run: you can leave the page meanwhile.")
if am.data.y_train is None:
    st.info("This dataset has no labels, so there is no class to hold out.")
    widgets.stop()
names = am.data.class_names or [str(c) for c in range(am.data.n_classes)]


def class_label(c: int) -> str:
    """A class as the user knows it, once: '1' when its name is its number, else '3 (cat)'."""
    name = str(names[c]) if c < len(names) else str(c)
    return str(c) if name == str(c) else f"{c} ({name})"


e1, e2, e3, e4 = st.columns(4, vertical_alignment="bottom")
held = e1.selectbox("Held-out class", list(range(am.data.n_classes)), key="an_class", format_func=class_label)
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
svc = jobs.service(warm=True)
run = svc.get(experiments.get(exp_key, ""))
with widgets.guard("estimate the experiment's time"):
    est = cache.run_estimate(spec)
    _, expected = jobs.expected_run_seconds(svc, [est])
if e4.button("Train and evaluate", type="primary", key="an_run", icon=":material/play_arrow:",
             disabled=run is not None and not run.done, width="stretch"):
    try:
        run = svc.submit(spec, owner=state.browser_id(), label=f"{state.url_name(am.id) or am.label}-without-{held}",
                         limited=True, expected_seconds=est)
        experiments[exp_key] = run.id
        st.rerun()  # redraw with the button disabled while the experiment runs
    except RunLimitError as err:
        st.warning(plain(err))
if run is None:
    st.info(f"Choose a class and press **Train and evaluate**: {expected} on this machine ({int(epochs)} epochs × "
            f"{format_duration(est.epoch_seconds)}, then scoring the {len(am.data.x_test):,} test images, "
            f"{format_duration(est.end_seconds)}; {est.probe_note}).")
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
    unseen = f"class {class_label(ev['held_out'])}"
    with r2:
        for name, auroc in ev["auroc"].items():
            st.metric(f"AUROC, {name}", f"{auroc:.3f}")
        st.caption(f"Class {plain(class_label(ev['held_out']))} is {ev['n_out']} of {n:,} test images; the quick "
                   f"model trained {len(run.history)} epoch(s) on the {ev['n_train']:,} training images of the "
                   f"other classes in {format_duration(run.elapsed)} (test −ELBO {ev['test_elbo']:.1f} nats).")
        explained = [f"{name}: {explain_auroc(auroc, unseen, 'the classes it was trained on')}"
                     for name, auroc in ev["auroc"].items()]
        if min(ev["auroc"].values()) < 0.5 - CHANCE_BAND:
            st.warning(plain(" ".join(explained) + " So the quick model gives the class it never saw a HIGHER "
                             "likelihood than the classes it learned, typically because its images are simpler (less "
                             "ink, more flat background) and a likelihood rewards simplicity: a low score does not "
                             "mean familiar."))
        else:
            for text in explained:
                st.caption(plain(text))
        kl = run.history[-1].get("test_kl") if run.history else None
        if kl is not None and kl < 0.5:  # −ELBO = reconstruction + KL: with KL ≈ 0 both rank the images alike
            st.caption(f"The two scores nearly coincide: the quick model's KL term is {kl:.2f} nats per image (its "
                       "latent code is barely used yet), so −ELBO ≈ reconstruction. More epochs separate them.")
