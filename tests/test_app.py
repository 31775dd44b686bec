"""The Streamlit app, page by page, with streamlit.testing (no browser). Pages run alone, as AppTest does."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vae_core import ui
from vae_core.data import DataError, available_builtin

ROOT = Path(__file__).resolve().parent.parent
DIGITS = "file:digits-2d.safetensors"
TIMEOUT = 120
N_TEST = 359  # digits test images (20 % of 1,797)

pytestmark = pytest.mark.skipif(not (ROOT / "checkpoints" / "digits-2d.safetensors").exists(),
                                reason="the shipped digits checkpoint is missing (make checkpoints)")


def page(name: str, model: str | None = DIGITS) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)
    if model:
        at.session_state[ui.SELECT_KEY] = model
    return at


def scatter_points(chart) -> int:
    spec = json.loads(chart.proto.spec)
    traces = [t for t in spec["data"] if t["type"] == "scattergl"]
    assert len(traces) == 1
    assert traces[0]["hovertemplate"].startswith("index %{customdata}")
    return len(traces[0]["text"])


def texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info]
    parts += [e.value for e in at.success] + [e.value for e in at.warning] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def test_shell_opens_on_a_shipped_model_with_the_sidebar():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    expected = "file:fashion-mnist-2d.safetensors" if available_builtin()["fashion-mnist"] and \
        (ROOT / "checkpoints" / "fashion-mnist-2d.safetensors").exists() else DIGITS
    assert at.session_state[ui.SELECT_KEY] == expected
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "Latent size:** 2" in sidebar and "Dataset:" in sidebar
    assert "| −ELBO | reconstruction | KL |" in sidebar
    assert any("Device" in c.value for c in at.sidebar.caption)
    assert at.title[0].value == "VAE latent-space explorer"  # the default page: the overview


def test_shell_switches_to_digits_and_back():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/2_Latent_space.py").run()
    at.sidebar.selectbox(key=ui.SELECT_KEY).set_value(DIGITS).run()
    assert not at.exception
    assert "digits" in "\n".join(m.value for m in at.sidebar.markdown)
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST


def test_overview_shows_the_encoder_and_decoder_picture_and_links_every_page():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state[ui.SELECT_KEY] = DIGITS
    at.run()
    assert not at.exception and not at.error
    [element] = at.get("image")
    caption = element.proto.imgs[0].caption
    assert f"{N_TEST:,} test images" in caption and "decodes to that class" in caption
    links = [e.proto.page for e in at.get("page_link")]
    assert links == ["latent", "decoder", "anomalies", "train", "collapse"]
    assert len(at.latex) == 1 and "ELBO" in at.latex[0].value


def test_overview_page_alone_names_the_pages_without_links():
    at = page("pages/0_Overview.py").run()
    assert not at.exception and not at.get("page_link")
    assert "**Latent space**" in texts(at)


def test_latent_space_scatter_has_every_test_point_and_colour_options():
    at = page("pages/2_Latent_space.py").run()
    assert not at.exception and not at.error
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert any("prior" in (t.get("name") or "") for t in spec["data"])
    at.selectbox(key="ls_colour").set_value("neg_elbo").run()
    assert not at.exception
    at.radio(key="ls_view").set_value("PCA").run()
    assert not at.exception and scatter_points(at.get("plotly_chart")[0]) == N_TEST
    assert "PC1" in at.get("plotly_chart")[0].proto.spec


def test_latent_space_beside_view_and_decoding_a_typed_point():
    at = page("pages/2_Latent_space.py").run()
    at.selectbox(key="ls_beside").set_value("PCA").run()
    assert not at.exception and len(at.get("plotly_chart")) == 2
    at.number_input(key="ls_z0").set_value(1.5).run()
    assert not at.exception and any("z = (1.50" in (i.proto.imgs[0].caption) for i in at.get("image"))
    assert len(at.get("download_button")) == 2


def test_latent_space_tsne_on_a_subsample():
    at = page("pages/2_Latent_space.py").run()
    at.radio(key="ls_view").set_value("t-SNE").run()
    assert not at.exception and not at.error
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST  # digits has fewer points than the default cap


def test_decoder_grid_size_and_png():
    at = page("pages/3_Decoder_grid.py").run()
    assert not at.exception and not at.error
    at.slider(key="dg_size").set_value(30).run()
    assert not at.exception
    buttons = [b for b in at.get("download_button") if "PNG (30×30)" in b.proto.label]
    assert buttons
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["type"] == "image" and spec["data"][1]["type"] == "contour"
    assert len(spec["layout"]["xaxis"]["tickvals"]) >= 2
    at.radio(key="dg_spacing").set_value("linear").run()
    assert not at.exception


def test_decoder_grid_interpolation_and_samples():
    at = page("pages/3_Decoder_grid.py").run()
    at.slider(key="dg_isteps").set_value(12).run()
    at.slider(key="dg_ns").set_value(20).run()
    assert not at.exception and not at.error
    captions = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert any("linear" in c and "spherical" in c for c in captions)
    assert any("20 prior samples" in c for c in captions)


def test_anomalies_histogram_threshold_and_held_out_auroc():
    at = page("pages/4_Anomalies.py").run()
    assert not at.exception and not at.error
    slider = at.slider(key="an_thr_neg_elbo")
    slider.set_value(float(slider.min)).run()
    assert not at.exception
    assert at.metric[0].value.startswith(f"{N_TEST} of {N_TEST}") or at.metric[0].value.startswith(f"{N_TEST - 1} of {N_TEST}")
    at.number_input(key="an_epochs").set_value(3).run()
    at.button(key="an_run").click().run()
    assert not at.exception and not at.error
    aurocs = [float(m.value) for m in at.metric if m.label.startswith("AUROC")]
    assert len(aurocs) == 2 and all(0.0 <= a <= 1.0 for a in aurocs)
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert "AUROC" in spec["data"][0]["name"]


def test_anomalies_iwae_score():
    at = page("pages/4_Anomalies.py").run()
    at.radio(key="an_score").set_value("iwae").run()
    at.select_slider(key="an_k").set_value(5).run()
    assert not at.exception and not at.error
    assert any(s.key == "an_thr_iwae" for s in at.slider)


def test_train_page_short_training_on_digits_finishes_and_becomes_active():
    at = page("pages/1_Train.py", model=None).run()
    assert not at.exception and not at.error
    at.selectbox(key="tr_recipe").set_value("quick").run()
    assert at.number_input(key="tr_epochs").value == 2
    submit = [b for b in at.button if "Train" in b.label][0]
    submit.click().run()
    assert not at.exception and not at.error
    assert any("Training finished: 2 epochs" in s.value for s in at.success)
    run = at.session_state[ui.TRAIN_RUN]
    assert len(run["history"]) == 2 and run["model_id"] in at.session_state[ui.SESSION_MODELS]
    assert at.session_state[ui.PENDING_KEY] == run["model_id"]
    # the trained model is now the active one for the other pages of this session
    assert [m.label for m in at.metric][:1] == ["test −ELBO (nats/image)"]


def test_train_page_divergence_is_a_warning():
    at = page("pages/1_Train.py", model=None).run()
    at.selectbox(key="tr_recipe").set_value("quick").run()
    at.number_input(key="tr_lr").set_value(10.0)  # inside a form: set and submit in the same run
    [b for b in at.button if "Train" in b.label][0].click().run()
    assert at.session_state[ui.TRAIN_RUN]["train"].lr == 10.0
    assert not at.exception and not at.error
    assert any("training diverged in epoch 1" in w.value and "smaller learning rate than 10" in w.value
               for w in at.warning)
    assert any("no model to keep" in i.value for i in at.info)
    models = at.session_state[ui.SESSION_MODELS] if ui.SESSION_MODELS in at.session_state else {}
    assert not models  # nothing half-broken was registered


def test_train_page_bad_upload_shows_an_error():
    at = page("pages/1_Train.py", model=None).run()
    at.radio(key="tr_dataset").set_value("upload").run()
    at.file_uploader(key="tr_upload").set_value(("bad.npz", b"this is not a zip", "application/octet-stream")).run()
    assert not at.exception
    assert any("bad.npz cannot be used" in e.value and "not a valid NumPy archive" in e.value for e in at.error)
    [b for b in at.button if "Train" in b.label][0].click().run()
    assert any("No training data" in e.value for e in at.error)


def test_train_page_good_csv_upload_is_accepted():
    rng = np.random.default_rng(0)
    rows = "\n".join(",".join(str(v) for v in [i % 3, *rng.integers(0, 256, 16)]) for i in range(40))
    at = page("pages/1_Train.py", model=None).run()
    at.radio(key="tr_dataset").set_value("upload").run()
    at.file_uploader(key="tr_upload").set_value(("mine.csv", rows.encode(), "text/csv")).run()
    assert not at.exception and not at.error
    assert any("upload:mine.csv" in s.value for s in at.success)


def test_dataset_from_upload_errors_are_actionable():
    with pytest.raises(DataError, match="unsupported file type"):
        ui.dataset_from_upload(b"abc", "x.txt")
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="at least 10"):
        ui.dataset_from_upload(buf.getvalue(), "x.npy")


@pytest.fixture(scope="module")
def cvae_5d(digits):
    """A tiny conditional VAE with a 5-D latent, trained for one epoch: exercises the d > 2 and CVAE paths."""
    import torch

    from vae_core.checkpoint import Checkpoint
    from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
    from vae_core.model import VAE
    from vae_core.train import fit

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=5, hidden=(32,), n_classes=10))
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=1, batch_size=64))
    return Checkpoint(model=model.eval(), dataset=digits.info(), history=result.history)


def with_session_model(name: str, ckpt) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)
    at.session_state[ui.SESSION_MODELS] = {"trained:cvae4": ui.SessionModel(label="cvae4", ckpt=ckpt, key="cvae4")}
    at.session_state[ui.SELECT_KEY] = "trained:cvae4"
    return at


def test_overview_of_a_5d_cvae_shows_pca_and_prior_samples(cvae_5d):
    at = with_session_model("pages/0_Overview.py", cvae_5d).run()
    assert not at.exception and not at.error
    caption = at.get("image")[0].proto.imgs[0].caption
    assert "projected from 5 dimensions" in caption and "drawn from the prior" in caption


def test_latent_space_of_a_5d_cvae_uses_pca(cvae_5d):
    at = with_session_model("pages/2_Latent_space.py", cvae_5d).run()
    assert not at.exception and not at.error
    assert [o for o in at.radio(key="ls_view").options] == ["PCA", "t-SNE"]
    assert scatter_points(at.get("plotly_chart")[0]) == N_TEST and "PC1" in at.get("plotly_chart")[0].proto.spec
    at.text_input(key="ls_ztext").set_value("1, 2, x").run()
    assert any("Type exactly 5 finite numbers" in e.value for e in at.error)


def test_decoder_grid_per_class_for_a_cvae(cvae_5d):
    at = with_session_model("pages/3_Decoder_grid.py", cvae_5d).run()
    assert not at.exception and not at.error
    at.selectbox(key="dg_dx").set_value(2).run()
    at.radio(key="dg_refkind").set_value("a test image's μ").run()
    at.toggle(key="dg_perclass").set_value(True).run()
    assert not at.exception and not at.error
    assert len([b for b in at.get("download_button") if "PNG (15×15)" in b.proto.label]) == 10
    assert len([c for c in at.get("plotly_chart") if "lattice" in c.proto.id]) == 10


def test_sidebar_model_upload_good_and_bad():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.file_uploader(key=ui.UPLOAD_KEY).set_value(("bad.safetensors", b"not a checkpoint", "application/octet-stream"))
    at.run()
    assert not at.exception
    assert any("bad.safetensors cannot be used" in e.value for e in at.sidebar.error)
    blob = (ROOT / "checkpoints" / "digits-2d.safetensors").read_bytes()
    at.file_uploader(key=ui.UPLOAD_KEY).set_value(("mine.safetensors", blob, "application/octet-stream")).run()
    assert not at.exception and not at.sidebar.error
    assert at.session_state[ui.SELECT_KEY].startswith("uploaded:")
    assert f"mine, {N_TEST:,} test images" in at.get("image")[0].proto.imgs[0].caption  # the overview of it
