"""Images as they are: a folder, or a .zip, of PNG/JPEG files, read like torchvision's ImageFolder.

Layout. Each folder directly below the root is a class: the sorted folder names are the labels 0…K-1 and are
kept as the class names; images in deeper folders belong to the class of their first-level folder
(`cat/indoor/1.png` is a "cat"). Images directly in the root, with no class folders, are unlabelled; images in
the root *and* class folders are refused. A root holding nothing but one folder (what zipping a folder gives,
`pets.zip: pets/cat/…`) is descended into, as often as needed — so a lone class folder means unlabelled images.
Hidden and operating-system files are skipped silently (`__MACOSX/`, dot-files such as `.DS_Store`,
`Thumbs.db`, `desktop.ini`); any other file that is not a .png/.jpg/.jpeg is an error naming it. A class
folder with no images simply is no class.

Colour. Grey images (modes 1, L, LA, 16-bit I, or a palette of greys only) give C = 1; colour ones (RGB,
RGBA, CMYK, a palette with colours) C = 3. Transparency is composited on white; 16-bit grey is scaled to 8 bits;
a JPEG's EXIF orientation is applied. Grey and colour images mixed in one dataset are refused, naming one of each.

Size. Every image becomes the same (H, W): `image_size`×`image_size` when picked, else the most common size in
the set (ties: the smaller), scaled down keeping its shape so that its longer side is at most
`DEFAULT_MAX_SIDE` — so a set of one size, square or not, keeps that size. Each image is scaled (Lanczos,
antialiased when shrinking) so that it covers the target — for a square target: its shorter side becomes
`image_size` — and the centre is cropped.

Safety. Nothing is extracted to disk (zip members are read into memory one at a time, so a name like
`../../x.png` is only a name, and is refused). Before any pixel is decoded: the number of files, every file's
and all image files' uncompressed size (zip headers), each member's compression ratio, each image's width×height
(its header) and the final array's size (`data.check_array_shape`) are checked; while reading, a member that
yields more than its header says is refused. Every failure is one `DataError` naming the file at fault.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .data import (MAX_ARRAY_BYTES, MAX_CLASSES, MAX_SIDE, ArrayData, DataError, check_array_shape, check_image_count,
                   read_source, to_unit_range)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")  # the only decoders Pillow may use on these files
JUNK_NAMES = ("__macosx", "thumbs.db", "desktop.ini")  # skipped, as are names starting with a dot
DEFAULT_MAX_SIDE = 64  # the default size's longer side, in pixels
MAX_FILES = 250_000  # files in a folder, members in a zip
MAX_FILE_BYTES = 128 << 20  # one image file, uncompressed
MAX_TOTAL_BYTES = 1 << 30  # all image files together, uncompressed
MAX_COMPRESSION_RATIO = 100  # uncompressed : compressed, for a zip member over RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1 << 20
MAX_IMAGE_PIXELS = 4096 * 4096  # width × height of one image, read from its header before decoding
WHITE = (255, 255, 255, 255)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class _File:
    """One file of the folder or zip: its name in messages, its path parts, its (uncompressed) size, an opener."""

    name: str
    parts: tuple[str, ...]
    size: int
    open: Callable[[], BinaryIO]


def read_image_folder(path: str | os.PathLike, *, image_size: int | None = None) -> ArrayData:
    """The PNG/JPEG images under the folder `path` (layout, colour and size rules: the module's docstring)."""
    root = Path(path)
    where = f"{root.name or root.resolve().name}/"
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not _is_junk(d)]
        for file_name in names:
            file_path = Path(folder, file_name)
            if _is_junk(file_name) or not file_path.is_file():
                continue
            if len(files) == MAX_FILES:
                raise DataError(f"{where} holds more than {MAX_FILES:,} files; that is the limit")
            rel = file_path.relative_to(root)
            files.append(_File(rel.as_posix(), rel.parts, file_path.stat().st_size, partial(open, file_path, "rb")))
    return _read_images(files, where, image_size)


