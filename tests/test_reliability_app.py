"""Reliability and security through the app itself (streamlit.testing's AppTest, no browser): every kind of bad
checkpoint and bad data file uploaded through the UI, the limits, divergence, training that outlives its page,
many sessions at once, save names, XSRF and HTML. The library-level versions live in test_checkpoint, test_data,
test_train, test_store and test_reliability; the corpora of bad files are imported from there, not copied.

AppTest delivers uploads through st.file_uploader's real server path (the uploaded-file manager, the widget's
state and its on_change callback), but not through a browser: the browser's file-type filter and the upload size
limit (server.maxUploadSize) are not exercised here (the limit is checked in the config instead), so files of any
extension reach the app, as a crafted request's would.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import tempfile
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from apphelp import (DIGITS, N_ALL, ROOT, SHIPPED_DIGITS, apptests_in_threads, current_run, good_npz, messages,
                     model_options, npy_bytes, npz_bytes, save_as, map_points, settle, shell, train_quick, unescape,
                     upload_data)
from streamlit.testing.v1 import AppTest

from test_checkpoint import BAD as BAD_CHECKPOINTS  # the 20 kinds of bad checkpoint of the library tests
from test_data import BAD_FILES  # the 22 kinds of bad data file of the library tests
from vae_core import checkpoint as C
from vae_core import config as CFG
from vae_core import array_files, pixels
from vae_core import locations, objectives, store
from vae_core.metrics import evaluate_elbo
from vae_core.model import VAE
from vae_core.runs import default_service
from vae_core.ui import state, widgets
from vae_core.ui.text import WORD_JOINER, plain

N_SESSIONS = 8
XSS = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(not SHIPPED_DIGITS.exists(), reason="the shipped digits checkpoint is missing")


# ---------------------------------------------------------------- helpers

@pytest.fixture
def ckpt_dir(tmp_path, monkeypatch):
    """A private shipped-checkpoints folder holding only the digits model (the shell opens on digits, fast, whatever
    else is installed) and a fresh workspace. Returns the shipped folder; the workspace is store.Workspace()."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(SHIPPED_DIGITS, folder)
    monkeypatch.setattr(locations, "CHECKPOINT_DIR", folder)
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    return folder


def latent_app() -> AppTest:
    """The whole app (sidebar and navigation), run once on the Latent space page."""
    return shell().run().switch_page("app_pages/2_Latent_space.py").run()


def train_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / "1_Train.py"), default_timeout=120)


def source_tree_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts
                  and ".venv" not in p.parts and "__pycache__" not in p.parts and "screenshots" not in p.parts)


# ---------------------------------------------------------------- payloads that would run code if unpickled

