"""Generation from z alone with the PixelCNN decoder (van den Oord et al. 2016; PixelVAE, Gulrajani et al. 2017):
pixel by pixel, each given only z and the pixels generated before it, never the input image (teacher forcing)."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from vae_core import decoding
from vae_core.config import ModelConfig
from vae_core.locations import available_builtin
from vae_core.model import VAE
from vae_core.ui import cache

ROOT = Path(__file__).resolve().parent.parent

SHAPE = (1, 9, 11)  # larger than the decoder's reach (5) on both axes: the cut windows are exercised


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VAE(ModelConfig(image_shape=SHAPE, latent_dim=3, hidden=(8,), autoregressive=True, ar_channels=4,
                           ar_layers=2)).eval()


@torch.no_grad()
def whole_image_loop(model, z, draw: bool, generator=None):
    """The straightforward reference: one pass of the decoder over the whole image per pixel."""
    c, h, w = model.config.image_shape
    x = torch.zeros(len(z), c, h, w)  # (B, C, H, W)
    for i in range(h):
        for j in range(w):
            p = torch.sigmoid(model.decoder(z, x)[:, :, i, j])  # (B, C)
            x[:, :, i, j] = torch.bernoulli(p, generator=generator) if draw else p
    return x


def test_pixel_logit_is_the_whole_pass_at_that_pixel_and_ignores_later_pixels(model):
    torch.manual_seed(1)
    z, x = torch.randn(2, 3), torch.rand(2, *SHAPE)
    full = model.decoder(z, x)  # (2, 1, H, W)
    cond = model.decoder.condition(z)
    _, h, w = SHAPE
    for i in range(h):
        for j in range(w):
            logit = model.decoder.pixel_logit(cond, x, i, j)  # (2, 1)
            assert torch.allclose(logit, full[:, :, i, j], atol=1e-6), (i, j)
            later = x.clone().flatten(2)
            later[:, :, i * w + j:] = torch.rand_like(later[:, :, i * w + j:])  # pixel (i, j) and after
            assert torch.allclose(model.decoder.pixel_logit(cond, later.view_as(x), i, j), logit, atol=1e-6)


def test_generation_equals_the_whole_image_loop(model):
    z = torch.randn(5, 3)
    drawn = model.generate(z, draw=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, whole_image_loop(model, z, True, torch.Generator().manual_seed(3)))
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(model.generate(z, draw=False), whole_image_loop(model, z, False), atol=1e-6)


def test_one_batched_call_equals_one_code_at_a_time(model):
    z = torch.randn(4, 3)
    batched = model.generate(z, draw=False)
    assert torch.allclose(batched, torch.cat([model.generate(z[k:k + 1], draw=False) for k in range(4)]), atol=1e-6)


def test_mean_fed_forward_is_deterministic_and_grey(model):
    z = torch.randn(4, 3)
    a = model.generate(z, draw=False, generator=torch.Generator().manual_seed(0))
    b = model.generate(z, draw=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a, model.decode_mean(z))
    assert ((a > 0) & (a < 1)).all()  # probabilities, not draws


def test_generation_never_sees_the_input_but_teacher_forcing_does(model):
    """An encoder that ignores x (a collapsed code): whatever the input, generating from z gives the same images,
    while the teacher-forced reconstruction follows each input's own pixels."""
    with torch.no_grad():
        model.encoder.head.weight.zero_()  # μ(x) = the bias, for every x
    x = torch.rand(2, *SHAPE)
    mu, _ = model.encode(x)
    assert torch.equal(mu[0], mu[1])
    first = model.generate(mu[:1], draw=True, generator=torch.Generator().manual_seed(5))
    second = model.generate(mu[1:], draw=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert torch.equal(model.generate(mu, draw=False)[0], model.generate(mu, draw=False)[1])
    teacher_forced = model.reconstruct(x)
    assert not torch.allclose(teacher_forced[0], teacher_forced[1])


def test_generate_needs_an_autoregressive_decoder():
    plain = VAE(ModelConfig(image_shape=SHAPE, latent_dim=3, hidden=(8,)))
    with pytest.raises(ValueError, match="autoregressive"):
        plain.generate(torch.zeros(1, 3))


def test_one_per_class_takes_the_first_image_of_each_class_in_class_order():
    y = np.array([2, 0, 2, 1, 0, 1, 3])
    idx = decoding.one_per_class(y, len(y))
    assert idx.tolist() == [1, 3, 0, 6] and y[idx].tolist() == [0, 1, 2, 3]
    assert decoding.one_per_class(y, len(y), limit=2).tolist() == [1, 3]
    assert decoding.one_per_class(None, 30).tolist() == list(range(10))
    assert decoding.one_per_class(None, 4).tolist() == [0, 1, 2, 3]


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size  # (width, height)


def _tile(png: bytes, row: int, col: int) -> np.ndarray:
    """The image at (row, col) of a `pictures.tile` picture of SHAPE images (1-pixel seams), (H, W) uint8."""
    _, h, w = SHAPE
    return np.asarray(Image.open(io.BytesIO(png)))[row * (h + 1): row * (h + 1) + h, col * (w + 1): col * (w + 1) + w]


def test_run_pictures_of_an_autoregressive_run(model):
    y = torch.tensor([1, 0, 1, 2, 0])
    x = torch.rand(len(y), *SHAPE)
    pics = cache.run_pictures("ar-test", 0, model, x, y, draws=2)
    _, h, w = SHAPE
    width = 3 * (w + 1) - 1  # one column per class
    assert set(pics) == {"recon", "teacher_forced", "samples"}
    assert _size(pics["recon"]) == (width, 4 * (h + 1) - 1)  # inputs, from μ(x), from 2 draws z ~ q(z|x)
    assert _size(pics["teacher_forced"]) == _size(pics["samples"]) == (width, h)
    expected = (x[[1, 0, 3], 0].numpy() * 255 + 0.5).astype(np.uint8)  # classes 0, 1, 2
    assert all((_tile(pics["recon"], 0, k) == expected[k]).all() for k in range(3))


def test_run_pictures_of_a_plain_run():
    plain = VAE(ModelConfig(image_shape=SHAPE, latent_dim=3, hidden=(8,))).eval()
    pics = cache.run_pictures("plain-test", 0, plain, torch.rand(12, *SHAPE))  # unlabelled: the first 10
    _, h, w = SHAPE
    assert set(pics) == {"recon", "samples"}
    assert _size(pics["recon"]) == (10 * (w + 1) - 1, 2 * (h + 1) - 1)


def test_run_pictures_generate_from_z_alone(model):
    """With an encoder that ignores x, the row generated at z = μ(x) is one image repeated, whatever the inputs;
    the teacher-forced row is not (it copies each input's pixels)."""
    with torch.no_grad():
        model.encoder.head.weight.zero_()
    x = torch.rand(3, *SHAPE)
    pics = cache.run_pictures("ar-collapsed-test", 0, model, x, torch.tensor([0, 1, 2]))
    from_mu = [_tile(pics["recon"], 1, k) for k in range(3)]
    assert (from_mu[0] == from_mu[1]).all() and (from_mu[0] == from_mu[2]).all()
    assert not (_tile(pics["teacher_forced"], 0, 0) == _tile(pics["teacher_forced"], 0, 1)).all()


@pytest.mark.skipif(not available_builtin()["fashion-mnist"], reason="Fashion-MNIST is not on this machine")
def test_the_lab_labels_each_row_of_the_shipped_pixelcnn_sweep():
    at = AppTest.from_file(str(ROOT / "app_pages" / "5_Collapse_lab.py"), default_timeout=300)
    at.session_state["lab_sweep"] = str(ROOT / "checkpoints" / "sweeps" / "fashion-pixelcnn-d16")
    at.session_state["lab_section"] = "pictures"  # the side-by-side section
    at.run()
    assert not at.exception
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert len(captions) == 3 * 2  # two runs
    assert captions[0].startswith("inputs (top row); generated from z alone")
    assert captions[1:3] == ["teacher-forced (the decoder sees the input's earlier pixels)",
                             "prior samples (conditional mean fed forward)"]