def read_image_zip(source: str | os.PathLike | bytes | BinaryIO, name: str | None = None, *,
                   image_size: int | None = None) -> ArrayData:
    """The PNG/JPEG images in a .zip given as a path, bytes or a binary file object (layout, colour and size
    rules: the module's docstring). The zip is checked from its directory before a member is read."""
    raw, source_name = read_source(source)
    where = Path(str(name or source_name)).name or "the zip"
    if not raw:
        raise DataError(f"{where} is empty")
    if len(raw) > MAX_ARRAY_BYTES:
        raise DataError(f"{where} is {len(raw) / 2**20:.1f} MiB; the limit is {MAX_ARRAY_BYTES >> 20} MiB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DataError(f"{where} is not a valid zip file") from None
    if len(infos) > MAX_FILES:
        raise DataError(f"{where} has {len(infos):,} entries; at most {MAX_FILES:,} are accepted")
    files = []
    for info in infos:
        parts = tuple(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))
        if info.filename.startswith(("/", "\\")) or ".." in parts:
            raise DataError(f"{where} has an entry named {info.filename!r} that points outside the zip; "
                            "make the zip again from the folder")
        if info.is_dir() or not parts or any(_is_junk(p) for p in parts):
            continue
        if info.flag_bits & 0x1:
            raise DataError(f"{where} is password-protected ({info.filename}); zip the images without a password")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
            raise DataError(f"{info.filename} in {where} would expand {info.file_size // max(1, info.compress_size):,}"
                            f" times (images compress at most {MAX_COMPRESSION_RATIO}:1); the zip looks like a zip "
                            "bomb and is refused")
        files.append(_File(info.filename, parts, info.file_size, partial(archive.open, info)))
    return _read_images(files, where, image_size)


def _is_junk(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_NAMES


def _read_images(files: list[_File], where: str, image_size: int | None) -> ArrayData:
    """Check the files, find the classes, choose C and the size from the headers, then decode into one array."""
    if image_size is not None and not 2 <= image_size <= MAX_SIDE:
        raise DataError(f"the image size must be 2…{MAX_SIDE} pixels, got {image_size}")
    files = sorted(files, key=lambda f: f.parts)
    other = next((f for f in files if not f.name.lower().endswith(IMAGE_EXTENSIONS)), None)
    if other is not None:
        raise DataError(f"{other.name} in {where} is not a PNG or JPEG image; the folder or zip may hold only "
                        ".png/.jpg/.jpeg files, in class folders or all at the top (hidden files are ignored)")
    if not files:
        raise DataError(f"{where} holds no PNG or JPEG images")
    big = next((f for f in files if f.size > MAX_FILE_BYTES), None)
    if big is not None:
        raise DataError(f"{big.name} in {where} is {big.size / 2**20:.0f} MiB; image files up to "
                        f"{MAX_FILE_BYTES >> 20} MiB are accepted")
    total = sum(f.size for f in files)
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"the images in {where} take {total / 2**20:,.1f} MiB uncompressed; the limit is "
                        f"{MAX_TOTAL_BYTES >> 20} MiB")
    check_image_count(where, len(files))
    y, class_names = _labels(files, where)

    headers = [_header(f, where) for f in files]  # (width, height, grey) each, nothing decoded
    grey = [f for f, (_, _, g) in zip(files, headers) if g]
    colour = [f for f, (_, _, g) in zip(files, headers) if not g]
    if grey and colour:
        raise DataError(f"{where} mixes grey and colour images (grey: {grey[0].name}, colour: {colour[0].name}); "
                        "convert them all to one kind")
    n, c = len(files), 1 if grey else 3
    width, height = _target_size([(w, h) for w, h, _ in headers], image_size)
    check_array_shape(n, c, height, width)
    x = np.empty((n, c, height, width), dtype=np.uint8)  # (N, C, H, W)
    for i, f in enumerate(files):
        x[i] = _decode(f, where, bool(grey), (width, height))  # (C, H, W)
    return ArrayData(x=to_unit_range(x), y=y, class_names=class_names)  # x: (N, C, H, W) float32 in [0, 1]


def _labels(files: list[_File], where: str) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """(labels (N,), class names) from the first folder level below the root, after descending into single
    wrapping folders; (None, None) for a flat set of images."""
    depth = 0
    while all(len(f.parts) > depth + 1 for f in files) and len({f.parts[depth] for f in files}) == 1:
        depth += 1
    top = [f for f in files if len(f.parts) == depth + 1]
    if len(top) == len(files):
        return None, None
    if top:
        raise DataError(f"{top[0].name} in {where} lies next to class folders; put every image in a class folder "
                        "(the folder's name is the label), or all of them at the top level (no labels)")
    class_names = tuple(sorted({f.parts[depth] for f in files}))
    if len(class_names) > MAX_CLASSES:
        raise DataError(f"{where} has {len(class_names):,} class folders; at most {MAX_CLASSES} are supported")
    index = {name: label for label, name in enumerate(class_names)}
    return np.array([index[f.parts[depth]] for f in files], dtype=np.int64), class_names  # (N,)