class MakeMarker:
    """Unpickling this object opens (creates) the marker file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_payloads(marker: Path) -> dict[str, bytes]:
    """Pickles whose loading creates `marker`: plain pickle under three checkpoint names, a torch.save file, a
    .npz holding a pickled object array and a pickled .npy."""
    plain = pickle.dumps(MakeMarker(marker))
    buf = io.BytesIO()
    torch.save({"state_dict": MakeMarker(marker)}, buf)
    npz, npy = io.BytesIO(), io.BytesIO()
    np.savez(npz, x=np.array([MakeMarker(marker)], dtype=object))
    np.save(npy, np.array([MakeMarker(marker)], dtype=object), allow_pickle=True)
    return {"exploit.safetensors": plain, "exploit.pt": plain, "exploit.ckpt": plain,
            "exploit-torch.safetensors": buf.getvalue(), "exploit-torch.pt": buf.getvalue(),
            "exploit.npz": npz.getvalue(), "exploit.npy": npy.getvalue()}


def test_the_pickle_payloads_really_run_code_when_unpickled(tmp_path):
    """Positive control: the payloads are live, so their marker staying absent below means something."""
    loaders = {"exploit.safetensors": pickle.loads,
               "exploit-torch.pt": lambda b: torch.load(io.BytesIO(b), weights_only=False),
               "exploit.npz": lambda b: np.load(io.BytesIO(b), allow_pickle=True)["x"],
               "exploit.npy": lambda b: np.load(io.BytesIO(b), allow_pickle=True)}
    for i, (name, load) in enumerate(loaders.items()):
        marker = tmp_path / f"control-{i}"
        load(pickle_payloads(marker)[name])
        assert marker.exists(), name


# ---------------------------------------------------------------- bad files through the UI

def test_every_bad_checkpoint_uploaded_in_the_sidebar_is_a_clear_error(ckpt_dir, tmp_path):
    marker = tmp_path / "MARKER"
    cases = [(f"{kind}.safetensors", make(), msg) for kind, (make, msg) in BAD_CHECKPOINTS.items()]
    cases += [(name, blob, "not a safetensors file" if name.endswith(".safetensors") else "only .safetensors")
              for name, blob in pickle_payloads(marker).items() if not name.endswith((".npz", ".npy"))]
    at = latent_app()
    assert not at.exception and at.session_state[state.SELECT_KEY] == DIGITS
    for name, blob, msg in cases:
        at.file_uploader(key=widgets.UPLOAD_KEY).set_value((name, blob, "application/octet-stream")).run()
        assert not at.exception, name
        errors = [unescape(e.value) for e in at.sidebar.error]
        assert len(errors) == 1 and re.search(msg, errors[0]), (name, errors)
        assert f"{name} cannot be used" in errors[0], errors[0]
        # the app keeps working on the model it had
        assert at.session_state[state.SELECT_KEY] == DIGITS, name
        assert any("Latent size:** 2" in m.value for m in at.sidebar.markdown), name
        assert not at.session_state[state.UPLOADED_KEY], name
        assert not marker.exists() and not os.path.exists("/tmp/vae_core_pwned"), name
    assert len(cases) == len(BAD_CHECKPOINTS) + 5
    # … and afterwards a valid upload is accepted and explored
    at.file_uploader(key=widgets.UPLOAD_KEY).set_value(("good.safetensors", SHIPPED_DIGITS.read_bytes(),
                                                        "application/octet-stream")).run()
    settle(at)
    assert not at.exception and not at.sidebar.error and not at.error
    assert at.session_state[state.SELECT_KEY].startswith("uploaded:")
    assert map_points(at) == N_ALL


def test_every_bad_data_file_on_the_train_page_is_a_clear_error(ckpt_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(array_files, "MAX_ARRAY_BYTES", 8 << 20)  # the zip bomb expands to 10 MiB
    marker = tmp_path / "MARKER"
    cases = [(f"{kind}{Path(name).suffix}", blob, msg) for kind, (blob, name, msg) in BAD_FILES.items()]
    cases += [(name, blob, "Python objects") for name, blob in pickle_payloads(marker).items()
              if name.endswith((".npz", ".npy"))]
    at = train_page().run()
    at.selectbox(key="tr_dataset").set_value("upload").run()
    for name, blob, msg in cases:
        settle(at.file_uploader(key="tr_upload").set_value((name, blob, "application/octet-stream")).run())
        assert not at.exception, name
        errors = messages(at, ("error",))
        assert len(errors) == 1 and re.search(msg, errors[0]), (name, errors)
        assert f"{name} cannot be used" in errors[0], errors[0]
        assert not at.success and not marker.exists(), name
        assert at.button(key="tr_train").disabled, name  # nothing to train on
    assert len(cases) == len(BAD_FILES) + 2
    assert "tr_run" not in at.session_state and not store.Workspace().list_datasets()  # nothing stored
    # a valid file then works, up to a trained model
    settle(at.file_uploader(key="tr_upload").set_value(("ok.npz", good_npz(), "application/octet-stream")).run())
    assert not at.exception and not at.error
    assert any("ok.npz" in s for s in messages(at, ("success",)))
    train_quick(at, epochs=1)
    assert not at.exception and not at.error
    assert any("Training finished: 1 epochs" in s for s in messages(at, ("success",)))
    assert not marker.exists()


# ---------------------------------------------------------------- limits

def _config() -> dict:
    return tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_upload_size_limit_is_set_and_within_the_library_limits():
    mib = _config()["server"]["maxUploadSize"]
    assert isinstance(mib, int) and 1 <= mib <= C.MAX_CHECKPOINT_BYTES >> 20 and mib <= array_files.MAX_ARRAY_BYTES >> 20


def test_an_oversized_checkpoint_upload_names_the_limit(ckpt_dir, monkeypatch):
    monkeypatch.setattr(C, "MAX_CHECKPOINT_BYTES", 1 << 20)  # the shipped digits model is 1.3 MiB
    at = shell().run()
    at.file_uploader(key=widgets.UPLOAD_KEY).set_value(("big.safetensors", SHIPPED_DIGITS.read_bytes(),
                                                        "application/octet-stream")).run()
    assert not at.exception
    assert any("limited to 1 MiB" in unescape(e.value) for e in at.sidebar.error)
    assert at.session_state[state.SELECT_KEY] == DIGITS


def _upload_data(at, name: str, blob: bytes) -> list[str]:
    settle(at.file_uploader(key="tr_upload").set_value((name, blob, "application/octet-stream")).run())
    assert not at.exception
    return messages(at, ("error",))


@pytest.fixture
def upload_page(ckpt_dir):
    at = train_page().run()
    at.selectbox(key="tr_dataset").set_value("upload").run()
    return at


def test_data_size_limits_have_clear_messages(upload_page, monkeypatch):
    monkeypatch.setattr(array_files, "MAX_ARRAY_BYTES", 1 << 20)
    big_csv = ("\n".join(",".join(["128"] * 64) for _ in range(5000))).encode()  # 64 pixels a row, 1.2 MiB
    assert len(big_csv) > 1 << 20
    assert any("big.csv is 1.2 MiB; the limit is 1 MiB" in e for e in _upload_data(upload_page, "big.csv", big_csv))
    big_npy = npy_bytes(np.zeros((3000, 8, 8)))  # 1.5 MiB of float64
    assert any("big.npy is 1.5 MiB; the limit is 1 MiB" in e for e in _upload_data(upload_page, "big.npy", big_npy))
    big_npz = npz_bytes(x=np.zeros((3000, 8, 8)))  # a few KiB, 1.5 MiB once decompressed
    assert any("expands past the 1 MiB limit" in e for e in _upload_data(upload_page, "big.npz", big_npz))


def test_image_size_and_image_count_limits_have_clear_messages(upload_page, monkeypatch):
    wide = npy_bytes(np.zeros((12, pixels.MAX_SIDE + 1, 8), dtype=np.uint8))
    assert any(f"supported size is 2…{pixels.MAX_SIDE} per side" in e for e in _upload_data(upload_page, "wide.npy",
                                                                                             wide))
    monkeypatch.setattr(pixels, "MAX_IMAGES", 20)
    many = npy_bytes(np.zeros((21, 4, 4), dtype=np.uint8))
    assert any("more than the limit of 20" in e for e in _upload_data(upload_page, "many.npy", many))
    few = npy_bytes(np.zeros((9, 4, 4), dtype=np.uint8))
    assert any("at least 10 are needed" in e for e in _upload_data(upload_page, "few.npy", few))


def test_the_train_form_refuses_a_model_too_large_for_the_server(ckpt_dir):
    at = train_page().run()
    at.selectbox(key="tr_recipe").set_value("quick").run()
    at.text_input(key="tr_hidden").set_value(", ".join(["8192"] * 4)).run()
    assert not at.exception
    errors = messages(at, ("error",))
    assert len(errors) == 1 and "Invalid settings" in errors[0] and f"the limit is {CFG.MAX_WEIGHTS:,}" in errors[0]
    assert at.button(key="tr_train").disabled and "tr_run" not in at.session_state


def test_images_the_machine_cannot_hold_are_a_clear_message_with_the_numbers(upload_page, monkeypatch):
    monkeypatch.setattr(pixels, "available_memory", lambda: 1 << 20)  # 1 MiB available
    noise = np.random.default_rng(0).integers(0, 256, (20_000, 8, 8), dtype=np.uint8)  # does not compress: no bomb
    blob = npz_bytes(x=noise)  # 1.2 MiB of 8-bit pixels
    assert any("20,000 images of 1×8×8 need 1.2 MiB of memory as 8-bit pixels; this machine has 1.0 MiB available"
               in e for e in _upload_data(upload_page, "px.npz", blob))


@pytest.mark.parametrize("key,limit", [("tr_latent", CFG.MAX_LATENT_DIM), ("tr_epochs", CFG.MAX_EPOCHS)])
def test_latent_size_and_epochs_are_bounded_by_the_form(ckpt_dir, key, limit):
    at = train_page().run()
    widget = at.number_input(key=key)
    assert widget.min == 1 and widget.max == limit  # the browser cannot go past the library's limit
    # one past the bound, as a crafted request could send it: Streamlit resets it to the default, no traceback
    for bad in (limit + 1, 0):
        at.number_input(key=key).set_value(bad).run()
        assert not at.exception
        assert 1 <= at.number_input(key=key).value <= limit


def test_the_library_names_the_latent_and_epoch_limits():
    with pytest.raises(CFG.ConfigError, match=r"latent_dim must be an integer in 1…64"):
        CFG.ModelConfig(latent_dim=CFG.MAX_LATENT_DIM + 1)
    with pytest.raises(CFG.ConfigError, match=r"epochs must be an integer in 1…1000"):
        CFG.TrainConfig(epochs=CFG.MAX_EPOCHS + 1)


def test_tsne_points_are_offered_up_to_every_image_and_run_only_when_asked(ckpt_dir):
    at = settle(latent_app())
    at.radio(key="ls_view").set_value("t-SNE").run()
    assert not at.exception and not at.error and not at.get("progress")  # nothing runs before the button
    options = [int(str(o).replace(",", "").replace(" (all)", "")) for o in at.select_slider(key="ls_t-SNE_points").options]
    assert max(options) == N_ALL  # every image can be mapped (measured: 100,000 points in README's table)


# ---------------------------------------------------------------- divergence

def test_divergence_after_an_epoch_keeps_the_last_finite_weights_usable(ckpt_dir, monkeypatch):
    """The loss turns NaN in epoch 2 (injected: a real learning rate of 10 already blows up in epoch 1, which
    test_app covers). The page warns, keeps epoch 1's weights as the run's model, and they work everywhere."""
    real = objectives.TrainingObjective.loss

    def nan_from_epoch_2(self, terms, progress, adapt=True):
        loss = real(self, terms, progress, adapt)
        if progress >= 1:
            loss = objectives.Loss(total=loss.total * float("nan"), recon=loss.recon, kl=loss.kl,
                                   kl_per_dim=loss.kl_per_dim)
        return loss

    monkeypatch.setattr(objectives.TrainingObjective, "loss", nan_from_epoch_2)
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=3)
    assert not at.exception and not at.error
    assert any("training diverged in epoch 2" in w for w in messages(at, ("warning",)))
    run = current_run(at)
    assert run.status == "diverged" and len(run.history) == 1
    kept = C.load(run.saved)
    assert all(torch.isfinite(p).all() for p in kept.model.parameters()) and kept.history == run.history
    assert at.session_state[state.SELECT_KEY] == f"run:{run.id}"  # the kept model is the active one
    save_as(at, "after-divergence")
    saved = store.Workspace().models_dir / "after-divergence.safetensors"
    assert not at.exception and C.load(saved).history == run.history
    settle(at.switch_page("app_pages/2_Latent_space.py").run())
    assert not at.exception and not at.error and map_points(at) == N_ALL


def test_learning_rate_10_through_the_shell_keeps_the_app_usable(ckpt_dir):
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=2, lr=10.0)
    assert not at.exception and not at.error
    assert any("diverged in epoch 1" in w and "smaller learning rate than 10" in w for w in messages(at, ("warning",)))
    assert not [o for o in model_options(at) if o.startswith("run ·")] and at.session_state[state.SELECT_KEY] == DIGITS
    settle(at.switch_page("app_pages/2_Latent_space.py").run())
    assert not at.exception and not at.error and map_points(at) == N_ALL


# ---------------------------------------------------------------- training that outlives its page

def test_training_goes_on_while_the_user_browses_and_stop_keeps_what_it_reports(ckpt_dir, digits):
    """A long run keeps training while the session visits other pages (its script runs end, the run does not);
    Stop then ends it keeping the weights of its last complete epoch — exactly what the page reports — and
    nothing is written into the source tree."""
    before = source_tree_files()
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=CFG.MAX_EPOCHS, wait=False)
    run = current_run(at)
    for path in ("app_pages/2_Latent_space.py", "app_pages/3_Decoder_grid.py", "app_pages/0_Overview.py"):
        at.switch_page(path).run()
        assert not at.exception and not at.error, path
    seen = len(run.history)
    while len(run.history) < seen + 2:  # it went on training while the pages were shown
        run.wait(0.02)
    assert not run.done and any("training" in m for m in [c.value for c in at.sidebar.caption])
    at.switch_page("app_pages/1_Train.py").run()
    at.button(key=f"stop_{run.id}").click()
    settle(at)
    assert not at.exception and not at.error
    assert run.status == "stopped" and 1 <= len(run.history) < CFG.MAX_EPOCHS
    assert any("stopped by the user" in i for i in messages(at, ("info",)))
    reported = float(at.metric[0].value)  # the page's test −ELBO …
    kept = C.load(run.saved)  # … is that of the weights kept
    assert reported == pytest.approx(kept.history[-1]["test_elbo"], abs=0.006)
    assert evaluate_elbo(kept.model, digits.x_test)["elbo"] == pytest.approx(kept.history[-1]["test_elbo"], abs=1e-4)
    assert at.session_state[state.SELECT_KEY] == f"run:{run.id}"
    assert source_tree_files() == before  # nothing a user makes goes into the source tree
    settle(at.switch_page("app_pages/2_Latent_space.py").run())
    assert not at.exception and not at.error and map_points(at) == N_ALL


def test_leftover_temporary_hidden_and_broken_files_never_break_the_model_list(ckpt_dir):
    blob = SHIPPED_DIGITS.read_bytes()
    fd, _ = tempfile.mkstemp(prefix=".half.safetensors.", suffix=".tmp", dir=ckpt_dir)  # as save() names them
    with os.fdopen(fd, "wb") as f:
        f.write(blob[: len(blob) // 2])  # a writer killed mid-save
    (ckpt_dir / ".hidden.safetensors").write_bytes(blob)
    (ckpt_dir / "broken.safetensors").write_bytes(blob[:5000])  # someone copied a truncated file in
    at = latent_app()
    assert not at.exception and not at.error
    assert sorted(model_options(at)) == ["shipped · broken", "shipped · digits-2d"]
    at.sidebar.selectbox(key=state.SELECT_KEY).set_value("shipped:broken").run()
    assert not at.exception
    (error,) = messages(at, ("error", "warning"))  # one message, in one place: the sidebar, where models are picked
    assert error in messages(at.sidebar, ("error",)) and "cannot be loaded" in error
    assert re.search(r"(truncated|corrupt)[^ ]*\. Pick another one\.$", error)  # two sentences, not run together
    assert any("the sidebar says why" in i for i in messages(at, ("info",)))
    settle(at.sidebar.selectbox(key=state.SELECT_KEY).set_value(DIGITS).run())
    assert not at.exception and not at.error and map_points(at) == N_ALL


def test_a_run_whose_folder_another_process_removed_is_a_message_not_a_traceback(ckpt_dir):
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    train_quick(at)
    run = current_run(at)
    assert at.session_state[state.SELECT_KEY] == f"run:{run.id}"
    shutil.rmtree(run.saved.parent)  # as a CLI on the same workspace pruning old runs once did
    for path in ("app_pages/2_Latent_space.py", "app_pages/0_Overview.py", "app_pages/1_Train.py"):
        at.switch_page(path).run()
        assert not at.exception, path
        assert any("not in the workspace any more" in m for m in messages(at.sidebar, ("error",))), path
        assert model_options(at)  # the picker is still there, to pick another model
    settle(at.sidebar.selectbox(key=state.SELECT_KEY).set_value(DIGITS).run())
    assert not at.exception and not at.error


# ---------------------------------------------------------------- many sessions

def test_racing_library_saves_to_one_name_exactly_one_wins(tmp_path):
    versions = []
    for i in range(N_SESSIONS):
        torch.manual_seed(i)
        model = VAE(CFG.ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(16,)))
        versions.append(C.Checkpoint(model=model, dataset={"name": "digits"}, extra={"writer": i}))
    for attempt in range(5):
        path = tmp_path / f"race-{attempt}.safetensors"
        barrier = threading.Barrier(N_SESSIONS)

        def writer(i):
            barrier.wait()
            try:
                C.save(path, versions[i], overwrite=False)
                return i
            except C.CheckpointExistsError:
                return None

        with ThreadPoolExecutor(N_SESSIONS) as pool:
            results = list(pool.map(writer, range(N_SESSIONS)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert C.load(path).extra["writer"] == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"race-{a}.safetensors" for a in range(5)]


def test_eight_sessions_at_once_train_browse_and_race_to_save(ckpt_dir):
    """Eight AppTest sessions in threads, all at once: each trains a tiny digits model (its own seed) through the
    shared run service, then all press Save under one name at the same moment, then each browses the latent space
    of its own model."""
    start, race = threading.Barrier(N_SESSIONS, timeout=300), threading.Barrier(N_SESSIONS, timeout=300)

    def session(i):
        try:
            at = shell().run()
            at.switch_page("app_pages/1_Train.py").run()
            start.wait()
            train_quick(at, epochs=1, seed=100 + i)
            assert not at.exception and not at.error, (i, [e.value for e in at.error])
            race.wait()
            save_as(at, "shared-name")
            saved = at.session_state.get("tr_saved", {}).get(at.session_state["tr_run"])
            warned = any("already exists" in w for w in messages(at, ("warning",)))
            settle(at.switch_page("app_pages/2_Latent_space.py").run())
            return at, saved, warned
        except BaseException:
            start.abort()  # release the other sessions instead of leaving them waiting
            race.abort()
            raise

    with apptests_in_threads(), ThreadPoolExecutor(N_SESSIONS) as pool:
        sessions = list(pool.map(session, range(N_SESSIONS)))
    own_ids = []
    for i, (at, saved, warned) in enumerate(sessions):
        assert not at.exception and not at.error, (i, [e.value for e in at.error])
        mine = default_service().runs(owner=at.session_state[state.BROWSER_KEY])
        assert len(mine) == 1, i  # only its own run …
        run = mine[0]
        assert run.spec.train.seed == 100 + i, i  # … and it is the one it trained
        runs_listed = [o for o in model_options(at) if o.startswith("run ·")]
        assert len(runs_listed) == 1 and run.label in runs_listed[0], (i, runs_listed)
        if saved is None:
            assert at.session_state[state.SELECT_KEY] == f"run:{run.id}"
        assert map_points(at) == N_ALL
        own_ids.append(run.id)
    assert len(set(own_ids)) == N_SESSIONS
    # exactly one save won the race; every other session was told, and nothing was overwritten
    winners = [i for i, (_, saved, _) in enumerate(sessions) if saved]
    assert len(winners) == 1 and sessions[winners[0]][1] == "shared-name"
    assert all(warned for i, (_, _, warned) in enumerate(sessions) if i not in winners)
    models = store.Workspace().models_dir
    assert C.load(models / "shared-name.safetensors").train.seed == 100 + winners[0]
    assert sorted(p.name for p in models.iterdir()) == ["shared-name.replay", "shared-name.safetensors"]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["digits-2d.safetensors"]  # shipped: untouched


# ---------------------------------------------------------------- security

ESCAPING_NAMES = {"../../escape": "escape.safetensors", "/tmp/vae-abs": "tmp-vae-abs.safetensors",
                  "a\0b": "a-b.safetensors", "ｆｕｌｌ": "full.safetensors", "..\\..\\win": "win.safetensors",
                  f"{XSS}": "img-src-x-onerror-alert-1.safetensors", "x.safetensors": "x.safetensors"}
UNUSABLE_NAMES = ["", "..", "/", "\0", "\u202e", "../"]


def test_save_names_from_the_train_page_cannot_leave_the_folder(ckpt_dir, tmp_path):
    at = shell().run().switch_page("app_pages/1_Train.py").run()
    train_quick(at, epochs=1)
    models = store.Workspace().models_dir
    for name, file_name in ESCAPING_NAMES.items():
        at.session_state["tr_saved"] = {}
        save_as(at, name)
        assert not at.exception and not at.error, name
        assert f"{at.session_state['tr_saved'][at.session_state['tr_run']]}.safetensors" == file_name, name
        assert (models / file_name).is_file()
    for name in UNUSABLE_NAMES:
        at.session_state["tr_saved"] = {}
        save_as(at, name)
        assert not at.exception, repr(name)
        assert any("Could not save" in e and "not a usable checkpoint name" in e for e in messages(at, ("error",)))
        assert not at.session_state["tr_saved"]
    # everything written is a plain checkpoint file (and its training replay beside it) directly inside the
    # workspace's models folder
    written = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file())
    assert written == sorted([*ESCAPING_NAMES.values(),
                              *(n.removesuffix(".safetensors") + ".replay" for n in ESCAPING_NAMES.values())])
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["digits-2d.safetensors"]
    assert not Path("/tmp/vae-abs.safetensors").exists()


def test_the_shipped_folder_is_read_at_call_time(tmp_path, monkeypatch):
    """The model list follows CHECKPOINT_DIR at call time, not the value it had when a module was imported."""
    shutil.copy(SHIPPED_DIGITS, tmp_path / "other.safetensors")
    monkeypatch.setattr(locations, "CHECKPOINT_DIR", tmp_path)
    assert [p.name for p in store.shipped_models()] == ["other.safetensors"]


def test_xsrf_protection_stays_on():
    assert _config()["server"]["enableXsrfProtection"] is True


def test_no_full_garbage_collection_after_every_script_run():
    """Streamlit's default gc.collect(2) after each run costs ~100-180 ms with torch loaded; a tab watching a run
    reruns a fragment every second, so twenty of them starved the server (bench.class_browsers)."""
    assert _config()["runner"]["postScriptGC"] is False


# (one exception: the shell loads the static style sheet shipped in assets/, which holds no user text)
RAW_HTML = [re.compile(r"unsafe_allow_html\s*=\s*(?!False)"), re.compile(r"\bst\.html\((?!ASSETS / \"[\w-]+\.css\"\))"),
            re.compile(r"\.html\(\s*f?[\"']"), re.compile(r"streamlit\.components|components\.v1")]


def test_no_page_renders_raw_html():
    files = [ROOT / "streamlit_app.py", *ROOT.glob("app_pages/*.py"), *ROOT.glob("vae_core/*.py"),
             *ROOT.glob("vae_core/ui/*.py")]
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1) if any(r.search(line) for r in RAW_HTML)]
    assert not found, found
    assert len(files) >= 15


# What users type or upload, and what each would become if read as Markdown by Streamlit
PAYLOADS = {"link": "[Log in again](http://127.0.0.1:9/login)", "image": "![x](http://127.0.0.1:9/x.png)",
            "formula": r"$\frac{1}{2}$ $$x^2$$", "html": "<img src=http://127.0.0.1:9/h.png><b>b</b>",
            "emphasis": "**b** _i_ ~~s~~ `c`", "colour": ":red[big] :violet-badge[x] :small[s]",
            "icon and emoji": ":material/home: :smile: :+1:", "autolinks": "www.example.com a@b.co ftp://x.org",
            "entity": "&lt;b&gt;", "block": "# head", "reference": "[x]: http://127.0.0.1:9/ref"}
_LIVE = re.compile(r"(?<!\\)[\[\]<>$*_`~&]|:[\w+\-/]|://|@\w|www\.", re.IGNORECASE)  # what Markdown would act on


def inert(markdown: str) -> bool:
    """Whether `markdown` has no character or pattern left that Streamlit's Markdown would turn into markup."""
    return not _LIVE.search(markdown.replace("\\\\", "")) and not re.match(r"\s*([#>+\-]|\d+[.)])", markdown)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_plain_leaves_nothing_markdown_acts_on_and_reads_as_the_text(kind):
    text = PAYLOADS[kind]
    assert inert(plain(text)), plain(text)
    assert unescape(plain(text)) == text  # a reader sees exactly the text
    assert inert(plain(f"name: {text} and {text}"))


