import gzip
import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from vae_core import array_files, pixels
from vae_core import data as D
from vae_core.data import DataError, load_array_file


def write_idx(path, array, compress=False):
    arr = np.asarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def make_idx_folder(folder, n_train=12, n_test=5, compress=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": rng.integers(0, 10, n_train),
              "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": rng.integers(0, 10, n_test)}
    for key, stem in D.IDX_FILES.items():
        write_idx(folder / stem, arrays[key], compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", arr, compress)
    assert np.array_equal(D.read_idx(path), arr)


@pytest.mark.parametrize("blob,msg", [(b"\x01\x02\x08\x01", "magic"), (b"\x00\x00\x0d\x01\x00\x00\x00\x01", "0x0d"),
                                      (b"\x00\x00\x08\x02\x00\x00", "truncated"),
                                      (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "expected 5")])
def test_bad_idx_files(tmp_path, blob, msg):
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=msg):
        D.read_idx(path)


def test_mnist_style_folder_from_env(tmp_path, monkeypatch):
    arrays = make_idx_folder(tmp_path / "mnist", compress=True)
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    ds = D.load_dataset("mnist")
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8  # 8-bit pixels, made floats per batch (pixels.as_float)
    assert torch.equal(ds.x_train[:, 0], torch.tensor(arrays["train_x"], dtype=torch.uint8))
    assert ds.y_test.tolist() == arrays["test_y"].tolist()


def test_torchvision_layout_is_found(tmp_path):
    make_idx_folder(tmp_path / "FashionMNIST" / "raw")
    ds = D.load_dataset("fashion-mnist", data_dir=tmp_path)
    assert len(ds.x_train) == 12 and ds.class_names[0] == "T-shirt/top"


def test_missing_dataset_names_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*VAE_DATA_DIR/mnist"):
        D.load_dataset("mnist")


def test_failed_download_is_a_clear_error_and_sets_a_timeout(tmp_path, monkeypatch):
    import socket

    from torchvision import datasets

    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    seen = {}

    def offline(*args, **kwargs):
        seen["timeout"] = socket.getdefaulttimeout()
        raise OSError("Name or service not known")

    monkeypatch.setattr(datasets, "MNIST", offline)
    with pytest.raises(DataError, match="download failed.*Name or service"):
        D.load_dataset("mnist", download=True, timeout=3.0)
    assert seen["timeout"] == 3.0
    assert socket.getdefaulttimeout() != 3.0  # restored


def test_digits_is_offline_and_split_is_fixed():
    a, b = D.load_digits(), D.load_digits()
    assert a.x_train.shape == (1438, 1, 8, 8) and a.x_test.shape == (359, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test) and a.x_train.max() == 1.0 and a.x_train.min() == 0.0
    assert a.n_classes == 10 and a.info()["n_train"] == 1438


def test_digits_are_scikit_learns_read_without_importing_it():
    """Read from scikit-learn's CSV: the same images and labels as its loader, and no SciPy import (1.7 s in every
    worker process's first run)."""
    from sklearn.datasets import load_digits as sk_digits

    images, labels = D.digits_arrays()
    bunch = sk_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
    code = "import sys; from vae_core import data; data.load_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_debian_fashion_mnist_when_installed():
    if D.find_idx_files("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST is not installed (apt install dataset-fashion-mnist)")
    ds = D.load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.n_classes == 10 and ds.x_train.dtype == torch.uint8 and int(ds.x_train.max()) == 255
    assert ds.x_train.element_size() * ds.x_train.nelement() == 60000 * 784  # 47 MB: a quarter of float32's


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        D.load_dataset("cifar")


# ---------------------------------------------------------------- user files

def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_npz_uint8_with_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 6, 6), dtype=np.uint8)
    path = tmp_path / "ok.npz"
    path.write_bytes(npz_bytes(x=x, y=np.arange(10) % 3))
    out = load_array_file(path)
    assert out.x.shape == (10, 1, 6, 6) and out.x.dtype == np.uint8  # 8-bit pixels stay 8-bit
    assert np.array_equal(out.x[:, 0], x) and out.y.tolist() == (np.arange(10) % 3).tolist()


def test_pixels_stay_8_bit_wherever_the_values_allow():
    k = np.arange(256, dtype=np.float64)
    assert pixels.to_pixels(k / 255).dtype == np.uint8  # floats that are exactly k/255
    assert pixels.to_pixels(k).dtype == np.uint8  # whole numbers 0…255 as floats
    assert np.array_equal(pixels.as_float(pixels.to_pixels(k / 255)), (k / 255).astype(np.float32))
    sixteenths = np.arange(17) / 16  # the digits' grey levels are not 8-bit: kept as float32, values unchanged
    out = pixels.to_pixels(sixteenths)
    assert out.dtype == np.float32 and np.array_equal(out, sixteenths.astype(np.float32))
    assert torch.equal(pixels.as_float(torch.tensor([0, 128, 255], dtype=torch.uint8)),
                       torch.tensor([0, 128, 255], dtype=torch.float32) / 255)


def test_npz_channels_last_float():
    x = np.random.default_rng(0).random((4, 5, 5, 3)).astype(np.float32)
    out = load_array_file(npz_bytes(x=x), "rgb.npz")
    assert out.x.shape == (4, 3, 5, 5) and np.allclose(out.x, x.transpose(0, 3, 1, 2)) and out.y is None