def _header(f: _File, where: str) -> tuple[int, int, bool]:
    """(width, height, grey) of one image from its header (EXIF rotation applied), never decoding its pixels."""
    try:
        with f.open() as stream, Image.open(stream, formats=PIL_FORMATS) as im:
            (width, height), grey, orientation = im.size, _is_grey(im), _orientation(im)
    except Image.DecompressionBombError as err:
        raise DataError(f"{f.name} in {where} is too large an image ({err}); images up to 4096×4096 pixels are "
                        "accepted") from None
    except zipfile.BadZipFile as err:
        raise _damaged(f, where, err) from None
    except Exception as err:  # noqa: BLE001 — Pillow raises OSError, SyntaxError, ValueError, struct.error…
        raise DataError(f"{f.name} in {where} cannot be read as a PNG or JPEG image ({err})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{f.name} in {where} is {width}×{height} pixels; images up to {MAX_IMAGE_PIXELS:,} pixels "
                        "(4096×4096) are accepted: scale it down first")
    return (height, width, grey) if orientation in ROTATED else (width, height, grey)


def _damaged(f: _File, where: str, err: Exception) -> DataError:
    """A member whose bytes fail the zip's checksum: damaged, or crafted to expand past its recorded size."""
    return DataError(f"{f.name} in {where} is damaged or not what the zip's directory says ({err}); make the zip "
                     "again")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation in the image's header (1: as stored; also when the EXIF block is damaged)."""
    if "exif" not in im.info:
        return 1
    exif = Image.Exif()
    try:
        exif.load(im.info["exif"])
        return int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 — a damaged EXIF block does not make the pixels unreadable
        return 1


def _is_grey(im: Image.Image) -> bool:
    if im.mode in ("P", "PA"):
        palette = np.asarray(im.getpalette("RGB") or [0, 0, 1]).reshape(-1, 3)  # (entries, 3)
        return bool((palette == palette[:, :1]).all())
    return im.mode in GREY_MODES


def _target_size(sizes: list[tuple[int, int]], image_size: int | None) -> tuple[int, int]:
    """(width, height) for every image: image_size² when picked, else the most common size (ties: the smaller)
    scaled down to a longer side of at most DEFAULT_MAX_SIDE."""
    if image_size is not None:
        return image_size, image_size
    counts = Counter(sizes)
    width, height = max(counts, key=lambda s: (counts[s], -s[0] * s[1]))
    scale = min(1.0, DEFAULT_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(f: _File, where: str, grey: bool, size: tuple[int, int]) -> np.ndarray:
    """One image's uint8 pixels (C, H, W) at `size` = (W, H), read never past its recorded size."""
    try:
        with f.open() as stream:
            raw = stream.read(f.size + 1)
    except zipfile.BadZipFile as err:
        raise _damaged(f, where, err) from None
    if len(raw) > f.size:
        raise DataError(f"{f.name} in {where} holds more than its recorded {f.size:,} bytes (a damaged or crafted "
                        "zip, or a file changed while being read); refused")
    try:
        im = Image.open(io.BytesIO(raw), formats=PIL_FORMATS)  # not closed: closing would free the pixels
        if im.format == "JPEG":  # decode at a reduced scale that still covers the target: less time and memory
            cover = max(size) / min(im.size)
            im.draft(im.mode, (int(im.width * cover) + 1, int(im.height * cover) + 1))
        rotated = _orientation(im) != 1
        im.load()
        if rotated:
            im = ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001 — a truncated or corrupt image, in any of Pillow's ways
        raise DataError(f"{f.name} in {where} cannot be read as a PNG or JPEG image ({err})") from None
    return _pixels(im, grey, size)


def _pixels(im: Image.Image, grey: bool, size: tuple[int, int]) -> np.ndarray:
    """A decoded image as uint8 (C, H, W) at `size` = (W, H): grey or RGB on white, scaled to cover, centre-cropped."""
    if im.mode.startswith("I"):  # 16-bit grey: Pillow's conversion to L would clip at 255 instead of scaling
        im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).astype(np.uint8))  # (H, W)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, WHITE), im.convert("RGBA"))
    im = im.convert("L" if grey else "RGB")
    im = im.resize(size, Image.Resampling.LANCZOS, box=_crop_box(im.size, size), reducing_gap=3.0)
    pixels = np.asarray(im)  # (H, W) grey or (H, W, 3) RGB
    return pixels[None] if grey else pixels.transpose(2, 0, 1)  # (C, H, W)


def _crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred region of an image of `size` (W, H) with the target's shape: scaled to `target`, it covers it."""
    (width, height), (tw, th) = size, target
    scale = max(tw / width, th / height)
    cw, ch = min(width, round(tw / scale)), min(height, round(th / scale))
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch
