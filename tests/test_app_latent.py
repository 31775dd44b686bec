"""The Latent space page's ways around the latent space (AppTest, no browser): the UMAP map as a background job,
the nearest neighbours of a picked test image, and an uploaded image placed on the map with its score. (Drawing
on the canvas needs a browser: tests/e2e; its preprocessing is tested in test_single_image.py.)"""
import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from apphelp import (DIGITS, N_TEST, ROOT, colour_shapes_zip, messages, page, progress_texts, scatter_points, settle,
                     texts)
from streamlit.testing.v1 import AppTest

from vae_core.data import load_digits
from vae_core.jobs import DONE
from vae_core.neighbours import nearest
from vae_core.projection import pca
from vae_core.ui import cache, jobs, state

LATENT = "app_pages/2_Latent_space.py"
CKPT = ROOT / "checkpoints" / "digits-2d.safetensors"
pytestmark = pytest.mark.skipif(not CKPT.exists(), reason="the shipped digits checkpoint is missing (make checkpoints)")


def model_key() -> str:
    """The shipped digits model's cache key, as `state.active` makes it."""
    return f"{DIGITS}:{CKPT.stat().st_mtime_ns}"


def cached_scores() -> dict:
    """The page's own cached per-image scores (the page must have run: the cache is the process's)."""
    return cache.test_scores(model_key(), None)


def spec_of(chart) -> dict:
    return json.loads(chart.proto.spec)


def chart_with(at, trace_name: str) -> dict:
    """The spec of the (one) figure on the page that has a trace named `trace_name`."""
    specs = [spec_of(c) for c in at.get("plotly_chart")]
    found = [s for s in specs if any(t.get("name") == trace_name for t in s["data"])]
    assert len(found) == 1, [[t.get("name") for t in s["data"]] for s in specs]
    return found[0]


def trace_xy(spec: dict, name: str) -> np.ndarray:
    """The (k, 2) points of the trace called `name` (Plotly sends numeric arrays base64-encoded)."""
    def values(v):
        if isinstance(v, dict):
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return np.asarray(v, float)

    (trace,) = [t for t in spec["data"] if t.get("name") == name]
    return np.stack([values(trace["x"]), values(trace["y"])], axis=1)


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def caption_ids(captions: list[str]) -> list[int]:
    return [int(re.match(r"#(\d+)", c).group(1)) for c in captions]