def test_plain_escapes_markdown_html_and_directives():
    j = WORD_JOINER
    assert plain(XSS) == r"\<img src=x onerror=alert(1)\>"
    assert plain("[x](javascript:alert(1)) ![i](http://e/x.png)") == \
        rf"\[x\](javascript:{j}alert(1)) !\[i\](http:{j}//e/x.png)"
    assert plain(":red[big] $x^2$ **b** _i_ `c` &lt; ~~s~~") == \
        rf":{j}red\[big\] \$x^2\$ \*\*b\*\* \_i\_ \`c\` \&lt; \~\~s\~\~"
    assert plain(":material/home: www.x.org a@b.co") == f":{j}material/home: www{j}.x.org a@{j}b.co"
    assert plain("# head") == r"\# head" and plain("1. item") == r"1\. item" and plain("- li") == r"\- li"
    assert plain("two\n\nlines") == "two lines"
    assert plain("digits (8×8).npz") == "digits (8×8).npz"  # ordinary names stay readable
    assert plain("Note: 10 epochs") == "Note: 10 epochs"


@pytest.mark.parametrize("kind", ["link", "image", "formula", "html", "colour", "icon and emoji", "autolinks"])
def test_a_model_name_in_the_address_is_shown_as_text_only(ckpt_dir, kind):
    """`?model=` is whatever a link says: the sidebar's "no model called …" warning shows it as text."""
    at = shell(model=PAYLOADS[kind]).run()
    assert not at.exception and not at.error
    (warning,) = at.sidebar.warning
    assert inert(warning.value), warning.value
    assert f"no model called “{PAYLOADS[kind]}”" in unescape(warning.value)
    assert not _raw_html_anywhere(at), _raw_html_anywhere(at)


