"""The stored first pictures (vae_core/previews.py) and the torch-free first paint (vae_core/ui/first_paint.py)."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_core import locations, previews
from vae_core.ui import first_paint

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(locations.CHECKPOINT_DIR.glob("*.safetensors"))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def small_preview(digest: str = "0" * 64) -> previews.Preview:
    png = io.BytesIO()
    Image.new("RGB", (4, 3), "white").save(png, "PNG")
    return previews.Preview(png.getvalue(), png.getvalue(), digest, previews.Facts(2, 0, ["a", "b"], 7))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_model_has_a_current_preview_drawn_as_the_pages_draw_it(path):
    """The stored pictures are the ones the app draws from this checkpoint now (so the Overview replaces its preview
    with the same picture): same facts, and the same pixels up to rounding (another BLAS may move a point by one
    pixel)."""
    stored = previews.current(path)
    assert stored is not None, f"{previews.path_for(path).name} is missing or stale: run `python -m vae_core previews`"
    fresh = previews.build(path)
    assert stored.facts == fresh.facts
    for old, new in [(stored.overview_png, fresh.overview_png), (stored.latent_png, fresh.latent_png)]:
        a, b = pixels(old), pixels(new)
        assert a.shape == b.shape
        assert np.mean(np.any(a != b, axis=-1)) < 1e-3


def test_a_preview_round_trips_and_one_for_another_checkpoint_is_ignored(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"weights")
    previews.write(previews.path_for(ckpt), small_preview(previews.file_sha256(ckpt)))
    assert previews.current(ckpt) == small_preview(previews.file_sha256(ckpt))
    ckpt.write_bytes(b"other weights")  # retrained: the stored pictures no longer show this model
    assert previews.current(ckpt) is None


@pytest.mark.parametrize("content", [b"", b"not a safetensors file", b"\xff" * 64])
def test_a_damaged_preview_is_no_preview(tmp_path, content):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"weights")
    previews.path_for(ckpt).write_bytes(content)
    assert previews.current(ckpt) is None
    assert previews.current(tmp_path / "absent.safetensors") is None


def test_the_default_model_follows_the_data_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(locations, "CHECKPOINT_DIR", tmp_path)
    assert first_paint.default_shipped() is None
    shutil.copy(ROOT / "checkpoints" / "digits-2d.safetensors", tmp_path)
    assert first_paint.default_shipped() == "digits-2d"
    (tmp_path / "fashion-mnist-2d.safetensors").write_bytes(b"x")
    expected = "fashion-mnist-2d" if locations.available_builtin()["fashion-mnist"] else "digits-2d"
    assert first_paint.default_shipped() == expected


def test_the_first_paint_needs_no_torch():
    """What the shell and a page's first lines run on a fresh server, in a clean interpreter: torch stays unloaded
    (it is what the background preload is still importing meanwhile)."""
    code = ("import sys; from vae_core.ui import first_paint; from vae_core import locations, previews; "
            "name = first_paint.default_shipped(); "
            "p = previews.current(locations.CHECKPOINT_DIR / f'{name}.safetensors'); "
            "first_paint.overview_caption(name, p.facts.latent_dim, p.facts.n_classes, p.facts.class_names, p.facts.n_test); "
            "print(p is not None, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr
