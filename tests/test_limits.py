"""Issue 21, exhaustion by small files: every crafted file is refused from its headers (a model's configuration, an
archive's directory and array headers, images' headers) before anything large is built, allocated or decoded; a page
decodes many codes in bounded batches. Each file is made here, small."""
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as st_save

from vae_core import checkpoint as C
from vae_core import config, decoding, image_folder, pixels
from vae_core.array_files import read_array_file
from vae_core.config import ConfigError, ModelConfig, activation_values, decode_batch, weight_count
from vae_core.model import VAE
from vae_core.pixels import DataError

UPLOAD_RSS_BOUND = 150 << 20  # peak memory of a refused upload's reading, Python and numpy included


def _unchecked(cfg: ModelConfig, **fields) -> ModelConfig:
    """`cfg` with `fields` set past the checks, as a crafted file's JSON may hold them."""
    for name, value in fields.items():
        object.__setattr__(cfg, name, value)
    return cfg


def _checkpoint_bytes(cfg: ModelConfig, tensors: dict | None = None) -> bytes:
    if tensors is None:
        with torch.device("meta"):
            shapes = VAE(cfg).state_dict()
        tensors = {k: torch.zeros(v.shape) for k, v in shapes.items()}
    meta = {"format_version": C.FORMAT_VERSION, "model_config": cfg.to_dict(), "dataset": {"name": "digits"}}
    return st_save(tensors, metadata={C.METADATA_KEY: json.dumps(meta)})


def test_a_checkpoint_past_the_data_sides_is_refused_before_a_lattice_is_decoded(tmp_path, monkeypatch):
    """Finding 1: 1.8 MB declaring a 1×1024×1024 conv model made the Overview decode 7 GB of lattice (40 s)."""
    cfg = _unchecked(ModelConfig(image_shape=(1, 8, 8), architecture="conv", channels=(1, 1)), image_shape=(1, 1024, 1024))
    path = tmp_path / "big.safetensors"
    path.write_bytes(_checkpoint_bytes(cfg))
    assert path.stat().st_size < 2 << 20
    monkeypatch.setattr(C, "VAE", lambda cfg: pytest.fail("a model was built"))
    with pytest.raises(C.CheckpointError, match=r"image_shape \(1, 1024, 1024\): the image height must be 1…256 .*"
                                                r"got 1024"):
        C.load(path)


def test_a_checkpoint_of_100000_layers_is_refused_before_any_layer_is_built(tmp_path, monkeypatch):
    """Finding 2: 300 KB of JSON with 100,000 one-unit hidden layers cost 42–51 s and 2 GB before its refusal."""
    cfg = _unchecked(ModelConfig(image_shape=(1, 8, 8)), hidden=(1,) * 100_000)
    path = tmp_path / "deep.safetensors"
    path.write_bytes(_checkpoint_bytes(cfg, {"w": torch.zeros(1)}))
    monkeypatch.setattr(C, "VAE", lambda cfg: pytest.fail("a model was built"))
    with pytest.raises(C.CheckpointError, match="hidden has 100,000 layers; at most 8 are supported"):
        C.load(path)


BASE = dict(image_shape=(4, 256, 256), architecture="conv", channels=(32, 64))
PAST_LIMITS = {  # each names the limit and what was asked
    "side": (dict(image_shape=(1, 257, 8)), r"image height must be 1…256 .*got 257"),
    "no side": (dict(image_shape=(1, 8, 0)), r"image width must be 1…256 .*got 0"),
    "channels": (dict(image_shape=(5, 8, 8)), r"image channels must be 1…4 .*got 5"),
    "hidden layers": (dict(hidden=(8,) * 9), "hidden has 9 layers; at most 8"),
    "conv layers": (dict(architecture="conv", channels=(2,) * 9), "channels has 9 layers; at most 8"),
    "width": (dict(hidden=(8193,)), r"layer width must be an integer in 1…8192, got 8193"),
    "weights": (dict(BASE, architecture="mlp", hidden=(512,)), r"would have 268,701,700 weights; the limit is "
                                                                 r"100,000,000"),
    "activations": (dict(BASE, channels=(1024, 1)), r"takes 261 MiB of activations; the limit is 128 MiB"),
    "PixelCNN": (dict(image_shape=(1, 256, 256), autoregressive=True, ar_channels=512), "the limit is"),
}


@pytest.mark.parametrize("kind", list(PAST_LIMITS))
def test_each_limit_says_what_it_is_and_what_was_asked(kind):
    fields, message = PAST_LIMITS[kind]
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


def test_the_largest_images_a_dataset_may_have_make_a_valid_model():
    cfg = ModelConfig(**BASE)
    assert cfg.image_shape == (pixels.MAX_CHANNELS, pixels.MAX_SIDE, pixels.MAX_SIDE)
    assert weight_count(cfg) == 1_904_776 and 4 * activation_values(cfg) <= config.MAX_ACTIVATION_BYTES


CONFIGS = [dict(), dict(hidden=(16, 8, 3), n_classes=3), dict(image_shape=(3, 5, 7), likelihood="gaussian"),
           dict(architecture="conv", channels=(4,)), dict(architecture="conv", channels=(4, 8, 3), image_shape=(3, 9, 6),
                                                         n_classes=2, likelihood="gaussian", gaussian_sigma=0.3),
           dict(architecture="linear", likelihood="gaussian", gaussian_sigma=0.5, latent_dim=3),
           dict(autoregressive=True, ar_channels=5, ar_layers=2, n_classes=4), dict(autoregressive=True, ar_layers=0)]


