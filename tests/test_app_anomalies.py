"""The Anomalies page's "Score new data" section and the held-out-class experiment's wording, with
streamlit.testing (no browser): a second dataset uploaded, checked against the model's image shape, stored in the
workspace, scored as a background job; every AUROC shown is sklearn's on the scores shown and exported."""
import io
import json
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
from apphelp import (DIGITS, N_TEST, ROOT, SHIPPED_DIGITS, messages, npz_bytes, page, progress_texts, rerun_until,
                     settle, texts)
from PIL import Image
from sklearn.datasets import load_digits as sk_digits
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import app_test
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from vae_core import checkpoint as C
from vae_core.anomaly import CORRECTED_SCORE, RAW_SCORE, score_new_data
from vae_core.data import load_digits
from vae_core.locations import available_builtin
from vae_core.metrics import per_sample_scores
from vae_core.ui import cache, jobs

pytestmark = pytest.mark.skipif(not SHIPPED_DIGITS.exists(),
                                reason="the shipped digits checkpoint is missing (make checkpoints)")

PAGE = "app_pages/4_Anomalies.py"
RAW_LABEL = "New vs. test AUROC · raw −ELBO"
CORRECTED_LABEL = "New vs. test AUROC · corrected −ELBO − L(x)"
MODEL_KEY = lambda: f"{DIGITS}:{SHIPPED_DIGITS.stat().st_mtime_ns}"  # noqa: E731 — the page's key of the model
FASHION = (ROOT / "checkpoints" / "fashion-mnist-2d.safetensors").exists() and available_builtin()["fashion-mnist"]



@pytest.fixture
def media(monkeypatch):
    """The media storage of every AppTest run (the last one holds the files the page shows now)."""
    made = []

    class Recorded(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recorded)
    return made


def upload(at, name: str, blob: bytes):
    at.selectbox(key="an_new_source").set_value("upload").run()
    return at.file_uploader(key="an_new_upload").set_value((name, blob, "application/octet-stream")).run()


def scored(at):
    """Follow the scoring to its end; when the page asks first (a slow machine: an estimate over 3 s), press start."""
    settle(at)
    if any(b.key == "an_new_start" for b in at.button):
        at.button(key="an_new_start").click().run()
        settle(at)
    return at


def aurocs(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric if m.label in (RAW_LABEL, CORRECTED_LABEL)}


def expected(x_new) -> dict:
    """What the page must show: the library's scores of the shipped model, test set first (same seed)."""
    model = C.load(SHIPPED_DIGITS).model
    x_test = load_digits().x_test
    return score_new_data(model, x_test, x_new, test_scores=per_sample_scores(model, x_test))


def downloaded_csv(at, media) -> pd.DataFrame:
    [button] = [b for b in at.get("download_button") if b.proto.label == "Scores of both sets (CSV)"]
    file = media[-1].get_file(button.proto.url.rsplit("/", 1)[-1])
    assert file.filename == "digits-new-data-scores.csv" and file.mimetype == "text/csv"
    return pd.read_csv(io.BytesIO(file.content))


def digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    bunch = sk_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target


