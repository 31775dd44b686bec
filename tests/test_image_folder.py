"""Folders and .zip files of PNG/JPEG images (vae_core/image_folder.py): class folders as labels, grey or colour,
the size rule, every kind of bad input with its own message, the store keeping class names, and the CLI."""
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from PIL import Image

from vae_core import checkpoint as C
from vae_core import dataset_file, pixels
from vae_core import image_folder as F
from vae_core import store
from vae_core.__main__ import main
from vae_core.data import ArrayData, DataError, from_arrays, load_array_file
from vae_core.pixels import split_order


def save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def grey(value: int, size=(8, 8)) -> Image.Image:
    return Image.new("L", size, value)


def pets(root: Path, n_cat=6, n_dog=6, colour=False, size=(8, 8)) -> Path:
    """root/cat/c*.png and root/dog/d*.png; image i of a class has grey level (or red level) 10·i (+100 for dogs)."""
    for name, n, offset in (("cat", n_cat, 0), ("dog", n_dog, 100)):
        for i in range(n):
            v = offset + 10 * i
            save(root / name / f"{name[0]}{i}.png", Image.new("RGB", size, (v, 0, 0)) if colour else grey(v, size))
    return root


def zip_of(folder: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that only claims its size: IHDR and IEND, no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


# ---------------------------------------------------------------- layout and labels

def test_class_folders_are_sorted_labels_with_their_names_and_junk_is_ignored(tmp_path):
    root = pets(tmp_path / "pets", n_cat=5)
    save(root / "cat" / "indoor" / "deep.png", grey(7))  # deeper folders belong to their first-level class
    (root / "empty").mkdir()  # a class folder without images is no class
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "cat/._c0.png", "__MACOSX/cat/c0.png", ".git/x.txt"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"junk")
    out = load_array_file(root)
    assert out.class_names == ("cat", "dog") and out.x.shape == (12, 1, 8, 8) and out.x.dtype == np.uint8
    assert out.y.tolist() == [0] * 6 + [1] * 6  # files in sorted path order
    assert out.x[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 7, 100, 110, 120, 130, 140, 150]
    ds = from_arrays("pets", out)
    assert ds.class_names == ("cat", "dog") and ds.n_classes == 2


def test_images_at_the_top_level_are_unlabelled(tmp_path):
    for i in range(10):
        save(tmp_path / "flat" / f"{i}.png", grey(i))
    out = load_array_file(tmp_path / "flat")
    assert out.y is None and out.class_names is None and out.x.shape == (10, 1, 8, 8)
    assert from_arrays("flat", out).class_names is None


def test_a_zip_with_one_wrapping_folder_equals_the_folder_whatever_the_source(tmp_path):
    root = pets(tmp_path / "pets")
    blob = zip_of(root, "pets/", extra={"__MACOSX/pets/._c0.png": b"junk", "pets/.DS_Store": b"junk"})
    (tmp_path / "pets.zip").write_bytes(blob)
    folder = load_array_file(root)
    for source, name in ((blob, "pets.zip"), (tmp_path / "pets.zip", None), (io.BytesIO(blob), "pets.zip")):
        z = load_array_file(source, name)
        assert np.array_equal(z.x, folder.x) and np.array_equal(z.y, folder.y) and z.class_names == ("cat", "dog")
        assert store.content_hash(z) == store.content_hash(folder)


def test_the_same_pixels_under_other_folder_names_are_another_dataset(tmp_path):
    a = load_array_file(pets(tmp_path / "a"))
    (tmp_path / "a" / "cat").rename(tmp_path / "a" / "ant")
    b = load_array_file(tmp_path / "a")
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and b.class_names == ("ant", "dog")
    assert store.content_hash(a) != store.content_hash(b)


# ---------------------------------------------------------------- colour

def test_colour_images_have_three_channels_with_the_right_values(tmp_path):
    for i in range(10):
        save(tmp_path / "red" / f"{i}.png", Image.new("RGB", (6, 6), (255, 0, 0)))
    out = load_array_file(tmp_path / "red")
    assert out.x.shape == (10, 3, 6, 6)
    assert (out.x[:, 0] == 255).all() and (out.x[:, 1:] == 0).all()