def _raw_html_anywhere(at) -> list[str]:
    """Element texts in which the payload appears unescaped (Markdown would see a tag), and HTML elements."""
    style_sheet = f"<style>{(ROOT / 'assets' / 'app.css').read_text()}</style>"  # the shell's static rules
    bad = [f"html element: {e.proto}" for e in at.get("html") if e.proto.body != style_sheet]
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader"):
        for e in getattr(at, kind):
            text = str(e.value)
            if re.search(r"(?<!\\)<img", text):
                bad.append(f"{kind}: {text}")
            if kind in ("markdown", "caption") and getattr(e.proto, "allow_html", False):
                bad.append(f"{kind} allows HTML: {text}")
    return bad


def test_a_file_name_with_html_is_shown_as_text_only(ckpt_dir):
    name = f"{XSS}.npz"
    at = shell().run()
    at.switch_page("app_pages/1_Train.py").run()
    upload_data(at, name, b"not a zip")
    assert not at.exception
    assert any(e.value.startswith(r"\<img src=x onerror=alert(1)\>.npz cannot be used") for e in at.error)
    assert not _raw_html_anywhere(at), _raw_html_anywhere(at)
    settle(at.file_uploader(key="tr_upload").set_value((name, good_npz(), "application/octet-stream")).run())
    assert any(f"{XSS}.npz" in s for s in messages(at, ("success",)))
    assert any(o.startswith(f"file · {XSS}.npz") for o in at.selectbox(key="tr_dataset").options)  # plain text
    train_quick(at, epochs=1)
    assert not at.exception and not at.error
    # the trained model is active: its dataset name (the file name) is in the sidebar, escaped
    assert any(r"**Dataset:** \<img src=x onerror=alert(1)\>.npz" in m.value for m in at.sidebar.markdown)
    assert not _raw_html_anywhere(at), _raw_html_anywhere(at)


def test_an_uploaded_checkpoint_with_html_in_its_name_and_metadata_is_shown_as_text_only(ckpt_dir):
    ckpt = C.load(SHIPPED_DIGITS)
    ckpt.dataset = {**ckpt.dataset, "name": f"upload:{XSS}<script>alert(2)</script>"}
    at = shell().run()
    at.file_uploader(key=widgets.UPLOAD_KEY).set_value((f"{XSS}.safetensors", C.to_bytes(ckpt),
                                                        "application/octet-stream")).run()
    assert not at.exception
    assert at.session_state[state.SELECT_KEY].startswith("uploaded:")
    # the model loads, its data cannot be found (it names a file from before the workspace): the page explains,
    # escaped, and offers the uploader
    assert any("Upload that file here" in w for w in messages(at, ("warning",)))
    assert not _raw_html_anywhere(at), _raw_html_anywhere(at)
    assert not any("<script>" in str(e.value) for kind in ("markdown", "error", "warning") for e in getattr(at, kind))
    assert any(o.endswith(XSS) for o in at.sidebar.selectbox(key=state.SELECT_KEY).options)  # a plain-text option
