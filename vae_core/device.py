"""Pick where tensors live: CUDA, then Apple's MPS, then the CPU, unless the user says otherwise."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(prefer: str | None = "auto") -> torch.device:
    """`auto` takes the fastest device present; naming one that is missing is an error, not a silent CPU."""
    prefer = (prefer or "auto").lower()
    if prefer not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {prefer!r}")
    if prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no CUDA GPU is visible to PyTorch")
    if prefer == "mps" and not _mps_available():
        raise ValueError("MPS was asked for but this PyTorch has no usable Apple GPU")
    return torch.device(prefer)


def default_device() -> torch.device:
    """The device runs and the app use: `$VAE_DEVICE` (auto, cuda, mps or cpu), else the fastest one present.
    An unusable setting falls back to the CPU rather than failing every run."""
    try:
        return pick_device(os.environ.get("VAE_DEVICE", "auto"))
    except ValueError:
        return torch.device("cpu")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the count. For long chains of tiny operations (pixel by
    pixel generation, a fit on 64×64 matrices): with 2 threads on a busy 2-core CPU each operation waits whenever
    the other thread is descheduled (one −ELBO gradient of the pPCA fit took 33 ms instead of 1.3 ms; 50 PixelCNN
    images 6–36 s instead of 1.7 s). The count is process-wide, so other work in the process shares the limit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
