"""The Latent space page (AppTest, no browser): every image of the dataset on the map, encoded once as a job and
then kept in the workspace; the split filter and colourings; selections (as the browser sends them) with their
paged gallery, counts and exports; a click picking an image for its neighbours; t-SNE and UMAP as jobs that are
kept; a second model's map beside the first, linked and aligned; an image of yours placed on the map. (Hover,
the images mode and the drawn selections need a browser: tests/e2e.)"""
import base64
import io
import json
import re

import numpy as np
import pytest
from apphelp import DIGITS, N_TEST, ROOT, colour_shapes_zip, messages, page, progress_texts, settle, texts
from PIL import Image
from streamlit.testing.v1 import AppTest

from vae_core import latent_map, map_server, store
from vae_core import checkpoint as C
from vae_core.data import load_digits
from vae_core.neighbours import nearest
from vae_core.projection import pca
from vae_core.ui import cache, state

LATENT = "app_pages/2_Latent_space.py"
CKPT = ROOT / "checkpoints" / "digits-2d.safetensors"
N_ALL, N_TRAIN = 1797, 1797 - N_TEST
pytestmark = pytest.mark.skipif(not CKPT.exists(), reason="the shipped digits checkpoint is missing (make checkpoints)")


def maps(at) -> dict[str, dict]:
    """What each map on the page was sent, by its key (ls_map_a, ls_map_b, ls_own_map)."""
    return {e.proto.id.rsplit("-", 1)[-1]: json.loads(e.proto.json) for e in at.get("bidi_component")}


def columns(blob: dict) -> dict[str, np.ndarray]:
    """A map's binary columns, sent inline (no map server in AppTest)."""
    return latent_map.read_payload(base64.b64decode(blob["b64"]))


def encodings() -> latent_map.Encodings:
    """The page's encodings of the shipped digits model (the page must have run)."""
    return cache.encodings(state.open_model(DIGITS))


def select(at, rows: np.ndarray, key: str = "ls_map_a", seq: int = 1) -> AppTest:
    """What the browser sends when the user selects `rows` on the map `key`: a bitset over its points."""
    point_rows = columns(maps(at)[key]["points"])["row"]
    at.session_state[key] = {"selection": {"seq": seq, "bits": latent_map.rows_to_bits(rows, point_rows),
                                           "count": len(rows), "how": "lasso"}}
    return at.run()


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def caption_ids(captions: list[str]) -> list[int]:
    return [int(re.match(r"#(\d+)", c).group(1)) for c in captions]


@pytest.fixture(scope="module")
def latent():
    """The page with every digit encoded (the first visit's job, run to its end)."""
    return settle(page(LATENT).run())


# ---------------------------------------------------------------- every image, on the map

def test_every_image_is_on_the_map_with_its_split_label_and_scores(latent):
    at = latent
    assert not at.exception and not at.error
    blob = maps(at)["ls_map_a"]
    cols = columns(blob["points"])
    enc = encodings()
    assert len(cols["row"]) == N_ALL and cols["split"].sum() == N_TEST  # training and test images alike
    assert np.array_equal(cols["x"], enc.mu[:, 0]) and np.array_equal(cols["label"], enc.labels)
    assert blob["rings"] and blob["equal"] and blob["axes"] == ["z0", "z1"] and blob["legend"]["kind"] == "classes"
    assert blob["images_url"] is None and "need the app's server" in texts(at)  # no routes in AppTest
    at.radio(key="ls_split").set_value("test").run()
    assert len(columns(maps(at)["ls_map_a"]["points"])["row"]) == N_TEST
    at.selectbox(key="ls_colour").set_value("neg_elbo").run()
    blob = maps(at)["ls_map_a"]
    rows = columns(blob["points"])["row"]
    assert np.allclose(columns(blob["colours"])["value"], enc.neg_elbo[rows])
    assert blob["value_name"] == "−ELBO (nats)" and blob["legend"]["kind"] == "scale"
    at.radio(key="ls_split").set_value("all").run()
    at.selectbox(key="ls_colour").set_value("label").run()


def test_reopening_the_model_draws_its_map_from_the_workspace_at_once(latent):
    with cache._MAPS_LOCK:  # a restarted server: nothing in memory, the job board empty
        cache._ENCODINGS.clear()
        cache._VIEWS.clear()
    at = page(LATENT).run()  # one run, no progress bar: read from the workspace's map cache
    assert not at.exception and not progress_texts(at) and len(columns(maps(at)["ls_map_a"]["points"])["row"]) == N_ALL
    assert list(store.Workspace().maps_dir.glob("*/encodings.safetensors"))


# ---------------------------------------------------------------- selections