def digit_png(i: int, side: int = 64) -> bytes:
    """Test image #i of the digits, enlarged to side × side (nearest neighbour) and saved as a PNG."""
    x = load_digits().x_test[i, 0].numpy()  # (8, 8) in [0, 1]
    img = Image.fromarray((x * 255).round().astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def upload(at, name: str, blob: bytes, mime: str = "image/png") -> AppTest:
    at.radio(key="ls_own_mode").set_value("upload").run()
    return at.file_uploader(key="ls_own_upload").set_value((name, blob, mime)).run()


# ---------------------------------------------------------------- UMAP

def test_umap_is_set_up_first_runs_as_a_job_and_is_instant_when_asked_again():
    at = page(LATENT).run()
    at.radio(key="ls_view").set_value("UMAP").run()
    assert not at.exception and not at.error
    assert not at.get("plotly_chart")  # nothing runs before the button
    assert any("press Compute the UMAP map" in m.replace("*", "") for m in messages(at))
    assert re.search(r"UMAP of 359 points with n_neighbors = 15: about \S+", texts(at))
    at.slider(key="ls_umap_nn").set_value(10)
    at.slider(key="ls_umap_md").set_value(0.25)
    at.button(key="ls_umap_go").click().run()
    job = jobs.umap_started(model_key(), N_TEST, N_TEST, 10, 0.25)
    assert job is not None and (progress_texts(at) or job.done)  # a job with a progress bar, not the page's script
    settle(at)
    assert not at.exception and not at.error and job.status == DONE
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST  # the whole small test set is mapped
    assert "UMAP 1" in at.get("plotly_chart")[0].proto.spec
    assert "McInnes, Healy & Melville 2018" in texts(at) and "n_neighbors = 10, min_dist = 0.25" in texts(at)
    assert "distances between clusters and their sizes mean little" in texts(at)

    # away and back in the same session: the settings are kept and the map is there at once
    at.radio(key="ls_view").set_value("PCA").run()
    at.radio(key="ls_view").set_value("UMAP").run()
    assert at.slider(key="ls_umap_nn").value == 10 and not progress_texts(at)
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST and at.button(key="ls_umap_go").disabled

    # another visitor asking for the same map gets the finished job: no new job, no progress bar
    jobs_before = len(jobs.board())
    other = page(LATENT).run()
    other.radio(key="ls_view").set_value("UMAP").run()
    other.slider(key="ls_umap_nn").set_value(10)
    other.slider(key="ls_umap_md").set_value(0.25)
    other.button(key="ls_umap_go").click().run()
    assert not other.exception and not progress_texts(other)
    assert scatter_points(other.get("plotly_chart")[0]) == N_TEST
    assert jobs.umap_started(model_key(), N_TEST, N_TEST, 10, 0.25) is job and len(jobs.board()) == jobs_before


def test_umap_beside_the_raw_view_marks_the_picked_image_on_both():
    at = page(LATENT).run()
    at.selectbox(key="ls_beside").set_value("UMAP").run()
    at.button(key="ls_umap_go").click()
    settle(at)
    assert not at.exception and not at.error and len(at.get("plotly_chart")) == 2
    raw, umap_map = (spec_of(c) for c in at.get("plotly_chart")[:2])
    assert np.allclose(trace_xy(raw, "picked #0"), cached_scores()["mu"][[0]], atol=1e-6)
    assert trace_xy(umap_map, "picked #0").shape == (1, 2)  # #0 is on the UMAP map too (all 359 are)
    assert trace_xy(umap_map, "8 nearest to #0").shape == (8, 2)


# ---------------------------------------------------------------- nearest neighbours

def test_the_neighbours_of_a_typed_index_are_the_nearest_posterior_means_and_are_marked_on_the_map():
    at = page(LATENT).run()
    at.number_input(key="ls_nn_idx_0").set_value(42).run()
    at.slider(key="ls_nn_k").set_value(5).run()
    assert not at.exception and not at.error
    mu = cached_scores()["mu"]
    expected, dist = nearest(mu, 42, 5)
    captions = image_captions(at)
    assert any(c.startswith("#42 · ") and c.endswith("picked") for c in captions)
    shown = [c for c in captions if "d = " in c]  # the neighbours (nothing drawn or uploaded yet)
    assert caption_ids(shown) == expected.tolist() and 42 not in caption_ids(shown)
    assert [float(c.rsplit("= ", 1)[1]) for c in shown] == pytest.approx(dist, abs=6e-4)
    label = int(load_digits().y_test[42])
    assert f"#42 · {label}  \npicked" in captions and f"share its label ({label})" in texts(at)
    spec = chart_with(at, "picked #42")
    assert np.allclose(trace_xy(spec, "picked #42"), mu[[42]], atol=1e-6)
    assert np.allclose(trace_xy(spec, "5 nearest to #42"), mu[expected], atol=1e-6)
    at.radio(key="ls_view").set_value("PCA").run()  # the same marks on the PCA map, in its coordinates
    coords, _ = pca(mu)
    assert np.allclose(trace_xy(chart_with(at, "picked #42"), "picked #42"), coords[[42]], atol=1e-5)


# ---------------------------------------------------------------- your own image

def test_a_grey_dataset_offers_the_canvas_which_loads_only_when_chosen():
    at = page(LATENT).run()
    assert not at.exception and at.radio(key="ls_own_mode").value == "upload"
    assert at.radio(key="ls_own_mode").options == ["upload a PNG/JPEG", "draw one"]
    at.radio(key="ls_own_mode").set_value("draw").run()
    assert not at.exception
    assert any("Draw a digit on the canvas" in m for m in messages(at, ("info",)))


def test_an_uploaded_png_of_a_test_digit_lands_on_its_posterior_mean_with_a_similar_score():
    i = 42
    at = upload(page(LATENT).run(), "digit-42.png", digit_png(i))
    assert not at.exception and not at.error
    scores = cached_scores()
    mu = scores["mu"]
    spread = float(np.sqrt(((mu - mu.mean(0)) ** 2).sum(1).mean()))  # RMS distance of the means from their centre
    spec = chart_with(at, "your image")
    (xy,) = trace_xy(spec, "your image")
    assert np.linalg.norm(xy - mu[i]) < 0.01 * spread  # the very place of #i (8×8 → 64×64 → 8×8 is lossless)
    assert trace_xy(spec, "your image ±2σ").shape[0] > 10  # its posterior ellipse is drawn
    (metric,) = [m for m in at.metric if m.label == "−ELBO (nats)"]
    value = float(metric.value)
    # one seeded posterior sample each, as for every test image: about 2 nats of noise between the two
    assert abs(value - float(scores["neg_elbo"][i])) < 3.0
    shares = {f"{float((scores['neg_elbo'] < v).mean()):.0%}" for v in (value - 0.05, value + 0.05)}  # shown: 1 decimal
    assert any(f"Higher than {share} of the 359 test images' −ELBO" in texts(at) for share in shares)
    assert "digit-42.png: 64×64 pixels" in texts(at) and "shrunk to 8×8" in texts(at)
    own = [c for c in image_captions(at) if "d = " in c][-6:]  # the gallery of your image's neighbours
    assert caption_ids(own)[0] == i and float(own[0].rsplit("= ", 1)[1]) < 0.01


def test_on_a_umap_view_your_image_is_shown_on_the_raw_map_and_the_page_says_why():
    at = page(LATENT).run()
    at.radio(key="ls_view").set_value("UMAP").run()
    upload(at, "digit-7.png", digit_png(7, side=40))
    assert not at.exception and not at.error
    assert "The UMAP map places only the images it was computed on" in texts(at)
    (xy,) = trace_xy(chart_with(at, "your image"), "your image")
    assert np.linalg.norm(xy - cached_scores()["mu"][7]) < 0.05  # raw z (40 px: not a whole multiple of 8)


def test_a_file_that_is_not_an_image_gives_one_clear_message():
    at = upload(page(LATENT).run(), "notes.txt", b"these are my notes, not a picture", "text/plain")
    assert not at.exception
    assert [e.value for e in at.error] == ["notes.txt is not a PNG or JPEG image; upload one .png, .jpg or .jpeg "
                                           "file."]
    assert not [m for m in at.metric if m.label == "−ELBO (nats)"]


# ---------------------------------------------------------------- a conditional model with a 5-D latent

def test_a_5d_cvae_offers_umap_and_places_an_upload_with_its_class_on_the_pca_map(cvae_5d):
    at = AppTest.from_file(str(ROOT / LATENT), default_timeout=120)
    at.session_state[state.UPLOADED_KEY] = {"uploaded:cvae5": state.UploadedModel(label="cvae5", ckpt=cvae_5d,
                                                                                  digest="cvae5")}
    at.session_state[state.SELECT_KEY] = "uploaded:cvae5"
    at.run()
    assert not at.exception and not at.error
    assert list(at.radio(key="ls_view").options) == ["PCA", "t-SNE", "UMAP"]
    i = 11
    label = int(load_digits().y_test[i])
    at.selectbox(key="ls_own_class").set_value(label)
    upload(at, "digit.png", digit_png(i))
    assert not at.exception and not at.error
    mu = cache.test_scores("up-cvae5", None)["mu"]  # encoded with each test image's own label
    coords, _ = pca(mu)
    (xy,) = trace_xy(chart_with(at, "your image"), "your image")
    assert np.linalg.norm(xy - coords[i]) < 0.01 * float(np.abs(coords).std())
    assert "PCA (the same projection as the test images)" in texts(at)


# ---------------------------------------------------------------- a colour dataset: upload only

def test_a_colour_model_takes_an_uploaded_colour_image_and_offers_no_canvas():
    import torch

    from vae_core import store
    from vae_core.checkpoint import Checkpoint
    from vae_core.config import ModelConfig
    from vae_core.data import from_arrays, load_array_file
    from vae_core.model import VAE

    arrays = load_array_file(colour_shapes_zip(per_class=20, side=16), "shapes.zip", image_size=16)
    stored = store.Workspace().put_dataset(arrays, "shapes.zip")
    data = from_arrays("shapes.zip", arrays, hash=stored.hash)
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=data.image_shape, latent_dim=2, hidden=(32,))).eval()  # untrained will do
    ckpt = Checkpoint(model=model, dataset=data.info(), history=[])
    at = AppTest.from_file(str(ROOT / LATENT), default_timeout=120)
    at.session_state[state.UPLOADED_KEY] = {"uploaded:rgb": state.UploadedModel(label="rgb", ckpt=ckpt, digest="rgb")}
    at.session_state[state.SELECT_KEY] = "uploaded:rgb"
    at.run()
    assert not at.exception and not at.error and data.image_shape == (3, 16, 16)
    assert not [r for r in at.radio if r.key == "ls_own_mode"]  # drawing is for grey datasets only
    disc = np.zeros((48, 64, 3), np.uint8)
    disc[8:40, 16:48] = (230, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(disc).save(buf, "JPEG", quality=95)
    at.file_uploader(key="ls_own_upload").set_value(("red.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert [m for m in at.metric if m.label == "−ELBO (nats)"]
    assert "red.jpg: 64×48 pixels, centre-cropped to the model's shape and shrunk to 16×16, RGB" in texts(at)
    assert "your image at 16×16" in image_captions(at) and "its reconstruction" in image_captions(at)
    assert trace_xy(chart_with(at, "your image"), "your image").shape == (1, 2)