def png_zip(images: np.ndarray, mode: str = "L") -> bytes:
    """A .zip of PNG files (no class folders: unlabelled) of [0, 1] images (N, H, W)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, im in enumerate(images):
            png = io.BytesIO()
            Image.fromarray((im * 255).round().astype(np.uint8)).convert(mode).save(png, format="PNG")
            z.writestr(f"img_{i:04d}.png", png.getvalue())
    return buf.getvalue()


def test_an_uploaded_dataset_is_stored_scored_as_a_job_and_every_number_matches_sklearn(home, media):
    noise = np.random.default_rng(0).random((500, 8, 8)).astype(np.float32)  # (500, 8, 8) in [0, 1]
    at = page(PAGE).run()
    assert not at.exception and not at.error
    assert "Fashion-MNIST (grey 28×28 images)" in texts(at)  # not offered, and why
    assert "builtin:digits" not in at.selectbox(key="an_new_source").options  # the model's own data
    upload(at, "noise.npz", npz_bytes(x=noise))
    (stored,) = home.list_datasets()  # validated, then kept in the workspace
    assert stored.file_name == "noise.npz" and stored.image_shape == (1, 8, 8)
    assert at.session_state["an_new_source"] == f"file:{stored.hash}"
    scored(at)
    assert not at.exception and not at.error
    job = jobs.new_data_started(MODEL_KEY(), f"file:{stored.hash}")
    assert job is not None and job.status == "done"  # it ran to the end as a job

    # the AUROCs shown are the library's, which are sklearn's on the scores exported
    want = expected(noise[:, None])
    shown = aurocs(at)
    assert shown == {RAW_LABEL: f"{want['auroc'][RAW_SCORE]:.3f}",
                     CORRECTED_LABEL: f"{want['auroc'][CORRECTED_SCORE]:.3f}"}
    table = downloaded_csv(at, media)
    assert list(table.columns) == ["source", "index", "label", "neg_elbo", "complexity_nats", "corrected"]
    assert (table["source"] == "test").sum() == N_TEST and (table["source"] == "new").sum() == 500
    is_new = table["source"].eq("new").to_numpy()
    assert f"{roc_auc_score(is_new, table['neg_elbo']):.3f}" == shown[RAW_LABEL]
    assert f"{roc_auc_score(is_new, table['corrected']):.3f}" == shown[CORRECTED_LABEL]
    np.testing.assert_allclose(table["corrected"], table["neg_elbo"] - table["complexity_nats"], rtol=1e-9)
    assert f"{roc_auc_score(is_new, np.r_[want['test']['neg_elbo'], want['new']['neg_elbo']]):.3f}" == shown[RAW_LABEL]

    # both histograms on one figure, the ROC curves of both scores, the top-scored new images
    hist, roc = (json.loads(c.proto.spec) for c in at.get("plotly_chart")[1:3])
    assert [t["type"] for t in hist["data"]] == ["histogram", "histogram"] and hist["layout"]["barmode"] == "overlay"
    assert hist["data"][0]["xbins"] == hist["data"][1]["xbins"]  # shared bins
    assert hist["layout"]["legend"]["y"] <= 0 and hist["layout"]["legend"]["yanchor"] == "bottom"  # below the axes
    assert [t["name"] for t in roc["data"]][:2] == [f"−ELBO (AUROC {want['auroc'][RAW_SCORE]:.3f})",
                                                    f"−ELBO − L(x) (AUROC {want['auroc'][CORRECTED_SCORE]:.3f})"]
    caption = at.get("image")[-1].proto.imgs[0].caption
    top = int(np.argmax(want["new"]["neg_elbo"]))
    assert caption.startswith("new images with the highest raw −ELBO")
    assert caption.split("first: ")[1].startswith(f"#{top} (")  # the highest-scored new image first
    assert "PNG (zlib, level 9)" in texts(at)
    at.radio(key="an_new_score").set_value(CORRECTED_SCORE).run()  # the radio drives the histogram and the list
    top = int(np.argmax(want["new"]["corrected"]))
    assert at.get("image")[-1].proto.imgs[0].caption.split("first: ")[1].startswith(f"#{top} (")
    assert json.loads(at.get("plotly_chart")[1].proto.spec)["layout"]["xaxis"]["title"]["text"].startswith("corrected")

    # another session picks the stored dataset: the result is there at once, nothing is recomputed
    again = page(PAGE)
    again.session_state["an_new_source"] = f"file:{stored.hash}"
    again.run()
    assert not again.exception and not again.get("progress") and aurocs(again) == shown
    assert jobs.new_data_started(MODEL_KEY(), f"file:{stored.hash}") is job


def test_below_chance_the_page_explains_why_and_what_the_corrected_score_does(home):
    images, labels = digits_8x8()
    ones = images[labels == 1]  # simpler than the other digits: the model finds them MORE likely
    at = upload(page(PAGE).run(), "ones.npz", npz_bytes(x=ones))
    scored(at)
    assert not at.exception and not at.error
    want = expected(ones[:, None])
    assert want["auroc"][RAW_SCORE] < 0.5
    assert aurocs(at)[RAW_LABEL] == f"{want['auroc'][RAW_SCORE]:.3f}"
    [warning] = messages(at, ("warning",))
    assert "HIGHER likelihood" in warning and "Nalisnick et al. 2019" in warning
    assert "Serrà et al. 2020 subtracts the image's compressed length L(x) in nats" in warning
    assert f"Corrected: AUROC {want['auroc'][CORRECTED_SCORE]:.2f}" in warning


def test_when_the_corrected_score_is_below_chance_the_page_says_why(home):
    images, _ = digits_8x8()
    faint = images * 0.25  # the same digits, a quarter as bright: a bit longer as PNG, little stranger to the model
    at = scored(upload(page(PAGE).run(), "faint.npz", npz_bytes(x=faint)))
    assert not at.exception and not at.error
    want = expected(faint[:, None])
    assert want["auroc"][RAW_SCORE] > 0.9 and want["auroc"][CORRECTED_SCORE] < 0.45
    [warning] = messages(at, ("warning",))
    assert warning.startswith("Corrected, L(x) measured with PNG (zlib, level 9): AUROC")
    assert "the corrected score ranks the new images BELOW the test images" in warning
    assert aurocs(at)[CORRECTED_LABEL] == f"{want['auroc'][CORRECTED_SCORE]:.3f}"


def test_a_wrong_shape_or_colour_upload_gives_one_clear_error(home):
    at = upload(page(PAGE).run(), "big.npz", npz_bytes(x=np.zeros((20, 28, 28), np.uint8)))
    assert not at.exception
    [error] = messages(at, ("error",))
    assert "big.npz holds 28×28 images but this model takes 8×8 images" in error and ".zip" in error
    assert not home.list_datasets() and not at.get("progress")
    colour = np.random.default_rng(1).random((12, 8, 8))
    at.file_uploader(key="an_new_upload").set_value(("colour.zip", png_zip(colour, "RGB"), "application/zip")).run()
    assert not at.exception
    [error] = messages(at, ("error",))
    assert "colour 8×8 images but this model takes grey 8×8 images" in error
    at.file_uploader(key="an_new_upload").set_value(("junk.npz", b"not a zip", "application/octet-stream")).run()
    [error] = messages(at, ("error",))
    assert error.startswith("junk.npz cannot be used") and "not a valid NumPy archive" in error


def test_a_zip_of_pngs_of_another_size_is_resized_to_the_models_and_scored(home):
    images, _ = digits_8x8()
    big = np.kron(1.0 - images[:120], np.ones((3, 3)))  # (120, 24, 24): inverted digits, three times the size
    at = upload(page(PAGE).run(), "inverted24.zip", png_zip(big))
    (stored,) = home.list_datasets()
    assert stored.image_shape == (1, 8, 8) and stored.n_images == 120
    scored(at)
    assert not at.exception and not at.error
    assert "**inverted24.zip** (the whole file): 120 images of grey 8×8; all are scored (at most 10,000)" in texts(at)
    values = aurocs(at)
    assert set(values) == {RAW_LABEL, CORRECTED_LABEL} and all(0.0 <= float(v) <= 1.0 for v in values.values())
    assert float(values[RAW_LABEL]) > 0.9  # inverted digits: dark on light, nothing like the training images


def test_the_held_out_experiment_names_each_class_once_and_says_what_its_auroc_means(home):
    at = page(PAGE).run()
    box = at.selectbox(key="an_class")
    assert box.options[:3] == ["0", "1", "2"]  # not "1: 1"
    box.set_value(1).run()
    at.number_input(key="an_epochs").set_value(3).run()
    at.button(key="an_run").click().run()
    settle(at)
    assert not at.exception and not at.error
    shown = texts(at)
    assert "Class 1 is " in shown and "Class 1 (1)" not in shown and "1: 1" not in shown
    aurocs_ = [float(m.value) for m in at.metric if m.label.startswith("AUROC")]
    assert len(aurocs_) == 2
    assert "the score singles out class 1" in shown or "class 1 HIGHER likelihood" in shown \
        or "does not tell class 1" in shown
    roc = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert roc["layout"]["legend"]["y"] < 0  # the legend is below the axes, off the curves


@pytest.mark.skipif(not FASHION, reason="needs Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_named_classes_show_their_number_and_name():
    at = page(PAGE, model="shipped:fashion-mnist-2d").run()
    assert not at.exception
    assert at.selectbox(key="an_class").options[:2] == ["0 (T-shirt/top)", "1 (Trouser)"]
    assert "digits (grey 8×8 images)" in texts(at)  # not offered for a 28×28 model, and why


def test_at_most_the_first_10000_new_images_are_scored_and_the_page_says_so(home):
    many = np.random.default_rng(2).integers(0, 256, (10_500, 8, 8), dtype=np.uint8)
    at = upload(page(PAGE).run(), "many.npz", npz_bytes(x=many))
    scored(at)
    assert not at.exception and not at.error
    assert "10,500 images of grey 8×8; the first 10,000 are scored (at most 10,000)" in texts(at)
    (stored,) = home.list_datasets()
    assert jobs.new_data_started(MODEL_KEY(), f"file:{stored.hash}").result["n_new"] == 10_000


def test_a_slow_scoring_shows_its_estimate_waits_for_the_button_and_can_be_cancelled(home, monkeypatch):
    """Made slow on purpose (an estimate of two minutes, a job that takes as long), so the path is the same on any
    machine: the estimate first, nothing started; the button; live progress; Cancel; the button again."""
    def slow(*args, progress=None, **kwargs):
        for i in range(1200):
            progress(i / 1200)  # raises once the job is cancelled
            time.sleep(0.1)

    monkeypatch.setattr(cache, "new_data_estimate", lambda *args, **kwargs: 120.0)
    monkeypatch.setattr(jobs, "score_new_data", slow)
    noise = np.random.default_rng(3).random((50, 8, 8))
    at = upload(page(PAGE).run(), "slow.npz", npz_bytes(x=noise))
    assert not at.exception and not at.error
    assert any(c.value.startswith("Scoring 50 new images against 359 test images: about **2 min 00 s**")
               for c in at.caption)
    assert not at.get("progress") and not aurocs(at)  # nothing started yet
    assert at.button(key="an_new_start").label == "Score the new images (about 2 min 00 s)"
    at.button(key="an_new_start").click().run()
    rerun_until(at, lambda at: "elapsed" in " ".join(progress_texts(at)))  # it runs, with its time
    [bar] = progress_texts(at)
    assert bar.startswith("Scoring 50 new images against 359 test images · model pass — elapsed")
    next(b for b in at.button if b.key and b.key.startswith("cancel_")).click()
    settle(at)
    assert not at.exception and any("was cancelled" in m for m in messages(at, ("info",)))
    assert not aurocs(at) and at.button(key="an_new_start")  # it can be started again