@pytest.mark.parametrize("fields", CONFIGS)
def test_weights_and_activations_are_counted_from_the_configuration(fields):
    """weight_count is the state dict's size exactly; activation_values bounds every layer's output for one image
    through encode and decode_mean (an autoregressive decoder: its teacher-forced pass), without being loose."""
    cfg = ModelConfig(**{"image_shape": (1, 8, 8), "hidden": (16,), **fields})
    model = VAE(cfg).eval()
    assert weight_count(cfg) == sum(v.numel() for v in model.state_dict().values())
    outputs = []
    for module in model.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda m, i, out: outputs.append(out.numel()))
    x = torch.rand(1, *cfg.image_shape)
    y = torch.zeros(1, dtype=torch.int64) if cfg.n_classes else None
    with torch.no_grad():
        mu, _ = model.encode(x, y)
        model.decode(mu, y, x) if cfg.autoregressive else model.decode_mean(mu, y)
    used = sum(outputs) + x.numel()
    assert used <= activation_values(cfg) <= 4 * used + 4 * cfg.n_pixels


def test_the_lattice_is_decoded_in_batches_within_the_budget(monkeypatch):
    """The Overview's and the Decoder grid's lattice: never more codes at once than `decode_batch`, whose
    activations stay within DECODE_BATCH_BYTES, and the same images as one batch."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), architecture="conv", channels=(8, 16))).eval()
    axis = decoding.lattice_axis(9)
    whole = decoding.decode_lattice(model, axis, axis)  # 81 codes: one batch
    monkeypatch.setattr(config, "DECODE_BATCH_BYTES", 10 * 4 * activation_values(model.config))
    assert decode_batch(model.config) == 10
    sizes = []
    decode_mean = model.decode_mean
    monkeypatch.setattr(model, "decode_mean", lambda z, y=None: sizes.append(len(z)) or decode_mean(z, y))
    batched = decoding.decode_lattice(model, axis, axis)
    assert sizes == [10] * 8 + [1]
    np.testing.assert_allclose(batched, whole, atol=1e-6)
    eight_bit = decoding.decode_lattice(model, axis, axis, dtype=np.uint8)
    assert eight_bit.dtype == np.uint8 and np.abs(eight_bit.astype(int) - np.rint(whole * 255)).max() <= 1


def _peak_rss_of(code: str, cap: int = 2 << 30) -> tuple[str, int]:
    """(output, peak RSS in bytes) of `code` run by a fresh Python whose address space is capped at `cap`: its own
    high-water mark (VmHWM; ru_maxrss would include the forking test process's)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak memory from /proc (Linux)")
    code = (f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))\n{code}\n"
            "print('PEAK', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert "PEAK" in out, out
    return out, int(out.rsplit("PEAK", 1)[1]) * 1024  # kB


def _zeros_npz(shape: tuple[int, ...], compress: bool = True) -> bytes:
    """An .npz whose `x` is zeros of `shape` (uint8), written in 1 MiB pieces (never held whole)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            left = int(np.prod(shape))
            while left:
                f.write(bytes(min(left, 1 << 20)))
                left -= min(left, 1 << 20)
    return buf.getvalue()


def test_a_small_npz_that_expands_1000_times_is_refused_from_its_directory(tmp_path):
    """Finding 3: a 1 MB .npz of zeros declaring (65535, 128, 128) cost 1.6–2 GB per upload. Here 256 MiB of zeros
    (250 KB) is refused before it is decompressed, its reading staying under UPLOAD_RSS_BOUND (today's main: the
    256 MiB array was read, and accepted)."""
    path = tmp_path / "zeros.npz"
    path.write_bytes(_zeros_npz((16384, 128, 128)))
    assert path.stat().st_size < 300_000
    out, peak = _peak_rss_of(f"from vae_core.array_files import read_array_file\ntry:\n"
                             f"    read_array_file({str(path)!r})\nexcept ValueError as e:\n    print(e)")
    assert "x.npy in the .npz file would expand 1,0" in out and "at most 100:1" in out, out
    assert peak < UPLOAD_RSS_BOUND, f"{peak / 2**20:.0f} MiB"


def test_an_npz_header_declaring_more_than_its_member_holds_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (1000, 64, 64)})
            f.write(bytes(100))
    with pytest.raises(DataError, match=r"array 'x' could not be read: its header declares \(1000, 64, 64\) of "
                                        r"float64 \(32,768,128 bytes\) but it holds 228 bytes"):
        read_array_file(buf.getvalue(), "lying.npz")


def test_an_uncompressed_npz_of_zeros_is_still_images():
    x = read_array_file(_zeros_npz((20, 16, 16), compress=False), "zeros.npz").x
    assert x.shape == (20, 1, 16, 16) and x.dtype == np.uint8 and not x.any()


def test_a_small_zip_of_huge_blank_images_is_refused_from_their_headers(tmp_path, monkeypatch):
    """Finding 4: blank 4096² PNGs (22 KB each, far less zipped) were decoded for minutes. One more than
    MAX_SOURCE_PIXELS allows is refused from the headers alone, naming the bound, with no image decoded."""
    png = io.BytesIO()
    Image.new("L", (4096, 4096), 255).save(png, "PNG")
    n = image_folder.MAX_SOURCE_PIXELS // 4096**2 + 1
    path = tmp_path / "blank.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(n):
            z.writestr(f"{i:04d}.png", png.getvalue())
    assert path.stat().st_size < 2 << 20
    monkeypatch.setattr(image_folder, "_decode", lambda *a: pytest.fail("an image was decoded"))
    with pytest.raises(DataError, match=f"hold {n * 4096**2:,} pixels in all; at most "
                                        f"{image_folder.MAX_SOURCE_PIXELS:,} are decoded"):
        image_folder.plan_images(path, workers=1)
