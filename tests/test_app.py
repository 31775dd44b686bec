"""The Streamlit app, page by page, with streamlit.testing (no browser). Pages run alone, as AppTest does; work that
runs in the background (training, held-out experiment, IWAE, t-SNE) is followed until the page shows its end."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from apphelp import (DIGITS, colour_shapes_zip, N_TEST, ROOT, current_run, good_npz, messages, model_options, page, progress_texts,
                     map_points, rerun_until, save_as, settle, shell, texts, train_quick, upload_data)
from streamlit.commands import navigation as st_navigation
from streamlit.testing.v1 import AppTest

from vae_core import checkpoint as C
from vae_core import store
from vae_core.__main__ import main
from vae_core.config import recommended_training
from vae_core.locations import available_builtin
from vae_core.runs import default_service
from vae_core.ui import state, widgets

pytestmark = pytest.mark.skipif(not (ROOT / "checkpoints" / "digits-2d.safetensors").exists(),
                                reason="the shipped digits checkpoint is missing (make checkpoints)")



def test_shell_opens_on_a_shipped_model_with_the_sidebar():
    at = shell().run()
    assert not at.exception and not at.error
    expected = "shipped:fashion-mnist-2d" if available_builtin()["fashion-mnist"] and \
        (ROOT / "checkpoints" / "fashion-mnist-2d.safetensors").exists() else DIGITS
    assert at.session_state[state.SELECT_KEY] == expected
    assert at.query_params["model"] == expected.split(":")[1]  # the address names the model
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "Latent size:** 2" in sidebar and "Dataset:" in sidebar
    assert "| −ELBO | reconstruction | KL |" in sidebar
    assert any("Device" in c.value for c in at.sidebar.caption)
    assert at.title[0].value == "VAE latent-space explorer"  # the default page: the overview


def test_unknown_addresses_get_no_page_not_found_dialog():
    """The shell replaces Streamlit's "Page not found" sender (first_paint.quiet_unknown_addresses): if a Streamlit
    upgrade renames it, this fails instead of the dialog silently coming back over /overview and typos."""
    assert callable(getattr(st_navigation, "send_page_not_found", None)), "Streamlit renamed send_page_not_found"
    assert "send_page_not_found(ctx)" in Path(st_navigation.__file__).read_text()  # …and still calls it by name
    at = shell().run()
    assert not at.exception
    assert st_navigation.send_page_not_found.__module__ == "vae_core.ui.first_paint"


def test_shell_switches_to_digits_and_back():
    at = shell().run()
    at.switch_page("app_pages/2_Latent_space.py").run()
    settle(at.sidebar.selectbox(key=state.SELECT_KEY).set_value(DIGITS).run())
    assert not at.exception
    assert "digits" in "\n".join(m.value for m in at.sidebar.markdown)
    assert map_points(at) == 1797  # every image, training and test
    assert at.query_params["model"] == "digits-2d"  # choosing a model updates the address


def test_overview_shows_the_encoder_and_decoder_picture_and_links_every_page():
    at = shell()
    at.session_state[state.SELECT_KEY] = DIGITS
    at.run()
    assert not at.exception and not at.error
    [element] = at.get("image")
    caption = element.proto.imgs[0].caption
    assert f"{N_TEST:,} test images" in caption and "decodes to that class" in caption
    links = [e.proto.page for e in at.get("page_link")]
    assert links == ["latent", "decoder", "anomalies", "train", "collapse", "demo"]
    assert len(at.latex) == 1 and "ELBO" in at.latex[0].value


def test_overview_page_alone_names_the_pages_without_links():
    at = page("app_pages/0_Overview.py").run()
    assert not at.exception and not at.get("page_link")
    assert "**Latent space**" in texts(at)


def test_latent_space_maps_every_image_with_colour_options_and_decodes_a_typed_point():
    at = settle(page("app_pages/2_Latent_space.py").run())
    assert not at.exception and not at.error
    assert map_points(at) == 1797 and "of 1,797 images (raw posterior means)" in texts(at)
    at.selectbox(key="ls_colour").set_value("neg_elbo").run()
    at.radio(key="ls_view").set_value("PCA").run()
    assert not at.exception and map_points(at) == 1797
    at.number_input(key="ls_z0").set_value(1.5).run()
    at.radio(key="ls_view").set_value("raw").run()
    at.number_input(key="ls_z0").set_value(1.5).run()
    assert not at.exception and any("z = (1.50" in (i.proto.imgs[0].caption) for i in at.get("image"))
    assert [b.proto.label for b in at.get("download_button")] == ["Every image's code and scores (1,797 rows, CSV)"]


def test_latent_space_tsne_runs_as_a_job_when_asked():
    at = settle(page("app_pages/2_Latent_space.py").run())
    at.radio(key="ls_view").set_value("t-SNE").run()
    at.slider(key="ls_perplexity").set_value(20.0).run()  # settings no other test has computed in this workspace
    assert not at.exception and "press Compute the t-SNE map" in texts(at).replace("*", "")
    at.button(key="ls_view_go").click().run()
    settle(at)
    assert not at.exception and not at.error
    assert map_points(at) == 1797  # digits has fewer images than the default 20,000


def test_decoder_grid_size_and_png():
    at = page("app_pages/3_Decoder_grid.py").run()
    assert not at.exception and not at.error
    at.slider(key="dg_size").set_value(30).run()
    assert not at.exception
    buttons = [b for b in at.get("download_button") if "PNG (30×30)" in b.proto.label]
    assert buttons
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["type"] == "image" and spec["data"][1]["type"] == "contour"
    targets = spec["data"][-1]  # an invisible grid of points to hover and click, 3 per cell and axis at 30×30
    n_targets = len(base64.b64decode(targets["x"]["bdata"])) // np.dtype(targets["x"]["dtype"]).itemsize
    assert targets["type"] == "scattergl" and targets["marker"]["opacity"] == 0 and n_targets == 90 * 90
    assert "click to decode" in targets["hovertemplate"]
    assert "Click anywhere on the lattice" in texts(at)
    assert len(spec["layout"]["xaxis"]["tickvals"]) >= 2
    at.radio(key="dg_spacing").set_value("linear").run()
    assert not at.exception


def test_decoder_grid_interpolation_and_samples():
    at = page("app_pages/3_Decoder_grid.py").run()
    at.slider(key="dg_isteps").set_value(12).run()
    at.slider(key="dg_ns").set_value(20).run()
    assert not at.exception and not at.error
    captions = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert any("linear" in c and "spherical" in c for c in captions)
    assert any("20 prior samples" in c for c in captions)


def test_anomalies_histogram_threshold_and_held_out_auroc(home):
    at = page("app_pages/4_Anomalies.py").run()
    assert not at.exception and not at.error
    slider = at.slider(key="an_thr_neg_elbo")
    slider.set_value(float(slider.min)).run()
    assert not at.exception
    assert at.metric[0].value.startswith(f"{N_TEST} of {N_TEST}") or at.metric[0].value.startswith(f"{N_TEST - 1} of {N_TEST}")
    at.number_input(key="an_epochs").set_value(3).run()
    assert any("press **Train and evaluate**: about" in i.value and "scoring the" in i.value for i in at.info)
    at.button(key="an_run").click().run()
    settle(at)
    assert not at.exception and not at.error
    aurocs = [float(m.value) for m in at.metric if m.label.startswith("AUROC")]
    assert len(aurocs) == 2 and all(0.0 <= a <= 1.0 for a in aurocs)
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert "AUROC" in spec["data"][0]["name"]
    run = default_service().get(next(iter(at.session_state["an_held_out_runs"].values())))
    assert run.status == "done" and run.spec.data.exclude_class == 0 and f"{run.evaluation['auroc']['−ELBO']:.3f}" == f"{aurocs[0]:.3f}"


def test_anomalies_iwae_score_is_a_job_that_starts_when_it_is_quick():
    at = page("app_pages/4_Anomalies.py").run()
    at.radio(key="an_score").set_value("iwae").run()
    at.select_slider(key="an_k").set_value(5)
    settle(at)
    assert not at.exception and not at.error
    assert any(s.key == "an_thr_iwae" for s in at.slider)
    assert at.get("plotly_chart")  # the histogram of the IWAE scores


FASHION = (ROOT / "checkpoints" / "fashion-mnist-2d.safetensors").exists() and available_builtin()["fashion-mnist"]


@pytest.mark.skipif(not FASHION, reason="needs Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_a_long_iwae_evaluation_shows_its_estimate_waits_for_the_button_and_can_be_cancelled():
    at = page("app_pages/4_Anomalies.py", model="shipped:fashion-mnist-2d").run()
    at.radio(key="an_score").set_value("iwae").run()
    at.select_slider(key="an_k").set_value(1000).run()
    assert not at.exception and not at.error
    assert any("IWAE NLL with k = 1000 on 10,000 test images: about" in c.value for c in at.caption)
    assert not at.get("progress") and not any(s.key == "an_thr_iwae" for s in at.slider)  # nothing started
    at.button(key="an_iwae_start").click().run()
    rerun_until(at, lambda at: "elapsed" in " ".join(progress_texts(at)))  # it has started
    [bar] = progress_texts(at)
    assert "IWAE NLL with k = 1000 on 10,000 test images" in bar
    cancel = next(b for b in at.button if b.key and b.key.startswith("cancel_"))
    cancel.click()
    settle(at)
    assert not at.exception and any("was cancelled" in m for m in messages(at, ("info",)))
    assert not any(s.key == "an_thr_iwae" for s in at.slider)


def test_train_page_trains_in_the_background_and_the_model_becomes_active(home):
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    assert not at.exception and not at.error
    assert any("Estimated time on this machine" in c.value for c in at.caption)
    at.selectbox(key="tr_recipe").set_value("quick").run()
    assert at.number_input(key="tr_epochs").value == 2
    at.number_input(key="tr_epochs").set_value(40).run()
    at.button(key="tr_train").click().run()
    run = current_run(at)
    assert not run.done or run.status == "done"
    if not run.done:  # the page only observes it: a live bar with the elapsed time, and a Stop button
        assert at.get("progress") and any(b.key == f"stop_{run.id}" for b in at.button)
    settle(at)
    assert not at.exception and not at.error
    assert any("Training finished: 40 epochs" in s for s in messages(at, ("success",)))
    assert len(run.history) == 40 and run.saved.is_file()
    assert at.session_state[state.SELECT_KEY] == f"run:{run.id}"  # the trained model is now the active one
    assert [m.label for m in at.metric][:1] == ["test −ELBO (nats/image)"]
    assert f"{run.history[-1]['test_elbo']:.2f}" == at.metric[0].value
    # no collapse: its replay is folded away, and not drawn until opened (a class's tabs would all draw theirs)
    assert run.history[-1]["active_units"] == 2
    assert not any(c.value == widgets.REPLAY_CAPTION for c in at.caption)


def test_the_train_form_fits_epochs_and_batch_to_the_dataset(home):
    at = page("app_pages/1_Train.py", model=None).run()
    fit = recommended_training(1438)  # digits: 1,438 training images
    assert (at.number_input(key="tr_epochs").value, at.number_input(key="tr_batch").value) == (fit.epochs, 64)
    upload_data(at, "mine.npz", good_npz(n=60))  # another dataset: its own size
    small = recommended_training(48)
    assert (at.number_input(key="tr_epochs").value, at.number_input(key="tr_batch").value) == (small.epochs,
                                                                                             small.batch_size)


def test_a_collapsed_run_says_so_and_each_fix_is_one_click(home):
    at = page("app_pages/1_Train.py", model=None).run()
    at.number_input(key="tr_epochs").set_value(2)  # 46 steps of 64 digits: the encoder has not caught up
    at.number_input(key="tr_batch").set_value(64)
    at.button(key="tr_train").click().run()
    settle(at)
    first = current_run(at)
    assert first.history[-1]["active_units"] == 0
    (notice,) = [w for w in messages(at, ("warning",)) if "collapsed" in w]
    assert "Every latent dimension collapsed (2 of 2)" in notice and "By KL per dimension" in notice
    assert "took 46 optimiser steps, under the 700" in notice and "He et al. 2019" in notice
    assert any(c.value == widgets.REPLAY_CAPTION for c in at.caption)  # a collapse opens its replay
    assert [b.label for b in at.button if b.key and b.key.startswith("tr_fix_")] == [
        "Train longer (35 epochs)", "Free bits λ = 0.5 and 35 epochs"]
    at.button(key="tr_fix_free_bits").click().run()  # one click: the same run with free bits, started
    second = current_run(at)
    assert second.id != first.id and second.spec.objective.free_bits == 0.5 and second.spec.train.epochs == 35
    assert second.spec.model == first.spec.model and second.spec.train.batch_size == 64
    assert at.number_input(key="tr_free_bits").value == 0.5 and at.number_input(key="tr_epochs").value == 35
    settle(at)
    assert not at.exception and not at.error
    assert not any("collapsed" in w for w in messages(at, ("warning",)))  # the fix worked: no warning …
    assert any("No collapse: all 2 latent dimensions" in m for m in messages(at, ("info",)))  # … and it says so


def test_a_beta_4_run_says_it_collapsed_by_design(home):
    at = page("app_pages/1_Train.py", model=None).run()
    at.number_input(key="tr_beta").set_value(4.0)
    at.number_input(key="tr_epochs").set_value(10)
    at.button(key="tr_train").click().run()
    settle(at)
    assert not at.exception and any("Training finished" in s for s in messages(at, ("success",)))
    (notice,) = [w for w in messages(at, ("warning",)) if "collapsed" in w]
    assert "Every latent dimension collapsed (2 of 2)" in notice and "β = 4 > 1 trades rate away by design" in notice
    assert [b.label for b in at.button if b.key and b.key.startswith("tr_fix_")] == [
        "Free bits λ = 0.5 and 35 epochs", "β = 1 and 35 epochs"]


def test_a_zip_of_colour_images_trains_with_the_conv_model_and_shows_in_colour_with_class_names(home):
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    at.selectbox(key="tr_dataset").set_value("upload").run()
    at.number_input(key="tr_image_size").set_value(16).run()
    settle(at.file_uploader(key="tr_upload").set_value(("shapes.zip", colour_shapes_zip(), "application/zip")).run())
    assert not at.exception and not at.error
    (stored,) = home.list_datasets()
    assert stored.image_shape == (3, 16, 16) and stored.class_names == ("disc", "square", "triangle")
    assert any("3×16×16" in s and "3 classes" in s for s in messages(at, ("success",)))
    at.selectbox(key="tr_arch").set_value("conv")
    at.number_input(key="tr_epochs").set_value(3)
    at.button(key="tr_train").click().run()
    settle(at)
    assert not at.exception and not at.error and current_run(at).status == "done"
    settle(at.switch_page("app_pages/2_Latent_space.py").run())  # the same session, the new model active
    assert not at.exception and not at.error
    (blob,) = [json.loads(e.proto.json) for e in at.get("bidi_component")]
    assert blob["class_names"] == ["disc", "square", "triangle"]  # labels by class name, on hover and legend
    assert [item["name"] for item in blob["legend"]["items"]] == ["disc", "square", "triangle"]
    at.switch_page("app_pages/3_Decoder_grid.py").run()
    assert not at.exception and not at.error
    lattice = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["source"]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(lattice.split(",", 1)[1]))))
    assert picture.ndim == 3 and picture.shape[2] >= 3  # decoded in colour
    channels = picture[..., :3].reshape(-1, 3).astype(int)
    assert np.abs(channels[:, 0] - channels[:, 1]).max() > 40  # not grey: red and green differ somewhere


def test_the_train_page_and_the_cli_give_the_same_history_for_the_same_settings(home, tmp_path):
    """Both build the same run specification and hand it to the run service: the same seed, the same numbers."""
    at = page("app_pages/1_Train.py", model=None).run()
    train_quick(at, epochs=2, seed=5)
    out = tmp_path / "cli.safetensors"
    assert main(["train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "64", "--lr", "1e-3",
                 "--batch-size", "64", "--epochs", "2", "--seed", "5", "--out", str(out)]) == 0
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]  # noqa: E731
    assert strip(current_run(at).history) == strip(C.load(out).history)


def test_train_page_divergence_is_a_warning(home):
    at = page("app_pages/1_Train.py", model=None).run()
    train_quick(at, epochs=2, lr=10.0)
    assert current_run(at).spec.train.lr == 10.0
    assert not at.exception and not at.error
    assert any("training diverged in epoch 1" in w and "smaller learning rate than 10" in w
               for w in messages(at, ("warning",)))
    assert any("no model to keep" in i for i in messages(at, ("info",)))
    assert current_run(at).saved is None  # nothing half-broken was kept


def test_train_page_bad_upload_shows_one_error(home):
    at = page("app_pages/1_Train.py", model=None).run()
    upload_data(at, "bad.npz", b"this is not a zip")
    assert not at.exception
    errors = messages(at, ("error",))
    assert len(errors) == 1 and "bad.npz cannot be used" in errors[0] and "not a valid NumPy archive" in errors[0]
    assert at.button(key="tr_train").disabled  # nothing to train on


def test_train_page_good_csv_upload_is_stored_and_selected(home):
    rng = np.random.default_rng(0)
    rows = "\n".join(",".join(str(v) for v in [i % 3, *rng.integers(0, 256, 16)]) for i in range(40))
    at = page("app_pages/1_Train.py", model=None).run()
    upload_data(at, "mine.csv", rows.encode())
    assert not at.exception and not at.error
    (stored,) = home.list_datasets()
    assert at.selectbox(key="tr_dataset").value == f"file:{stored.hash}"
    assert any("mine.csv" in s and "32 training and 8 test images" in s for s in messages(at, ("success",)))


def test_the_train_form_keeps_its_settings_and_upload_when_the_user_leaves_and_comes_back(home):
    at = shell(model="digits-2d").run()
    at.switch_page("app_pages/1_Train.py").run()
    upload_data(at, "mine.npz", good_npz(n=60))
    at.number_input(key="tr_epochs").set_value(7)
    at.number_input(key="tr_beta").set_value(2.5)
    at.text_input(key="tr_hidden").set_value("32")
    at.run()
    chosen = at.selectbox(key="tr_dataset").value
    at.switch_page("app_pages/2_Latent_space.py").run()
    at.switch_page("app_pages/3_Decoder_grid.py").run()
    at.switch_page("app_pages/1_Train.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="tr_dataset").value == chosen and chosen.startswith("file:")
    assert (at.number_input(key="tr_epochs").value, at.number_input(key="tr_beta").value,
            at.text_input(key="tr_hidden").value) == (7, 2.5, "32")


def test_a_model_trained_on_an_uploaded_file_opens_in_a_new_session_by_its_name(home):
    blob = good_npz(n=300, side=8, seed=1)
    at = shell(model="digits-2d").run()
    at.switch_page("app_pages/1_Train.py").run()
    upload_data(at, "mnist-like.npz", blob)
    train_quick(at, epochs=2)
    save_as(at, "my-upload-model")
    assert not at.exception and not at.error
    assert any("Saved as **my-upload-model** in the workspace" in s for s in messages(at, ("success",)))
    assert at.session_state[state.SELECT_KEY] == "saved:my-upload-model"
    assert at.query_params["model"] == "my-upload-model"
    # a new session (another browser) opened by the link: every page has the data, found by its hash
    for path in ("app_pages/0_Overview.py", "app_pages/2_Latent_space.py", "app_pages/4_Anomalies.py"):
        other = shell(model="my-upload-model").run()
        other.switch_page(path).run()
        assert not other.exception and not other.error, (path, messages(other))
        assert other.session_state[state.SELECT_KEY] == "saved:my-upload-model"
        assert "saved · my-upload-model" in model_options(other)  # saved models are listed for everyone
        assert not any("not in this workspace" in w for w in messages(other, ("warning",)))
    latent = shell(model="my-upload-model").run()
    settle(latent.switch_page("app_pages/2_Latent_space.py").run())
    assert map_points(latent) == 300  # every image, training and test
    latent.radio(key="ls_split").set_value("test").run()
    assert map_points(latent) == 60  # 20 % of 300 images


def test_a_checkpoint_whose_data_is_missing_shows_the_decoder_and_attaches_the_file_on_upload(tmp_path, monkeypatch):
    blob = good_npz(n=200, side=8, seed=2)
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "first"))
    at = page("app_pages/1_Train.py", model=None).run()
    upload_data(at, "mine.npz", blob)
    train_quick(at, epochs=1)
    ckpt_bytes = current_run(at).saved.read_bytes()
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "second"))  # another server: the model, but not its data
    other = shell().run()
    other.file_uploader(key="vae_model_upload").set_value(("mine-model.safetensors", ckpt_bytes,
                                                           "application/octet-stream")).run()
    assert not other.exception and other.session_state[state.SELECT_KEY].startswith("uploaded:")
    warnings = messages(other, ("warning",))
    assert len(warnings) == 1 and "trained on **mine.npz**" in warnings[0] and "Upload that file here" in warnings[0]
    assert other.get("image")  # the overview still draws what needs no data: the decoder's side
    assert any("decoder's side" in img.caption for e in other.get("image") for img in e.proto.imgs)
    other.switch_page("app_pages/3_Decoder_grid.py").run()
    assert not other.exception and not other.error and other.get("plotly_chart")  # the lattice needs no data
    other.switch_page("app_pages/2_Latent_space.py").run()
    assert not other.exception and not other.get("bidi_component")
    uploader = next(u for u in other.get("file_uploader") if u.key and u.key.startswith("attach_"))
    wrong = good_npz(n=200, side=8, seed=3)
    other.file_uploader(key=uploader.key).set_value(("mine.npz", wrong, "application/octet-stream")).run()
    assert any("holds other images than the ones this model was trained on" in e for e in messages(other, ("error",)))
    other.file_uploader(key=uploader.key).set_value(("renamed.npz", blob, "application/octet-stream")).run()
    settle(other)
    assert not other.exception and not other.error
    assert map_points(other) == 200  # attached: the same images, whatever the file is called now
    assert [d.file_name for d in store.Workspace().list_datasets()] == ["mine.npz"]


def test_an_unknown_or_path_like_model_name_in_the_address_gives_one_message_and_the_default(home):
    for name in ("nope", "../checkpoints/digits-2d", "/etc/passwd"):
        at = shell(model=name).run()
        assert not at.exception and not at.error
        warnings = messages(at.sidebar, ("warning",))
        assert len(warnings) == 1 and f"no model called “{name}”" in warnings[0]
        assert at.session_state[state.SELECT_KEY] in ("shipped:digits-2d", "shipped:fashion-mnist-2d")


def test_a_run_id_in_the_address_opens_that_run_in_another_session(home):
    at = page("app_pages/1_Train.py", model=None).run()
    train_quick(at, epochs=1)
    run = current_run(at)
    other = shell(model=run.id).run()
    assert not other.exception and not other.error
    assert other.session_state[state.SELECT_KEY] == f"run:{run.id}"


def test_the_sidebar_lists_only_this_browsers_runs(home):
    a = shell().run()
    a.switch_page("app_pages/1_Train.py").run()
    train_quick(a, epochs=1)
    b = shell().run()
    assert [o for o in model_options(a) if o.startswith("run ·")] and not [o for o in model_options(b) if o.startswith("run ·")]


def test_the_sidebar_saves_or_discards_this_browsers_unsaved_runs(home):
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=1)
    first = current_run(at)
    assert at.sidebar.selectbox(key=widgets.KEEP_KEY).value == first.id
    at.sidebar.text_input(key=f"vae_keep_name_{first.id}").set_value("kept-from-sidebar")
    at.sidebar.button(key="vae_keep_save").click().run()
    assert not at.exception and not at.error
    assert (home.models_dir / "kept-from-sidebar.safetensors").is_file()
    assert at.session_state[state.SELECT_KEY] == "saved:kept-from-sidebar"
    assert any("Saved as “kept-from-sidebar”" in s for s in messages(at.sidebar, ("success",)))
    assert default_service().get(first.id).saved_as == "kept-from-sidebar"  # recorded: no longer offered
    # a second run, discarded: gone from the sidebar, the server and the disk; the saved model stays
    train_quick(at, epochs=1, seed=1)
    second = current_run(at)
    box = at.sidebar.selectbox(key=widgets.KEEP_KEY)
    assert box.value == second.id and len(box.options) == 1
    at.sidebar.button(key="vae_keep_discard").click().run()
    assert not at.exception and not at.error
    assert default_service().get(second.id) is None and not (home.runs_dir / second.id).exists()
    assert len([o for o in model_options(at) if o.startswith("run ·")]) == 1  # the first run alone
    assert "saved · kept-from-sidebar" in model_options(at)
    at.run()
    assert not at.sidebar.expander  # nothing left unsaved: the panel is gone


def with_session_model(name: str, ckpt) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=120)
    at.session_state[state.UPLOADED_KEY] = {"uploaded:cvae4": state.UploadedModel(label="cvae4", ckpt=ckpt, digest="cvae4")}
    at.session_state[state.SELECT_KEY] = "uploaded:cvae4"
    return at


def test_overview_of_a_5d_cvae_shows_pca_and_prior_samples(cvae_5d):
    at = with_session_model("app_pages/0_Overview.py", cvae_5d).run()
    assert not at.exception and not at.error
    caption = at.get("image")[0].proto.imgs[0].caption
    assert "projected from 5 dimensions" in caption and "drawn from the prior" in caption


def test_latent_space_of_a_5d_cvae_uses_pca(cvae_5d):
    at = settle(with_session_model("app_pages/2_Latent_space.py", cvae_5d).run())
    assert not at.exception and not at.error
    assert [o for o in at.radio(key="ls_view").options] == ["PCA", "t-SNE", "UMAP"]
    assert map_points(at) == 1797
    at.text_input(key="ls_ztext").set_value("1, 2, x").run()
    assert any("Type exactly 5 finite numbers" in e.value for e in at.error)


def test_decoder_grid_per_class_for_a_cvae(cvae_5d):
    at = with_session_model("app_pages/3_Decoder_grid.py", cvae_5d).run()
    assert not at.exception and not at.error
    at.selectbox(key="dg_dx").set_value(2).run()
    at.radio(key="dg_refkind").set_value("a test image's μ").run()
    at.toggle(key="dg_perclass").set_value(True).run()
    assert not at.exception and not at.error
    assert len([b for b in at.get("download_button") if "PNG (15×15)" in b.proto.label]) == 10
    assert len([c for c in at.get("plotly_chart") if "lattice" in c.proto.id]) == 10


def test_sidebar_model_upload_good_and_bad():
    at = shell().run()
    at.file_uploader(key="vae_model_upload").set_value(("bad.safetensors", b"not a checkpoint", "application/octet-stream"))
    at.run()
    assert not at.exception
    (error,) = messages(at, ("error", "warning"))  # one message, in the sidebar, in whole sentences
    assert error in messages(at.sidebar, ("error",)) and error.startswith("bad.safetensors cannot be used")
    assert "truncated. Upload a .safetensors file" in error
    blob = (ROOT / "checkpoints" / "digits-2d.safetensors").read_bytes()
    at.file_uploader(key="vae_model_upload").set_value(("mine.safetensors", blob, "application/octet-stream")).run()
    assert not at.exception and not at.sidebar.error
    assert at.session_state[state.SELECT_KEY].startswith("uploaded:")
    assert "model" not in at.query_params  # an upload has no name to share
    assert f"mine, {N_TEST:,} test images" in at.get("image")[0].proto.imgs[0].caption  # the overview of it


def test_the_server_entry_serves_the_app_and_preloads_the_default_data_in_the_background():
    """`streamlit run serve.py` (make run): an st.App over streamlit_app.py whose start imports the library and
    loads the default model's dataset while the server waits for its first visitor (the browser tests run it)."""
    import ast

    tree = ast.parse((ROOT / "serve.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "App"]
    assert len(calls) == 1 and calls[0].args[0].value == "streamlit_app.py"
    from vae_core import store
    from vae_core.ui import preload

    store._LOADED.clear()
    preload.warm_up()
    name = "fashion-mnist" if available_builtin()["fashion-mnist"] else "digits"
    assert any(name in str(key) for key in store._LOADED)


def test_train_page_offers_each_cure_and_trains_with_the_chosen_one(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    at.selectbox(key="tr_recipe").set_value("quick").run()
    for schedule, fields in (("warm-up", ["tr_warmup"]), ("cyclical", ["tr_cycles", "tr_ramp"]),
                             ("soft", ["tr_kl_target"]), ("capacity", ["tr_capacity", "tr_capacity_epochs", "tr_gamma"])):
        at.selectbox(key="tr_schedule").set_value(schedule).run()
        assert all(at.number_input(key=k) is not None for k in fields), schedule
        assert any(("et al." in c.value) for c in at.caption), schedule  # each cure's caption names its paper
    at.checkbox(key="tr_aggressive").check().run()  # priced from a measured inner loop (trained in test_schedules)
    assert any("encoder steps per decoder step" in c.value for c in at.caption)
    at.checkbox(key="tr_aggressive").uncheck()
    at.selectbox(key="tr_schedule").set_value("cyclical").run()
    at.number_input(key="tr_cycles").set_value(2)
    at.number_input(key="tr_epochs").set_value(2)
    at.button(key="tr_train").click().run()
    settle(at)
    run = current_run(at)
    assert not at.exception and run.status == "done"
    assert run.spec.objective.kl_schedule == "cyclical" and run.spec.objective.cycles == 2
    assert [r["kl_weight"] for r in run.history][-1] == 1.0  # the end of the last cycle
    assert any("cyclical ×2" in m.value for m in at.markdown)  # the run's header names its objective


def test_a_finished_run_replays_its_training_epoch_by_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=3)
    run = current_run(at)
    assert not at.exception and run.status == "done"
    chart = next(c for c in at.get("plotly_chart") if "replay" in c.proto.id or "frames" in c.proto.spec)
    spec = json.loads(chart.proto.spec)
    assert [f["name"] for f in spec["frames"]] == ["1", "2", "3"]  # the scrubber: one frame per epoch
    assert [s["label"] for s in spec["layout"]["sliders"][0]["steps"]] == ["1", "2", "3"]
    assert any("Training replay" in c.value for c in at.caption)
    assert any("GIF" in b.proto.label for b in at.get("download_button"))
    save_as(at, "replayed")  # a model saved under a name keeps its replay
    from vae_core import replay, store
    saved = store.Workspace().models_dir / "replayed.safetensors"
    assert list(replay.load(replay.path_for(saved)).epochs) == [1, 2, 3]