def test_a_selection_shows_a_paged_gallery_its_counts_and_exports(latent):
    at = latent
    rows = np.arange(0, 1000, 10)  # 100 images
    select(at, rows)
    assert not at.exception and not at.error
    assert any(s.value == "Selection: 100 images" for s in at.subheader)
    gallery = [c for c in image_captions(at) if c.startswith("Inputs (upper rows)")]
    assert gallery and "images 1–48 of 100" in gallery[0] and "#0, #10, #20" in gallery[0]
    at.number_input(key="ls_gallery_page").set_value(3).run()
    assert any("images 97–100 of 100" in c for c in image_captions(at))
    counts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = [t for spec in counts for t in spec["data"] if t["type"] == "bar"]
    assert bars and sum(bars[0]["x"]) == 100  # the selection per class
    enc = encodings()
    csv = cache.map_csv(state.open_model(DIGITS), enc, rows, None).decode()
    lines = csv.splitlines()
    assert lines[0].startswith("row,split,index_in_split,label,class,z0,z1,logvar0") and len(lines) == 101
    assert lines[1].split(",")[:3] == ["0", "train", "0"]
    at.button(key="ls_zip").click().run()
    settle(at)
    download = [b for b in at.get("download_button") if b.proto.label.startswith("Download the zip")]
    assert download and "MB)" in download[0].proto.label
    # the map that made the selection and every other map show it as their highlight
    blob = maps(at)["ls_map_a"]
    assert blob["highlight_count"] == 100 and blob["selection_seq"] == 1


def test_a_click_on_one_image_picks_it_for_its_neighbours_everywhere_on_the_page(latent):
    at = latent
    row = N_TRAIN + 42  # test image #42
    select(at, np.array([row]), seq=5)
    assert at.number_input(key="ls_picked").value == row
    enc = encodings()
    expected, dist = nearest(enc.mu, row, 8)
    captions = [c for c in image_captions(at) if "d = " in c][:8]
    assert caption_ids(captions) == expected.tolist()
    assert [float(c.rsplit("= ", 1)[1]) for c in captions] == pytest.approx(dist, abs=6e-4)
    label = int(load_digits().y_test[42])
    assert any(c.startswith(f"#{row} · {label}") and "picked (test)" in c for c in image_captions(at))
    marks = maps(at)["ls_map_a"]["marks"]
    picked = [m for m in marks if m["symbol"] == "x"]
    assert len(picked) == 1 and np.allclose([picked[0]["x"], picked[0]["y"]], enc.mu[row], atol=1e-6)
    assert len([m for m in marks if m["symbol"] == "o"]) == 8
    select(at, np.zeros(0, dtype=int), seq=6)  # cleared


# ---------------------------------------------------------------- t-SNE and UMAP

def test_umap_is_set_up_first_runs_as_a_job_and_is_kept_for_every_visitor(latent):
    at = latent
    at.radio(key="ls_view").set_value("UMAP").run()
    at.slider(key="ls_umap_nn").set_value(10)
    at.slider(key="ls_umap_md").set_value(0.35).run()  # settings no other test (or earlier visit) has computed
    assert not at.exception and not at.error and "ls_map_a" not in maps(at)
    assert any("press Compute the UMAP map" in m.replace("*", "") for m in messages(at))
    assert re.search(r"UMAP of 1,797 points \(n_neighbors = 10, min_dist = 0.35\): about \S+", texts(at))
    at.button(key="ls_view_go").click().run()
    settle(at)
    assert not at.exception and not at.error
    blob = maps(at)["ls_map_a"]
    assert len(columns(blob["points"])["row"]) == N_ALL and blob["axes"] == ["UMAP 1", "UMAP 2"] and not blob["rings"]
    other = page(LATENT).run()
    other.radio(key="ls_view").set_value("UMAP").run()
    other.slider(key="ls_umap_nn").set_value(10)
    other.slider(key="ls_umap_md").set_value(0.35).run()
    assert not progress_texts(other) and len(columns(maps(other)["ls_map_a"]["points"])["row"]) == N_ALL
    assert list(store.Workspace().maps_dir.glob("*/umap-1797-10-0.35-0.safetensors"))
    at.radio(key="ls_view").set_value("raw").run()


# ---------------------------------------------------------------- two models

@pytest.fixture(scope="module")
def second_model(trained_digits, digits):
    path = store.Workspace().save_model("digits-second", C.Checkpoint(model=trained_digits, dataset=digits.info()),
                                        overwrite=True)
    yield "saved:digits-second"
    path.unlink(missing_ok=True)


def test_a_second_models_map_beside_the_first_linked_and_aligned(latent, second_model):
    at = page(LATENT).run()
    assert "saved · digits-second" in at.selectbox(key="ls_compare").options
    at.selectbox(key="ls_compare").set_value(second_model).run()
    settle(at)
    assert not at.exception and not at.error
    shown = maps(at)
    a, b = columns(shown["ls_map_a"]["points"]), columns(shown["ls_map_b"]["points"])
    assert np.array_equal(a["row"], b["row"])
    enc_b = cache.encodings(state.open_model(second_model))
    aligned, info = latent_map.procrustes(np.c_[a["x"], a["y"]], enc_b.mu)
    assert np.allclose(np.c_[b["x"], b["y"]], aligned, atol=1e-5)  # B turned and scaled onto A
    assert "orthogonal Procrustes fit" in texts(at) and f"{info['disparity']:.0%}" in texts(at)
    select(at, np.arange(200, 260), key="ls_map_b")  # selected on the second map …
    shown = maps(at)
    assert shown["ls_map_a"]["highlight"] == shown["ls_map_b"]["highlight"]  # … shown on both
    assert shown["ls_map_a"]["highlight_count"] == 60
    at.selectbox(key="ls_colour").set_value("delta").run()
    shown = maps(at)
    delta = enc_b.neg_elbo - encodings().neg_elbo
    for key in ("ls_map_a", "ls_map_b"):
        assert np.allclose(columns(shown[key]["colours"])["value"], delta, atol=1e-4)


# ---------------------------------------------------------------- the map's points and images by URL

def test_with_the_map_server_the_points_and_images_come_by_url(latent):
    map_server._MOUNTED.set()
    try:
        at = page(LATENT).run()
        blob = maps(at)["ls_map_a"]
        assert blob["points"]["url"].startswith("/vae-map/blob/") and "b64" not in blob["points"]
        assert blob["images_url"].startswith("/vae-map/images/") and blob["decode_url"].startswith("/vae-map/decode/")
        token = blob["images_url"].rsplit("/", 1)[1]
        png = map_server.images_png(token, {"rows": f"0,{N_TRAIN}", "px": "32"})
        assert Image.open(io.BytesIO(png)).size == (64, 32)
        assert "need the app's server" not in texts(at)
    finally:
        map_server._MOUNTED.clear()


# ---------------------------------------------------------------- your own image

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


def own_mark(at) -> np.ndarray:
    (mark,) = [m for m in maps(at)["ls_own_map"]["marks"] if m["symbol"] == "x"]
    return np.array([mark["x"], mark["y"]])


def test_a_grey_dataset_offers_the_canvas_which_loads_only_when_chosen(latent):
    at = page(LATENT).run()
    assert not at.exception and at.radio(key="ls_own_mode").value == "upload"
    assert at.radio(key="ls_own_mode").options == ["upload a PNG/JPEG", "draw one"]
    at.radio(key="ls_own_mode").set_value("draw").run()
    assert not at.exception
    assert any("Draw a digit on the canvas" in m for m in messages(at, ("info",)))


def test_an_uploaded_png_of_a_test_digit_lands_on_its_posterior_mean_with_a_similar_score(latent):
    i = 42
    at = upload(page(LATENT).run(), "digit-42.png", digit_png(i))
    assert not at.exception and not at.error
    enc = encodings()
    mu = enc.mu
    spread = float(np.sqrt(((mu - mu.mean(0)) ** 2).sum(1).mean()))  # RMS distance of the means from their centre
    assert np.linalg.norm(own_mark(at) - mu[N_TRAIN + i]) < 0.01 * spread  # 8×8 → 64×64 → 8×8 is lossless
    assert len(maps(at)["ls_own_map"]["outlines"][0]["points"]) > 10  # its posterior ellipse is drawn
    (metric,) = [m for m in at.metric if m.label == "−ELBO (nats)"]
    value = float(metric.value)
    test_scores = enc.neg_elbo[N_TRAIN:]
    assert abs(value - float(test_scores[i])) < 3.0  # one seeded posterior sample each: about 2 nats of noise
    shares = {f"{float((test_scores < v).mean()):.0%}" for v in (value - 0.05, value + 0.05)}
    assert any(f"Higher than {share} of the 359 test images' −ELBO" in texts(at) for share in shares)
    assert "digit-42.png: 64×64 pixels" in texts(at) and "shrunk to 8×8" in texts(at)
    own = [c for c in image_captions(at) if "d = " in c][-6:]  # the gallery of your image's neighbours
    assert caption_ids(own)[0] == N_TRAIN + i and float(own[0].rsplit("= ", 1)[1]) < 0.01


