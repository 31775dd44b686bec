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
and all images' pixels together (their headers), and the final array against the memory available
(`pixels.check_array_shape`) are checked; while reading, a member that yields more than its header says is
refused. Every failure is one `DataError` naming the file at fault.

Scale. `plan_images` reads the file list and the headers; `decode` then decodes the images block by block — in
worker processes for a folder or zip on disk of PARALLEL_MIN images or more — into whatever the caller writes them
to (an array in memory, or a stored dataset's file, `store.Workspace.register`), so 200,000 JPEGs never need more
than the output plus a few blocks in memory.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .array_files import check_expansion, open_source
from .files import pwrite_all
from .pixels import MAX_CLASSES, MAX_IMAGES, MAX_SIDE, ArrayData, DataError, check_array_shape, check_image_count
from .spawn import process_pool

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")  # the only decoders Pillow may use on these files
JUNK_NAMES = ("__macosx", "thumbs.db", "desktop.ini")  # skipped, as are names starting with a dot
DEFAULT_MAX_SIDE = 64  # the default size's longer side, in pixels
MAX_FILES = MAX_IMAGES + MAX_IMAGES // 4  # files in a folder, members in a zip (junk files included)
MAX_FILE_BYTES = 128 << 20  # one image file, uncompressed
MAX_TOTAL_BYTES = 64 << 30  # all image files together, uncompressed (read one at a time, never all at once)
MAX_SOURCE_PIXELS = 1 << 34  # width × height summed over all images, from their headers: bounds the decoding time
MAX_IMAGE_PIXELS = 4096 * 4096  # width × height of one image, read from its header before decoding
WHITE = (255, 255, 255, 255)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
BLOCK = 256  # images decoded by one worker before its block is written out
PARALLEL_MIN = 2000  # images from which worker processes read them (their start-up, ~1 s, then pays)
Progress = Callable[[float, str], None]  # (fraction, what is happening); it may raise to cancel


@dataclass(frozen=True)
class _File:
    """One file of the folder or zip: its name in messages, its path parts, its (uncompressed) size, an opener, and
    what a worker process opens it by (a folder's relative path, a zip member's index)."""

    name: str
    parts: tuple[str, ...]
    size: int
    open: Callable[[], BinaryIO]
    key: str | int = ""


@dataclass(frozen=True)
class FileRows:
    """Rows of a file being written (a stored dataset's pixels): row r, `row_bytes` long, at offset + r·row_bytes,
    written by position, so that any process can write any block."""

    path: str
    offset: int
    row_bytes: int

    def write(self, start: int, block: np.ndarray) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            pwrite_all(fd, np.ascontiguousarray(block), self.offset + start * self.row_bytes)
        finally:
            os.close(fd)


@dataclass
class ImagePlan:
    """What a folder or zip of images will become, known from the file list and the image headers before any pixel
    is decoded: the files (sorted), their labels and class names, grey or colour, and the target size. Holds the
    zip and the worker processes open until `close` (a context manager)."""

    files: list[_File]
    where: str
    y: np.ndarray | None
    class_names: tuple[str, ...] | None
    grey: bool
    size: tuple[int, int]  # (W, H) of every image
    source: tuple[str, str] | None = None  # ("zip" | "folder", path): what worker processes open themselves
    pool: ProcessPoolExecutor | None = None
    workers: int = 1  # processes in the pool
    _closing: list = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) of the decoded images."""
        width, height = self.size
        return len(self.files), 1 if self.grey else 3, height, width

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        for closer in self._closing:
            closer()
        self._closing.clear()

    def __enter__(self) -> "ImagePlan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_image_set(source, filename: str | None = None) -> bool:
    """Whether `source` (a path, or bytes named `filename`) is a folder or a .zip of images."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return True
    name = filename or (source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "")) or ""
    return Path(str(name)).suffix.lower() == ".zip"


def plan_images(source, filename: str | None = None, *, image_size: int | None = None,
                progress: Progress | None = None, workers: int | None = None) -> ImagePlan:
    """The plan of a folder (a path) or a .zip (a path, bytes or a binary file; `filename` names it). A folder or a
    zip given as a path of at least PARALLEL_MIN images is read by `workers` processes (default: one per core):
    the headers now, the pixels in `decode`."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files, where = _folder_files(source)
        return _plan(files, where, image_size, progress, ("folder", os.fspath(source)), workers)
    files, where, archive = _zip_files(source, filename)
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    try:
        plan = _plan(files, where, image_size, progress, None if path is None else ("zip", path), workers)
    except BaseException:
        archive.close()
        raise
    plan._closing.append(archive.close)
    return plan


def read_image_folder(path: str | os.PathLike, *, image_size: int | None = None) -> ArrayData:
    """The PNG/JPEG images under the folder `path`, all in memory (layout, colour and size rules: the module's
    docstring)."""
    with plan_images(path, image_size=image_size) as plan:
        return _read_all(plan)


def read_image_zip(source: str | os.PathLike | bytes | BinaryIO, name: str | None = None, *,
                   image_size: int | None = None) -> ArrayData:
    """The PNG/JPEG images in a .zip given as a path, bytes or a binary file object, all in memory (layout, colour
    and size rules: the module's docstring). The zip is checked from its directory before a member is read."""
    with plan_images(source, name or getattr(source, "name", None) or "the zip", image_size=image_size) as plan:
        return _read_all(plan)


def _read_all(plan: ImagePlan) -> ArrayData:
    x = np.empty(plan.shape, dtype=np.uint8)  # (N, C, H, W)
    decode(plan, x)
    return ArrayData(x=x, y=plan.y, class_names=plan.class_names, names=plan.names)


def decode(plan: ImagePlan, out: np.ndarray | FileRows, order: np.ndarray | None = None, *,
           progress: Progress | None = None) -> None:
    """Decode every image of `plan` into `out` — an array (N, C, H, W) uint8 in memory, or the rows of a file —
    where output row r is the image `files[order[r]]` (default: the files' own order). The plan's worker processes
    decode blocks of BLOCK images in parallel (Pillow's decoders hold the GIL for much of their work, so threads
    would take turns) and write them to a file themselves; at most two blocks per worker are under way, so memory
    stays bounded whatever the number of images. `progress(fraction, message)` is called as blocks finish, in
    the calling thread; an exception it raises (a cancellation) stops the work: no block starts after it, and the
    running ones end before it propagates."""
    n = len(plan.files)
    order = np.arange(n) if order is None else np.asarray(order)
    _, c, h, w = plan.shape
    starts = iter(range(0, n, BLOCK))
    done = 0

    def finished(start: int, block: np.ndarray | int) -> None:
        nonlocal done
        if isinstance(block, np.ndarray):
            _put(out, start, block)
            block = len(block)
        done += block
        if progress:
            progress(done / n, f"decoded {done:,} of {n:,} images")

    if plan.pool is None:
        for start in starts:
            rows = order[start:start + BLOCK]
            finished(start, _decode_block([plan.files[int(r)] for r in rows], plan.where, plan.grey, plan.size, c))
        return
    target = out if isinstance(out, FileRows) else None

    def submit(start: int):
        keys = [plan.files[int(r)].key for r in order[start:start + BLOCK]]
        return plan.pool.submit(_decode_task, plan.source, keys, plan.where, plan.grey, plan.size, c, target, start)

    running = {submit(s): s for s in _take(starts, 2 * plan.workers)}
    try:
        while running:
            ready, _ = wait(running, return_when=FIRST_EXCEPTION)
            for future in ready:
                finished(running.pop(future), future.result())  # a bad image's DataError surfaces here
                running.update({submit(s): s for s in _take(starts, 1)})
    except BaseException:
        for future in running:
            future.cancel()
        wait(running)  # the blocks already being decoded finish before the caller cleans up
        raise


def _put(out: np.ndarray | FileRows, start: int, block: np.ndarray) -> None:
    if isinstance(out, FileRows):
        out.write(start, block)
    else:
        out[start:start + len(block)] = block


def _decode_block(files: list[_File], where: str, grey: bool, size: tuple[int, int], channels: int) -> np.ndarray:
    block = np.empty((len(files), channels, size[1], size[0]), dtype=np.uint8)  # (B, C, H, W)
    for i, f in enumerate(files):
        block[i] = _decode(f, where, grey, size)
    return block


# ---------------------------------------------------------------- in a worker process

_OPENED: dict[str, zipfile.ZipFile] = {}  # the zips this worker process has open


def _worker_files(source: tuple[str, str], keys: list) -> list[_File]:
    """The files `keys` name, opened by this worker itself (a folder's relative paths, a zip's member indices)."""
    kind, path = source
    if kind == "folder":
        return [_File(str(k), (), os.stat(Path(path, k)).st_size, partial(open, Path(path, k), "rb"), k) for k in keys]
    archive = _OPENED.get(path)
    if archive is None:
        archive = _OPENED[path] = zipfile.ZipFile(path)
    infos = archive.infolist()
    return [_File(infos[k].filename, (), infos[k].file_size, partial(archive.open, infos[k]), k) for k in keys]


def _headers_task(source: tuple[str, str], keys: list, *, where: str) -> list[tuple[int, int, bool]]:
    return [_header(f, where) for f in _worker_files(source, keys)]


def _decode_task(source, keys, where, grey, size, channels, target: FileRows | None, start: int):
    block = _decode_block(_worker_files(source, keys), where, grey, size, channels)
    if target is None:
        return block
    target.write(start, block)
    return len(block)


def _take(iterator, k: int) -> list:
    return [v for _, v in zip(range(k), iterator)]


def _folder_files(path: str | os.PathLike) -> tuple[list[_File], str]:
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
            files.append(_File(rel.as_posix(), rel.parts, file_path.stat().st_size, partial(open, file_path, "rb"),
                               rel.as_posix()))
    return files, where


def _zip_files(source, name: str | None) -> tuple[list[_File], str, zipfile.ZipFile]:
    """The zip's image members, checked from its directory (no member read yet), and the open archive."""
    stream, source_name, size = open_source(source)
    where = Path(str(name or source_name)).name or "the zip"
    if size == 0:
        stream.close()
        raise DataError(f"{where} is empty")
    try:
        archive = zipfile.ZipFile(stream)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        stream.close()
        raise DataError(f"{where} is not a valid zip file") from None
    try:
        return _zip_members(archive, infos, where), where, archive
    except BaseException:
        archive.close()
        raise


def _zip_members(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], where: str) -> list[_File]:
    if len(infos) > MAX_FILES:
        raise DataError(f"{where} has {len(infos):,} entries; at most {MAX_FILES:,} are accepted")
    files = []
    for index, info in enumerate(infos):
        parts = tuple(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))
        if info.filename.startswith(("/", "\\")) or ".." in parts:
            raise DataError(f"{where} has an entry named {info.filename!r} that points outside the zip; "
                            "make the zip again from the folder")
        if info.is_dir() or not parts or any(_is_junk(p) for p in parts):
            continue
        if info.flag_bits & 0x1:
            raise DataError(f"{where} is password-protected ({info.filename}); zip the images without a password")
        check_expansion(info, where)
        files.append(_File(info.filename, parts, info.file_size, partial(archive.open, info), index))
    return files


def _is_junk(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_NAMES


def _plan(files: list[_File], where: str, image_size: int | None, progress: Progress | None,
          source: tuple[str, str] | None, workers: int | None) -> ImagePlan:
    """Check the files, find the classes, choose C and the size from the headers (nothing decoded)."""
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
                        f"{MAX_TOTAL_BYTES >> 20:,} MiB")
    check_image_count(where, len(files))
    if len(files) > MAX_IMAGES:
        raise DataError(f"{where} holds {len(files):,} images; the limit is {MAX_IMAGES:,}")
    y, class_names = _labels(files, where)
    workers = workers or os.cpu_count() or 1
    pool = None
    if source is not None and workers > 1 and len(files) >= PARALLEL_MIN:
        pool = process_pool(workers)
    try:
        plan = _check_headers(files, where, y, class_names, image_size, progress, source, pool)
        plan.workers = workers if pool is not None else 1
        return plan
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise


def _check_headers(files, where, y, class_names, image_size, progress, source, pool) -> ImagePlan:
    """Every image's (width, height, grey) from its header — in the worker processes when there are some — then
    the checks that need them all, and the plan."""
    headers = []  # (width, height, grey) each, nothing decoded
    chunks = [files[i:i + 2000] for i in range(0, len(files), 2000)]  # progress after each
    if pool is None:
        parts = ([_header(f, where) for f in chunk] for chunk in chunks)
    else:
        parts = pool.map(partial(_headers_task, source, where=where), [[f.key for f in chunk] for chunk in chunks])
    for part in parts:
        headers += part
        if progress:
            progress(len(headers) / len(files), f"read {len(headers):,} of {len(files):,} image headers")
    source_pixels = sum(w * h for w, h, _ in headers)
    if source_pixels > MAX_SOURCE_PIXELS:
        raise DataError(f"the images in {where} hold {source_pixels:,} pixels in all; at most {MAX_SOURCE_PIXELS:,} "
                        "are decoded (scale them down first)")
    grey = [f for f, (_, _, g) in zip(files, headers) if g]
    colour = [f for f, (_, _, g) in zip(files, headers) if not g]
    if grey and colour:
        raise DataError(f"{where} mixes grey and colour images (grey: {grey[0].name}, colour: {colour[0].name}); "
                        "convert them all to one kind")
    size = _target_size([(w, h) for w, h, _ in headers], image_size)
    plan = ImagePlan(files, where, y, class_names, bool(grey), size, source, pool)
    check_array_shape(*plan.shape)
    return plan


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
