"""Writing files so that nothing is ever half-written: every file the library makes goes through `atomic_write`.

The bytes go to a hidden temporary file in the target's folder, are flushed and fsynced, and then either
replace the target in one rename (`overwrite=True`) or are hard-linked to it, which fails if the target
exists (`overwrite=False`: "create if absent", atomic even when several writers race for one name).
A reader therefore sees the old file or the new one, never a mixture, even if the writer is killed.
A killed writer leaves its temporary file behind; the names hold the writer's process id, so
`remove_stale_temporaries` can tell those of dead processes from files still being written.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

_TEMPORARY = re.compile(r"^\..*~(\d+)~[^/]*\.tmp$")  # .NAME~PID~random.tmp


def temporary(folder: str | os.PathLike, name: str) -> tuple[int, Path]:
    """A new hidden temporary file in `folder` for writing `name`: (open fd, path). Its name holds this process's
    id (`remove_stale_temporaries`)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}~{os.getpid()}~", suffix=".tmp", dir=folder)
    return fd, Path(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files in `folder` whose writer process is gone (killed during a save). How many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_file() and not process_alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (this process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of `data` (bytes or a contiguous array) at `offset` of the open file `fd`."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def atomic_write(path: str | os.PathLike, data: bytes, *, overwrite: bool = True, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically. Without `overwrite`, raise FileExistsError if `path` exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary(path.parent, path.name)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; these files are meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # raises FileExistsError when the name is taken
            os.unlink(tmp)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | os.PathLike, obj, *, overwrite: bool = True) -> Path:
    """`obj` as indented JSON (no NaN: strict JSON), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=1, allow_nan=False).encode(), overwrite=overwrite)
