"""The workspace (vae_core/store.py): datasets stored once under their content hash and found again by it, saved
models and their names, damaged files, and the size cap."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core import checkpoint as C
from vae_core import store
from vae_core.config import ModelConfig
from vae_core.data import DataError, load_array_file
from vae_core.model import VAE
from vae_core.pixels import split_order

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(tmp_path):
    return store.Workspace(tmp_path / "home")


def images(n=40, side=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side), dtype=np.uint8), np.arange(n) % 3


def npz(x, y=None) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **({"x": x} if y is None else {"x": x, "y": y}))
    return buf.getvalue()


def csv(x, y) -> bytes:
    rows = [",".join(map(str, [label, *img.ravel()])) for img, label in zip(x, y)]
    return ("label," + ",".join(f"p{i}" for i in range(x[0].size)) + "\n" + "\n".join(rows)).encode()


def test_the_hash_is_the_content_whatever_the_file_format():
    x, y = images()
    a = store.content_hash(load_array_file(npz(x, y), "a.npz"))
    b = store.content_hash(load_array_file(csv(x, y), "b.csv"))
    assert a == b and len(a) == 64
    x2 = x.copy()
    x2[0, 0, 0] ^= 1
    assert store.content_hash(load_array_file(npz(x2, y), "a.npz")) != a  # one pixel
    assert store.content_hash(load_array_file(npz(x, (y + 1) % 3), "a.npz")) != a  # the labels
    assert store.content_hash(load_array_file(npz(x), "a.npz")) != a  # no labels


def test_a_dataset_is_stored_once_and_loads_back_identically(ws):
    x, y = images(n=50)
    arrays = load_array_file(npz(x, y), "mine.npz")
    rec = ws.put_dataset(arrays, "mine.npz")
    assert (rec.file_name, rec.n_images, rec.image_shape, rec.n_classes) == ("mine.npz", 50, (1, 6, 6), 3)
    again = ws.put_dataset(load_array_file(csv(x, y), "other-name.csv"), "other-name.csv")
    assert again.hash == rec.hash and again.file_name == "mine.npz"  # the same images: stored once
    assert sorted(p.name for p in ws.datasets_dir.iterdir()) == [f"{rec.hash}.owners", f"{rec.hash}.safetensors"]
    back, name = ws.load_arrays(rec.hash)
    order, n_test = split_order(50)
    assert name == "mine.npz" and back.x.dtype == np.uint8 and back.n_test == n_test == 10
    assert np.array_equal(back.x, arrays.x[order]) and np.array_equal(back.y, arrays.y[order])  # bit for bit, split order
    assert np.array_equal(back.source_index, order)  # where each stored row was in the file
    assert isinstance(back.x, np.memmap)  # read memory-mapped: opening it copies nothing
    assert rec.size_bytes < arrays.x.size * 4 / 2  # 8-bit images are kept as 8 bits (a quarter of float32)
    assert b"pickle" not in ws.dataset_path(rec.hash).read_bytes()[:200]  # a safetensors file, no pickle


def test_grey_values_other_than_k_over_255_are_kept_exactly(ws):
    x = np.random.default_rng(1).random((20, 5, 5)).astype(np.float32)
    arrays = load_array_file(npz(x), "floats.npz")
    rec = ws.put_dataset(arrays, "floats.npz")
    back, _ = ws.load_arrays(rec.hash)
    assert back.x.dtype == np.float32 and np.array_equal(back.x, arrays.x[split_order(20)[0]])
    assert back.y is None and rec.n_classes == 0


def test_a_damaged_stored_file_is_a_clear_error_and_uploading_again_repairs_it(ws):
    x, y = images()
    keep = ws.put_dataset(load_array_file(npz(*images(seed=5)), "other.npz"), "other.npz")
    rec = ws.put_dataset(load_array_file(npz(x, y), "mine.npz"), "mine.npz")
    path = ws.dataset_path(rec.hash)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF  # a flipped byte in the pixels
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"stored copy of mine.npz .* is damaged .*upload the file again"):
        ws.load_arrays(rec.hash)
    path.write_bytes(bytes(blob[:50]))  # truncated, header and all
    with pytest.raises(DataError, match="is damaged"):
        ws.load_arrays(rec.hash)
    assert ws.dataset_info(rec.hash) is None and [d.hash for d in ws.list_datasets()] == [keep.hash]
    repaired = ws.put_dataset(load_array_file(npz(x, y), "mine.npz"), "mine.npz")
    assert repaired.hash == rec.hash
    assert np.array_equal(ws.load_arrays(rec.hash)[0].x, load_array_file(npz(x, y), "m.npz").x[split_order(40)[0]])
    assert ws.load_arrays(keep.hash)[1] == "other.npz"  # nothing else was touched


def test_bad_hashes_never_become_paths(ws):
    for bad in ("../../etc/passwd", "abc", "g" * 64, ""):
        with pytest.raises(DataError, match="not a dataset hash"):
            ws.dataset_path(bad)
    with pytest.raises(DataError, match="not in the workspace"):
        ws.load_arrays("0" * 64)


def test_too_few_images_are_refused(ws):
    with pytest.raises(DataError, match="at least 10"):
        ws.put_dataset(load_array_file(npz(images(n=9)[0]), "few.npz"), "few.npz")


def test_least_recently_used_datasets_go_past_the_size_cap(ws, monkeypatch):
    recs = [ws.put_dataset(load_array_file(npz(*images(n=4000, side=8, seed=s)), f"d{s}.npz"), f"d{s}.npz")
            for s in range(3)]
    size = recs[0].size_bytes
    os.utime(ws.dataset_path(recs[0].hash), (1, 1))  # d0 is the least recently used
    monkeypatch.setenv(store.DATASETS_CAP_ENV, str(3.5 * size / 2**20))
    new = ws.put_dataset(load_array_file(npz(*images(n=4000, side=8, seed=9)), "d9.npz"), "d9.npz")
    left = {d.hash for d in ws.list_datasets()}
    assert left == {recs[1].hash, recs[2].hash, new.hash}


def test_load_resolves_builtin_and_stored_data_with_subset_and_held_out_class(ws):
    x, y = images(n=100)
    rec = ws.put_dataset(load_array_file(npz(x, y), "mine.npz"), "mine.npz")
    data = store.load(store.DataRef("mine.npz", rec.hash), "cpu", ws)
    assert data.name == "mine.npz" and data.hash == rec.hash and len(data.x_train) == 80 and len(data.x_test) == 20
    assert data.info()["hash"] == rec.hash and store.DataRef.from_info(data.info()) == store.DataRef("mine.npz", rec.hash)
    part = store.load(store.DataRef("mine.npz", rec.hash, n_train=10, n_test=5, exclude_class=1), "cpu", ws)
    assert len(part.x_train) == int((data.y_train[:10] != 1).sum()) and len(part.x_test) == 5
    digits = store.load(store.DataRef("digits"), "cpu", ws)
    assert digits.hash is None and digits.info()["source"] == "builtin"


def _model() -> C.Checkpoint:
    return C.Checkpoint(model=VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,))),
                        dataset={"name": "digits"})


def test_saved_models_have_safe_names_and_never_shadow_shipped_ones(ws):
    path = ws.save_model("../../escape me", _model())
    assert path.parent == ws.models_dir.resolve() and path.name == "escape-me.safetensors"
    with pytest.raises(C.CheckpointExistsError):
        ws.save_model("escape-me", _model())
    ws.save_model("escape-me", _model(), overwrite=True)
    if (ROOT / "checkpoints" / "digits-2d.safetensors").exists():
        with pytest.raises(C.CheckpointError, match="name of a shipped model"):
            ws.save_model("digits-2d", _model())
        assert ws.find_model("digits-2d")[0] == "shipped"
    assert ws.find_model("escape-me") == ("saved", path)
    for not_a_name in ("../escape-me", "models/escape-me", "/tmp/x", "", "nope"):
        assert ws.find_model(not_a_name) is None


def test_the_workspace_folder_is_read_at_call_time_and_is_not_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "a"))
    assert store.Workspace().root == tmp_path / "a"
    monkeypatch.delenv("VAE_HOME")
    default = store.home()
    assert ROOT not in default.parents and default.name == store.APP_NAME


def test_datasets_stay_the_same_tensors_on_the_device(ws):
    x, y = images(n=30)
    rec = ws.put_dataset(load_array_file(npz(x, y), "m.npz"), "m.npz")
    a = store.load(store.DataRef("m.npz", rec.hash), "cpu", ws)
    b = store.load(store.DataRef("m.npz", rec.hash), "cpu", ws)
    assert a.x_train.data_ptr() == b.x_train.data_ptr() and isinstance(a.x_train, torch.Tensor)  # one copy


# ---------------------------------------------------------------- who stored what: nobody evicts another's data

def stored(ws, seed, owner, n=4000):
    return ws.put_dataset(load_array_file(npz(*images(n=n, side=8, seed=seed)), f"d{seed}.npz"), f"d{seed}.npz",
                          owner=owner)


def test_a_visitor_cannot_evict_another_visitors_data_and_evicts_their_own_first(ws, monkeypatch):
    a0 = stored(ws, 0, "alice")
    monkeypatch.setenv(store.DATASETS_CAP_ENV, str(2.5 * a0.size_bytes / 2**20))
    a1 = stored(ws, 1, "alice")
    with pytest.raises(DataError, match="other users' data"):  # before: bob's upload evicted alice's oldest
        stored(ws, 2, "bob")
    assert {d.hash for d in ws.list_datasets()} == {a0.hash, a1.hash}
    os.utime(ws.dataset_path(a1.hash), (1, 1))  # alice's a1 is now her least recently used
    a3 = stored(ws, 3, "alice")
    assert {d.hash for d in ws.list_datasets()} == {a0.hash, a3.hash}
    assert ws.dataset_owners(a0.hash) == {"alice"} and not ws.dataset_path(a1.hash).with_suffix(".owners").exists()
    again = stored(ws, 0, "bob")  # the same images from bob: stored once, now shared, so alice cannot evict them
    assert again.hash == a0.hash and ws.dataset_owners(a0.hash) == {"alice", "bob"}
    os.utime(ws.dataset_path(a0.hash), (1, 1))
    stored(ws, 4, "alice")  # room comes from a3 (hers alone), not from the shared a0
    assert a0.hash in {d.hash for d in ws.list_datasets()}


def test_data_a_saved_model_was_trained_on_is_never_evicted_and_quotas_hold(ws, monkeypatch):
    a0 = stored(ws, 0, "alice")
    ckpt = C.Checkpoint(model=VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,))),
                        dataset={"name": "d0.npz", "hash": a0.hash, "source": "upload"})
    ws.save_model("on-a0", ckpt)
    assert ws.datasets_in_use() == {a0.hash}
    monkeypatch.setenv(store.DATASETS_CAP_ENV, str(1.5 * a0.size_bytes / 2**20))
    with pytest.raises(DataError, match="models were trained on"):
        stored(ws, 1, "alice")
    assert ws.dataset_path(a0.hash).is_file()
    monkeypatch.setenv(store.DATASETS_CAP_ENV, "4096")
    monkeypatch.setenv(store.USER_QUOTA_ENV, str(1.5 * a0.size_bytes / 2**20))
    with pytest.raises(DataError, match="per user"):
        stored(ws, 1, "alice")
    stored(ws, 1, "bob")  # a quota is per visitor
    stored(ws, 2, store.SERVER)  # and the CLI (the server's owner) has none


def test_a_sweeps_run_is_found_by_sweep_and_run_name_never_by_path(ws, tmp_path):
    sweep = ws.sweep_path("mine")
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    run = C.save(sweep / "beta1_fb0_wu0.safetensors", _model())
    (tmp_path / "home" / "outside.safetensors").write_bytes(run.read_bytes())
    assert ws.find_sweep_run("mine/beta1_fb0_wu0") == ("saved", run)
    shipped = ROOT / "checkpoints" / "sweeps" / "digits-d16"
    if (shipped / "beta1_fb0_wu0.safetensors").exists():
        assert ws.find_sweep_run("digits-d16/beta1_fb0_wu0") == ("shipped", shipped / "beta1_fb0_wu0.safetensors")
        clash = ws.sweep_path("digits-d16")  # a workspace sweep named like a shipped one: the shipped one is meant
        clash.mkdir()
        (clash / "sweep.json").write_text("{}")
        C.save(clash / "beta1_fb0_wu0.safetensors", _model())
        assert ws.find_sweep_run("digits-d16/beta1_fb0_wu0")[0] == "shipped"
    (sweep / "sweep.json").unlink()  # a folder without its manifest is not a sweep
    assert ws.find_sweep_run("mine/beta1_fb0_wu0") is None
    (sweep / "sweep.json").write_text("{}")
    for not_a_name in ("mine/../outside", "../home/outside", "mine/beta1_fb0_wu0.safetensors", "mine", "/mine/x",
                       "mine/beta1_fb0_wu0/x", "mine/nope", "nope/beta1_fb0_wu0", "mine/.hidden", "", None):
        assert ws.find_sweep_run(not_a_name) is None


def test_is_loaded_tells_whether_load_answers_from_its_cache():
    """The Train page shows a spinner only for a dataset not yet loaded (`ui.cache.dataset`)."""
    ref = store.DataRef("digits")
    store.load(ref, "cpu")
    assert store.is_loaded(ref, "cpu") and not store.is_loaded(store.DataRef("x.npz", "0" * 64), "cpu")
    whole = store.load(ref, "cpu")
    assert whole is store.load(ref, "cpu") and whole.n_classes == 10  # the same object: its class count is kept