def test_npy_float_0_255_is_scaled():
    x = np.full((3, 4, 4), 255.0)
    assert np.allclose(pixels.as_float(load_array_file(npy_bytes(x), "a.npy").x), 1.0)


def test_csv_with_header_label_column():
    rows = ["label," + ",".join(f"p{i}" for i in range(16))]
    rows += [f"{i % 2}," + ",".join(str((i * 7 + j) % 256) for j in range(16)) for i in range(5)]
    out = load_array_file("\n".join(rows).encode(), "a.csv")
    assert out.x.shape == (5, 1, 4, 4) and out.y.tolist() == [0, 1, 0, 1, 0]
    assert out.x[1, 0, 0, 1] == 8 and np.isclose(pixels.as_float(out.x)[1, 0, 0, 1], 8 / 255)


def test_csv_without_header_extra_first_column_is_label():
    rows = [",".join([str(i)] + ["0.5"] * 9) for i in range(3)]
    out = load_array_file("\n".join(rows).encode(), "a.csv")
    assert out.x.shape == (3, 1, 3, 3) and out.y.tolist() == [0, 1, 2] and np.allclose(out.x, 0.5)


def test_csv_without_labels():
    out = load_array_file(b"0,1,1,0\n1,0,0,1\n", "a.csv")
    assert out.x.shape == (2, 1, 2, 2) and out.y is None


def _zip_bomb(mib: int = 10) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        header = npy_bytes(np.zeros(1, dtype=np.uint8))[:128]
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(header)
            chunk = b"\0" * (1 << 20)
            for _ in range(mib):
                f.write(chunk)
    return buf.getvalue()


BAD_FILES = {
    "empty": (b"", "a.npz", "empty"),
    "not a zip": (b"hello world", "a.npz", "not a valid NumPy archive"),
    "object array in npz": (npz_bytes(x=np.array([{"a": 1}], dtype=object)), "a.npz", "Python objects"),
    "pickle npy": (npy_bytes(np.array([None, 1], dtype=object), allow_pickle=True), "a.npy", "Python objects"),
    "no x in npz": (npz_bytes(images=np.zeros((2, 4, 4))), "a.npz", "named 'x'"),
    "wrong dimensions": (npy_bytes(np.zeros((2, 3, 4, 5, 6))), "a.npy", "expected N×H×W"),
    "1-D": (npy_bytes(np.zeros(7)), "a.npy", "expected N×H×W"),
    "label count": (npz_bytes(x=np.zeros((4, 4, 4)), y=np.arange(3)), "a.npz", "one label per image"),
    "fractional labels": (npz_bytes(x=np.zeros((2, 4, 4)), y=np.array([0.5, 1])), "a.npz", "whole numbers"),
    "nan": (npy_bytes(np.full((2, 4, 4), np.nan)), "a.npy", "NaN"),
    "inf": (npy_bytes(np.full((2, 4, 4), np.inf)), "a.npy", "NaN or infinity"),
    "negative": (npy_bytes(np.full((2, 4, 4), -1.0)), "a.npy", "≥ 0"),
    "over 255": (npy_bytes(np.full((2, 4, 4), 300)), "a.npy", r"\[0, 255\]"),
    "strings": (npy_bytes(np.array([["a", "b"]])), "a.npy", "expected integers or floats"),
    "text in csv": (b"1,2,3,4\n5,x,7,8\n", "a.csv", r"row 2, column 2"),
    "zero rows csv": (b"label,a,b,c,d\n", "a.csv", "no rows"),
    "zero images": (npy_bytes(np.zeros((0, 4, 4))), "a.npy", "no images"),
    "non-square csv": (b"1,2,3\n4,5,6\n", "a.csv", "square"),
    "too large images": (npy_bytes(np.zeros((1, pixels.MAX_SIDE + 1, 4), dtype=np.uint8)), "a.npy", "supported size"),
    "unknown extension": (b"abc", "a.txt", "unsupported file type"),
    "zip bomb": (_zip_bomb(), "a.npz", "expands past"),
    "truncated npy": (npy_bytes(np.zeros((20, 8, 8)))[:200], "a.npy", "could not be read"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_user_files_raise_data_error(kind, monkeypatch):
    monkeypatch.setattr(array_files, "MAX_ARRAY_BYTES", 8 << 20)  # the zip bomb expands to 10 MiB
    blob, name, msg = BAD_FILES[kind]
    with pytest.raises(DataError, match=msg):
        load_array_file(blob, name)


def test_too_many_images(monkeypatch):
    monkeypatch.setattr(pixels, "MAX_IMAGES", 5)
    with pytest.raises(DataError, match="limit of 5"):
        load_array_file(npy_bytes(np.zeros((6, 4, 4))), "a.npy")


def test_missing_path():
    with pytest.raises(DataError, match="cannot open"):
        load_array_file("/nonexistent/file.npz")


def test_split_arrays_is_seeded_and_disjoint():
    x = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1).repeat(2, 2).repeat(2, 3) / 50
    ds = D.split_arrays("u", x, None)
    train, test = set(ds.x_train[:, 0, 0, 0].tolist()), set(ds.x_test[:, 0, 0, 0].tolist())
    assert len(test) == 10 and len(train) == 40 and not train & test
    assert ds.n_classes == 0 and ds.y_train is None