def test_transparency_is_composited_on_white(tmp_path):
    folder = tmp_path / "alpha"
    save(folder / "0.png", Image.new("RGBA", (4, 4), (0, 0, 0, 0)))  # fully transparent: white
    save(folder / "1.png", Image.new("RGBA", (4, 4), (0, 0, 255, 255)))  # opaque blue
    save(folder / "2.png", Image.new("RGBA", (4, 4), (0, 0, 0, 51)))  # 20 % black over white
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    save(folder / "3.png", palette, transparency=1)  # a palette image whose green is transparent
    for i in range(4, 10):
        save(folder / f"{i}.jpg", Image.new("RGB", (4, 4), (0, 200, 0)))
    out = load_array_file(folder)
    assert out.x.shape == (10, 3, 4, 4)
    assert (out.x[0] == 255).all() and (out.x[3] == 255).all()
    assert out.x[1, :, 0, 0].tolist() == [0, 0, 255]
    assert np.allclose(out.x[2], 204, atol=1.5)


def test_grey_modes_give_one_channel(tmp_path):
    folder = tmp_path / "greys"
    save(folder / "la.png", Image.new("LA", (4, 4), (0, 0)))  # transparent grey: white
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 90, 90, 90])
    save(folder / "p.png", palette)  # a palette of greys
    deep = Image.fromarray(np.full((4, 4), 257 * 40, dtype=np.uint16))  # 16-bit grey: scaled, not clipped
    save(folder / "sixteen.png", deep)
    for i in range(7):
        save(folder / f"{i}.jpg", grey(200, (4, 4)))
    out = load_array_file(folder)
    assert out.x.shape == (10, 1, 4, 4)
    names = sorted(p.name for p in folder.iterdir())
    value = {n: int(out.x[i, 0, 0, 0]) for i, n in enumerate(names)}
    assert (value["la.png"], value["p.png"], value["sixteen.png"]) == (255, 90, 40)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90°
    for i in range(10):
        save(tmp_path / "photos" / f"{i}.jpg", Image.new("RGB", (16, 8), (0, 0, 255)), exif=exif)
    assert load_array_file(tmp_path / "photos").x.shape == (10, 3, 16, 8)  # (N, C, H, W): 16 high, 8 wide


# ---------------------------------------------------------------- size

def test_a_picked_size_scales_the_shorter_side_and_crops_the_centre(tmp_path):
    stripes = np.zeros((10, 30), dtype=np.uint8)  # (H, W): black, white, black thirds
    stripes[:, 10:20] = 255
    for i in range(10):
        save(tmp_path / "wide" / f"{i}.png", Image.fromarray(stripes))
    assert (load_array_file(tmp_path / "wide", image_size=10).x == 255).all()  # the centre 10×10 is the white third
    small = load_array_file(tmp_path / "wide", image_size=4).x  # (10, 1, 4, 4): Lanczos, antialiased
    assert small.shape == (10, 1, 4, 4) and small[:, :, :, 1:3].min() > 0.9 * 255
    assert load_array_file(tmp_path / "wide").x.shape == (10, 1, 10, 30)  # one size for all: kept


def test_the_default_size_is_the_most_common_one_capped_at_64(tmp_path):
    for i in range(6):
        save(tmp_path / "mixed" / f"a{i}.png", grey(50, (32, 32)))
    for i in range(4):
        save(tmp_path / "mixed" / f"b{i}.png", grey(50, (20, 40)))
    out = load_array_file(tmp_path / "mixed")
    assert out.x.shape == (10, 1, 32, 32) and np.allclose(out.x, 50, atol=1)
    for i in range(10):
        save(tmp_path / "big" / f"{i}.png", grey(9, (200, 100)))  # (W, H): one non-square size
    assert load_array_file(tmp_path / "big").x.shape == (10, 1, 32, 64)  # its shape kept, longer side 64
    assert F.DEFAULT_MAX_SIDE == 64


# ---------------------------------------------------------------- bad input, one message each

def ten_greys(folder: Path, n=10) -> Path:
    for i in range(n):
        save(folder / f"{i}.png", grey(i))
    return folder


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    (ten_greys(tmp_path / "d") / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes.txt in d/ is not a PNG or JPEG image"):
        load_array_file(tmp_path / "d")


@pytest.mark.parametrize("blob", [b"not a png at all", None], ids=["garbage", "truncated"])
def test_an_image_pillow_cannot_decode_is_named(tmp_path, blob):
    folder = ten_greys(tmp_path / "d")
    if blob is None:  # a valid header, cut in its pixel data
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
        blob = buf.getvalue()[:300]
    (folder / "broken.png").write_bytes(blob)
    with pytest.raises(DataError, match=r"broken.png in d/ cannot be read as a PNG or JPEG image"):
        load_array_file(folder)


def test_grey_and_colour_mixed_names_one_of_each(tmp_path):
    root = pets(tmp_path / "pets")
    save(root / "dog" / "z.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    with pytest.raises(DataError, match=r"mixes grey and colour images \(grey: cat/c0.png, colour: dog/z.png\)"):
        load_array_file(root)


def test_huge_images_are_refused_from_their_header(tmp_path, monkeypatch):
    folder = ten_greys(tmp_path / "d")
    (folder / "huge.png").write_bytes(png_header(5000, 5000))  # no pixel data: only the header is read
    with pytest.raises(DataError, match=r"huge.png in d/ is 5000×5000 pixels; images up to 16,777,216 pixels"):
        load_array_file(folder)
    (folder / "huge.png").write_bytes(png_header(20000, 20000))  # past Pillow's own decompression-bomb limit
    with pytest.raises(DataError, match=r"huge.png in d/ is too large an image"):
        load_array_file(folder)
    (folder / "huge.png").unlink()
    monkeypatch.setattr(F, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(DataError, match=r"0.png in d/ is 8×8 pixels; images up to 63 pixels"):
        load_array_file(folder)


def test_zip_bombs_are_refused_from_the_directory(tmp_path, monkeypatch):
    blob = zip_of(ten_greys(tmp_path / "d"))
    monkeypatch.setattr(F, "MAX_FILES", 5)
    with pytest.raises(DataError, match=r"a.zip has 10 entries; at most 5 are accepted"):
        load_array_file(blob, "a.zip")
    with pytest.raises(DataError, match=r"d/ holds more than 5 files"):
        load_array_file(tmp_path / "d")
    monkeypatch.undo()
    monkeypatch.setattr(F, "MAX_TOTAL_BYTES", 500)
    with pytest.raises(DataError, match=r"the images in a.zip take .* MiB uncompressed; the limit is"):
        load_array_file(blob, "a.zip")
    monkeypatch.undo()
    bomb = zip_of(tmp_path / "d", extra={"bomb.png": bytes(2 << 20)})  # 2 MiB of zeros deflate about 1000:1
    with pytest.raises(DataError, match=r"bomb.png in a.zip would expand .* times .* looks like a zip bomb"):
        load_array_file(bomb, "a.zip")


def test_a_zip_member_larger_than_its_header_says_is_refused_while_reading(tmp_path):
    head = png_header(8, 8)
    blob = bytearray(zip_of(ten_greys(tmp_path / "d", n=9), extra={"liar.png": head + bytes(100_000)}))
    entry = blob.rindex(b"PK\x01\x02")  # the central directory's record of liar.png (written last)
    blob[entry + 24: entry + 28] = struct.pack("<I", len(head))  # it claims to be only the PNG header
    with pytest.raises(DataError, match=r"liar.png in a.zip is damaged or not what the zip's directory says"):
        load_array_file(bytes(blob), "a.zip")
    # what reaches the decoder is never more than the recorded size (a file that grew is refused, not read on)
    grown = F._File("grown.png", ("grown.png",), len(head), lambda: io.BytesIO(head + bytes(10)))
    with pytest.raises(DataError, match=r"grown.png in d/ holds more than its recorded 45 bytes"):
        F._decode(grown, "d/", True, (8, 8))


@pytest.mark.parametrize("blob, msg", [
    (b"", "a.zip is empty"),
    (b"PK not really", "a.zip is not a valid zip file"),
    (zip_of(Path("/nonexistent")), "a.zip holds no PNG or JPEG images"),
    (zip_of(Path("/nonexistent"), extra={"__MACOSX/._x.png": b"", ".DS_Store": b""}), "holds no PNG or JPEG"),
    (zip_of(Path("/nonexistent"), extra={"../evil.png": b"x"}), r"entry named '../evil.png' that points outside"),
], ids=["zero bytes", "not a zip", "empty zip", "only junk", "path traversal"])
def test_bad_zips(blob, msg):
    with pytest.raises(DataError, match=msg):
        load_array_file(blob, "a.zip")


def test_too_few_images_images_beside_class_folders_and_a_bad_size(tmp_path):
    folder = ten_greys(tmp_path / "d", n=3)
    with pytest.raises(DataError, match=r"d/ holds 3 images; at least 10 are needed"):
        load_array_file(folder)
    pets(folder)
    with pytest.raises(DataError, match=r"0.png in d/ lies next to class folders"):
        load_array_file(folder)
    with pytest.raises(DataError, match=r"image size must be 2…256 pixels, got 1"):
        load_array_file(pets(tmp_path / "p"), image_size=1)


# ---------------------------------------------------------------- the store and the CLI

def test_the_store_keeps_class_names_and_reads_datasets_stored_before_format_2(tmp_path):
    x = (np.arange(24, dtype=np.float32) / 255).reshape(3, 1, 2, 4)  # (N, C, H, W)
    # format 1's digests (float32 values, original order): the checkpoints made then record them, and stay valid
    assert dataset_file.content_hash_v1(ArrayData(x, np.array([0, 1, 1]))) == \
        "2949ae1604ade9a00f5eb7ed1406454e458cf0a0e00f35097addbbc0711b0c4c"
    assert dataset_file.content_hash_v1(ArrayData(x, None)) == \
        "f16a6395628c4c58a5a78098e9fc36a4324b63cb87e76f922b6c676db8c3b562"
    u8 = ArrayData(pixels.to_pixels(x), np.array([0, 1, 1]))  # the same values as 8-bit pixels
    assert dataset_file.content_hash_v1(u8) == "2949ae1604ade9a00f5eb7ed1406454e458cf0a0e00f35097addbbc0711b0c4c"
    ws = store.Workspace(tmp_path / "home")
    arrays = load_array_file(pets(tmp_path / "pets"))
    rec = ws.put_dataset(arrays, "pets")
    back, name = ws.load_arrays(rec.hash)
    assert name == "pets" and back.class_names == ("cat", "dog") and rec.class_names == ("cat", "dog")
    assert np.array_equal(back.x, arrays.x[split_order(12)[0]]) and store.content_hash(back) == rec.hash
    assert back.names == tuple(arrays.names[i] for i in split_order(12)[0])  # each row's file name, kept
    assert store.load(store.DataRef("pets", rec.hash), "cpu", ws).class_names == ("cat", "dog")
    plain = ws.put_dataset(ArrayData(arrays.x, arrays.y), "pets.npz")  # the same pixels, numbered classes
    assert plain.hash != rec.hash and plain.class_names is None and ws.load_arrays(plain.hash)[0].class_names is None
    assert store.load(store.DataRef("pets.npz", plain.hash), "cpu", ws).class_names == ("0", "1")

    # a dataset stored in format 1 (whole float32 or uint8 arrays, original order) still opens, and is checked
    old = ArrayData(pixels.to_pixels(np.random.default_rng(0).random((20, 1, 4, 4)) > 0.5), np.arange(20) % 2)
    digest = dataset_file.content_hash_v1(old)
    meta = {"format_version": 1, "hash": digest, "file_name": "old.npz", "n_images": 20, "image_shape": [1, 4, 4],
            "n_classes": 2, "created": "2026-11-01T00:00:00"}
    blob = safetensors.numpy.save({"x": old.x, "y": old.y}, metadata={dataset_file.KEY: json.dumps(meta)})
    ws.dataset_path(digest).write_bytes(blob)
    loaded = store.load(store.DataRef("old.npz", digest), "cpu", ws)
    assert len(loaded.x_train) == 16 and torch.equal(loaded.x_test, torch.from_numpy(old.x[split_order(20)[0][16:]]))
    ws.dataset_path(digest).write_bytes(blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])
    with pytest.raises(DataError, match="is damaged"):
        ws.load_arrays(digest)
    # … and uploading those images again for a model that records the old hash attaches them for good
    again = ws.attach(old, "old.npz", digest)
    assert again.hash != digest and ws.dataset_info(digest).hash == again.hash
    assert np.array_equal(ws.load_arrays(digest)[0].x, old.x[split_order(20)[0]])


def test_cli_trains_a_conv_model_on_a_folder_of_colour_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    root = pets(tmp_path / "pets", colour=True, size=(12, 10))
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data-file", str(root), "--image-size", "8", "--arch", "conv", "--channels", "4,8",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(out)]) == 0
    ckpt = C.load(out)
    assert ckpt.config.image_shape == (3, 8, 8) and ckpt.dataset["class_names"] == ["cat", "dog"]
    data = store.load(store.DataRef.from_info(ckpt.dataset), "cpu", store.Workspace())
    assert data.name == "pets" and data.class_names == ("cat", "dog") and data.image_shape == (3, 8, 8)
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 4, 4)))
    capsys.readouterr()
    assert main(["train", "--data-file", str(tmp_path / "a.npz"), "--image-size", "8", "--out", "x"]) == 2
    assert "--image-size applies to a folder or .zip of images" in capsys.readouterr().err