def test_on_a_umap_view_your_image_is_shown_on_the_raw_map_and_the_page_says_why(latent):
    at = page(LATENT).run()
    at.radio(key="ls_view").set_value("UMAP").run()
    at.slider(key="ls_umap_nn").set_value(10)
    at.slider(key="ls_umap_md").set_value(0.35).run()  # the map computed above: kept
    upload(at, "digit-7.png", digit_png(7, side=40))
    assert not at.exception and not at.error
    assert "The UMAP map places only the images it was computed on" in texts(at)
    assert np.linalg.norm(own_mark(at) - encodings().mu[N_TRAIN + 7]) < 0.05  # raw z (40 px: not a multiple of 8)


def test_a_file_that_is_not_an_image_gives_one_clear_message(latent):
    at = upload(page(LATENT).run(), "notes.txt", b"these are my notes, not a picture", "text/plain")
    assert not at.exception
    assert [e.value for e in at.error] == ["notes.txt is not a PNG or JPEG image; upload one .png, .jpg or .jpeg "
                                           "file."]
    assert not [m for m in at.metric if m.label == "−ELBO (nats)"]


def test_a_5d_cvae_offers_its_maps_and_places_an_upload_with_its_class_on_the_pca_map(cvae_5d):
    at = AppTest.from_file(str(ROOT / LATENT), default_timeout=120)
    at.session_state[state.UPLOADED_KEY] = {"uploaded:cvae5": state.UploadedModel(label="cvae5", ckpt=cvae_5d,
                                                                                  digest="cvae5")}
    at.session_state[state.SELECT_KEY] = "uploaded:cvae5"
    settle(at.run())
    assert not at.exception and not at.error
    assert list(at.radio(key="ls_view").options) == ["PCA", "t-SNE", "UMAP"]
    blob = maps(at)["ls_map_a"]
    enc = cache._ENCODINGS["up-cvae5"]  # the page's encodings of the uploaded model
    assert enc.latent_dim == 5 and blob["axes"] == ["PC1", "PC2"] and not blob["rings"]
    coords, _ = pca(enc.mu)
    cols = columns(blob["points"])
    assert np.allclose(np.c_[cols["x"], cols["y"]], coords, atol=1e-5)
    i = 11
    at.selectbox(key="ls_own_class").set_value(int(load_digits().y_test[i]))
    upload(at, "digit.png", digit_png(i))
    assert not at.exception and not at.error
    assert np.linalg.norm(own_mark(at) - coords[N_TRAIN + i]) < 0.01 * float(np.abs(coords).std())
    assert "PCA (the same projection as the map above)" in texts(at)


def test_a_colour_model_takes_an_uploaded_colour_image_and_offers_no_canvas():
    import torch

    from vae_core.checkpoint import Checkpoint
    from vae_core.config import ModelConfig
    from vae_core.data import from_arrays, load_array_file
    from vae_core.model import VAE

    arrays = load_array_file(colour_shapes_zip(per_class=20, side=16), "shapes.zip", image_size=16)
    stored = store.Workspace().put_dataset(arrays, "shapes.zip")
    data = from_arrays("shapes.zip", store.Workspace().load_arrays(stored.hash)[0], hash=stored.hash)
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=data.image_shape, latent_dim=2, hidden=(32,))).eval()  # untrained will do
    ckpt = Checkpoint(model=model, dataset=data.info(), history=[])
    at = AppTest.from_file(str(ROOT / LATENT), default_timeout=120)
    at.session_state[state.UPLOADED_KEY] = {"uploaded:rgb": state.UploadedModel(label="rgb", ckpt=ckpt, digest="rgb")}
    at.session_state[state.SELECT_KEY] = "uploaded:rgb"
    settle(at.run())
    assert not at.exception and not at.error and data.image_shape == (3, 16, 16)
    assert not [r for r in at.radio if r.key == "ls_own_mode"]  # drawing is for grey datasets only
    assert maps(at)["ls_map_a"]["legend"]["items"][0]["name"] == "disc"
    assert cache._sources(stored.hash)[0].startswith("shapes/")  # each image's file, for the exports
    disc = np.zeros((48, 64, 3), np.uint8)
    disc[8:40, 16:48] = (230, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(disc).save(buf, "JPEG", quality=95)
    at.file_uploader(key="ls_own_upload").set_value(("red.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert [m for m in at.metric if m.label == "−ELBO (nats)"]
    assert "red.jpg: 64×48 pixels, centre-cropped to the model's shape and shrunk to 16×16, RGB" in texts(at)
    assert "your image at 16×16" in image_captions(at) and "its reconstruction" in image_captions(at)
    assert own_mark(at).shape == (2,)
