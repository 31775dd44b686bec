"""Registering images at scale (store.Workspace.register, image_folder.decode, dataset_file): a folder or zip is
decoded by worker processes straight into the stored file — the same dataset, bit for bit, as reading it in
memory — with progress, a cancel that leaves nothing behind, less memory than one copy of its pixels, a clear
message when the machine cannot hold it, and the CLI from a CelebA-shaped zip to an evaluated conv model."""
import io
import tracemalloc
import zipfile

import numpy as np
import pytest
import safetensors
from PIL import Image

from bench.faces import draw, write_zip
from vae_core import checkpoint as C
from vae_core import image_folder, pixels, store
from vae_core.__main__ import main
from vae_core.data import DataError, load_array_file
from vae_core.pixels import split_order


@pytest.fixture(scope="module")
def faces_zip(tmp_path_factory):
    return write_zip(tmp_path_factory.mktemp("faces") / "faces.zip", 600, side=32, log=None)


def test_a_zip_registered_by_worker_processes_equals_the_zip_read_in_memory(faces_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "PARALLEL_MIN", 100)  # 600 images: worker processes read and decode them
    ws = store.Workspace(tmp_path / "home")
    seen = []
    rec = ws.register(faces_zip, progress=lambda f, m: seen.append((f, m)))
    in_memory = load_array_file(faces_zip)
    assert rec.hash == store.content_hash(in_memory) and rec.n_images == 600 and rec.image_shape == (3, 32, 32)
    assert rec.class_names == ("black", "blond", "brown", "grey") and rec.file_name == "faces.zip"
    back, _ = ws.load_arrays(rec.hash)
    order, n_test = split_order(600)
    assert np.array_equal(back.x, in_memory.x[order]) and back.n_test == n_test
    assert back.names[0] == in_memory.names[order[0]]  # each row's file name, in stored order
    with safetensors.safe_open(ws.dataset_path(rec.hash), "np") as f:  # a standard safetensors file
        assert f.get_tensor("x").shape == (600, 3, 32, 32)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.95
    assert any("image headers" in m for _, m in seen) and any("decoded" in m for _, m in seen)
    # the same images as an upload (bytes) and as a folder: one dataset, stored once
    assert ws.register(faces_zip.read_bytes(), "other-name.zip").hash == rec.hash
    assert len(list(ws.datasets_dir.glob("*.safetensors"))) == 1 and not list(ws.datasets_dir.glob(".*"))


def test_a_cancelled_registration_leaves_nothing_behind(faces_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "PARALLEL_MIN", 100)
    ws = store.Workspace(tmp_path / "home")

    def cancel(fraction, message):
        if "decoded" in message:
            raise KeyboardInterrupt  # Ctrl-C in the CLI, or a job's Cancel in the app

    with pytest.raises(KeyboardInterrupt):
        ws.register(faces_zip, progress=cancel)
    assert not list(ws.datasets_dir.iterdir())  # no dataset, no temporary file


def test_registering_holds_less_than_one_copy_of_the_pixels(tmp_path, monkeypatch):
    """Decoded in this process (no worker processes), the pixels go straight to the file a block at a time: the
    peak of Python's allocations stays far below the dataset's size, whereas reading it in memory needs all of it."""
    monkeypatch.setattr(image_folder, "PARALLEL_MIN", 10**9)
    images, _ = draw(3000, side=64)
    path = tmp_path / "flat"
    path.mkdir()
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        (path / f"{i:05d}.png").write_bytes(buf.getvalue())
    pixels_bytes = images.nbytes  # 3000 × 3 × 64 × 64 = 37 MB
    ws = store.Workspace(tmp_path / "home")
    tracemalloc.start()
    ws.register(path, progress=None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.5 * pixels_bytes, f"peak {peak / 2**20:.1f} MiB for {pixels_bytes / 2**20:.1f} MiB of pixels"


def test_a_dataset_the_machine_cannot_hold_is_refused_from_its_headers_with_the_numbers(monkeypatch, faces_zip):
    monkeypatch.setattr(pixels, "available_memory", lambda: 1 << 20)  # 1 MiB available
    with pytest.raises(DataError, match=r"600 images of 3×32×32 need 1\.8 MiB of memory as 8-bit pixels; "
                                        r"this machine has 1\.0 MiB available"):
        image_folder.plan_images(faces_zip).close()
    with pytest.raises(DataError, match=r"5,000 images of 1×28×28 need 3\.7 MiB of memory .* has 1\.0 MiB available"):
        load_array_file(_npy((5000, 28, 28)), "big.npy")


def _npy(shape) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype=np.uint8))
    return buf.getvalue()


def test_more_images_than_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(image_folder, "MAX_IMAGES", 20)
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as z:
        for i in range(21):
            z.writestr(f"{i}.png", b"not decoded")
    with pytest.raises(DataError, match="holds 21 images; the limit is 20"):
        load_array_file(blob.getvalue(), "many.zip")


def test_the_cli_stores_a_celeba_shaped_zip_trains_a_conv_epoch_and_evaluates(faces_zip, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    assert main(["datasets", "--add", str(faces_zip)]) == 0
    assert "faces.zip: 600 images of (3, 32, 32)" in capsys.readouterr().err
    assert main(["datasets"]) == 0
    assert "faces.zip" in capsys.readouterr().out
    out = tmp_path / "faces-conv.safetensors"
    assert main(["train", "--dataset", "faces.zip", "--arch", "conv", "--latent-dim", "2", "--epochs", "1",
                 "--out", str(out)]) == 0
    ckpt = C.load(out)
    assert ckpt.config.image_shape == (3, 32, 32) and ckpt.config.architecture == "conv"
    assert main(["evaluate", str(out), "--json"]) == 0
    assert '"n_test": 120' in capsys.readouterr().out
    assert main(["train", "--dataset", "nope.zip", "--out", "x"]) == 2
    assert "neither a built-in dataset nor a stored one" in capsys.readouterr().err
