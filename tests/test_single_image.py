"""One drawn or uploaded image made into the model's input (vae_core/single_image.py), and its score."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_core import single_image as S
from vae_core.data import DataError
from vae_core.metrics import per_sample_scores


def png(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- the canvas

def test_a_white_stroke_on_the_canvas_becomes_bright_pixels_where_it_was():
    rgba = np.zeros((280, 280, 4), np.uint8)  # a transparent canvas …
    rgba[40:240, 130:150] = (255, 255, 255, 255)  # … with a white vertical stroke in the middle column band
    x = S.canvas_to_input(rgba, (1, 28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert np.allclose(x[0, 4:24, 13:15], 1.0)  # the stroke: 10 canvas pixels per image pixel
    assert x[0, :, :12].max() == 0 and x[0, :, 16:].max() == 0 and x[0, :3].max() == 0  # dark elsewhere


def test_the_canvas_is_averaged_down_and_composited_over_its_background():
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[:, :140] = (255, 255, 255, 255)  # the left half white
    rgba[0:35, 140:175] = (255, 255, 255, 128)  # a half-transparent white square in one 8×8 cell
    x = S.canvas_to_input(rgba, (1, 8, 8))
    assert np.allclose(x[0, :, :4], 1.0) and np.allclose(x[0, 1:, 5:], 0.0)
    assert x[0, 0, 4] == pytest.approx(128 / 255, abs=0.01)  # area average of a partly covered cell
    dark_pen = np.zeros((280, 280, 4), np.uint8)  # a transparent canvas drawn on white with a black pen
    dark_pen[100:180, 100:180] = (0, 0, 0, 255)
    y = S.canvas_to_input(dark_pen, (1, 8, 8), background=1.0)
    assert y[0, 0, 0] == 1.0 and y[0, 4, 4] == 0.0
    rgb = S.canvas_to_input(rgba, (3, 8, 8))  # a colour model gets three equal channels
    assert rgb.shape == (3, 8, 8) and np.allclose(rgb[0], rgb[2])


def test_a_blank_canvas_is_blank_and_a_bad_array_is_refused():
    assert S.is_blank(S.canvas_to_input(np.zeros((100, 100, 4), np.uint8), (1, 8, 8)))
    with pytest.raises(ValueError, match="RGBA"):
        S.canvas_to_input(np.zeros((100, 100), np.uint8), (1, 8, 8))


def test_the_canvas_has_the_models_aspect_and_a_pen_as_wide_as_its_strokes():
    assert S.canvas_size((1, 28, 28)) == (280, 280) and S.canvas_size((3, 32, 64)) == (560, 280)
    assert S.pen_width((1, 8, 8)) == 60 and S.pen_width((1, 28, 28)) == 21


# ---------------------------------------------------------------- polarity

def test_the_background_level_reads_dark_and_light_datasets(digits):
    x = digits.x_test.numpy()
    assert S.background_level(x) == 0.0 and S.dark_background(x)
    assert not S.dark_background(1 - x)
    shirt = np.zeros((1, 28, 28), np.float32)
    shirt[:, 2:, 1:-1] = 0.8  # an object touching three sides: the mean is high, the border median is not
    assert shirt.mean() > 0.5 and S.background_level(shirt) == 0.0


# ---------------------------------------------------------------- an uploaded file

def test_an_enlarged_png_of_a_test_image_reads_back_as_that_image(digits):
    img = (digits.x_test[5, 0].numpy() * 255).round().astype(np.uint8)  # (8, 8)
    big = np.asarray(Image.fromarray(img).resize((64, 64), Image.Resampling.NEAREST))
    p = S.read_image(png(big), "five.png", (1, 8, 8), background=0.0)
    assert p.x.shape == (1, 8, 8) and p.size == (64, 64) and not p.inverted
    assert np.abs(p.x - digits.x_test[5].numpy()).max() < 1 / 255 + 1e-6  # area averaging undoes the enlargement


def test_a_dark_on_light_upload_is_inverted_for_a_dark_dataset_unless_told_not_to(digits):
    img = 255 - (digits.x_test[5, 0].numpy() * 255).round().astype(np.uint8)  # black ink on white paper
    big = np.asarray(Image.fromarray(img).resize((80, 80), Image.Resampling.NEAREST))
    auto = S.read_image(png(big, "JPEG"), "ink.jpg", (1, 8, 8), background=0.0)
    assert auto.inverted and np.abs(auto.x - digits.x_test[5].numpy()).max() < 0.05  # JPEG loses a little
    kept = S.read_image(png(big), "ink.png", (1, 8, 8), background=0.0, invert=False)
    assert not kept.inverted and kept.x[0, 0, 0] == 1.0
    light = S.read_image(png(big), "ink.png", (1, 8, 8), background=1.0)  # a light dataset: as it is
    assert not light.inverted


def test_an_upload_is_centre_cropped_to_the_models_shape_and_made_grey_or_colour():
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, 40:80] = (255, 0, 0)  # a red centre square between black side bands
    grey = S.read_image(png(wide), "wide.png", (1, 4, 4))
    assert grey.size == (120, 40) and grey.x.shape == (1, 4, 4)
    assert np.allclose(grey.x, grey.x[0, 0, 0]) and 0.2 < grey.x[0, 0, 0] < 0.4  # only the red square is kept
    colour = S.read_image(png(wide), "wide.png", (3, 4, 4))
    assert colour.x.shape == (3, 4, 4) and np.allclose(colour.x[0], 1.0) and np.allclose(colour.x[1:], 0.0)
    small = S.read_image(png(np.full((2, 2), 200, np.uint8)), "tiny.png", (1, 8, 8), invert=False)
    assert small.x.shape == (1, 8, 8) and np.allclose(small.x, 200 / 255, atol=0.01)  # enlarged


def test_transparency_is_composited_on_white_and_16_bit_grey_is_scaled():
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent: white
    x = S.read_image(png(rgba), "clear.png", (1, 8, 8), invert=False).x
    assert np.allclose(x, 1.0)
    deep = np.full((16, 16), 65535, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, "PNG")
    assert np.allclose(S.read_image(buf.getvalue(), "deep.png", (1, 8, 8), invert=False).x, 1.0)


@pytest.mark.parametrize("raw, name, message", [
    (b"hello, not an image", "notes.txt", "notes.txt is not a PNG or JPEG image"),
    (png(np.zeros((4, 4), np.uint8), "GIF"), "anim.gif", "anim.gif is not a PNG or JPEG image"),
    (png(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))[:400], "cut.png",
     "cut.png cannot be read"),
], ids=["text", "gif", "truncated png"])
def test_what_is_not_a_readable_png_or_jpeg_is_one_data_error_naming_the_file(raw, name, message):
    with pytest.raises(DataError, match=message):
        S.read_image(raw, name, (1, 8, 8))


def test_a_huge_image_is_refused_from_its_header(monkeypatch):
    monkeypatch.setattr(S, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="at most 100 pixels"):
        S.read_image(png(np.zeros((20, 20), np.uint8)), "big.png", (1, 8, 8))


# ---------------------------------------------------------------- the score

def test_the_score_of_a_test_image_is_its_posterior_and_the_same_estimator(digits, trained_digits):
    x = digits.x_test[7].numpy()
    s = S.score(trained_digits, x)
    ref = per_sample_scores(trained_digits, digits.x_test[7:8])
    assert np.allclose(s["mu"], ref["mu"][0], atol=1e-5) and np.allclose(s["logvar"], ref["logvar"][0], atol=1e-5)
    assert s["neg_elbo"] == pytest.approx(float(ref["neg_elbo"][0]), abs=1e-4)  # one seeded sample, seed 0
    assert s["neg_elbo"] == pytest.approx(s["recon"] + s["kl"], abs=1e-3)
    assert s["recon_image"].shape == (1, 8, 8) and 0 <= s["recon_image"].min() <= s["recon_image"].max() <= 1
    with pytest.raises(ValueError, match="model takes"):
        S.score(trained_digits, np.zeros((1, 4, 4), np.float32))


def test_percentile_is_the_share_below():
    assert S.percentile(3.0, np.array([1.0, 2.0, 3.0, 4.0])) == 0.5
    assert S.percentile(0.0, np.array([1.0])) == 0.0 and np.isnan(S.percentile(1.0, np.array([])))


def test_a_conditional_model_needs_a_label(digits):
    from vae_core.config import ModelConfig
    from vae_core.model import VAE

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,), n_classes=10)).eval()
    with pytest.raises(ValueError, match="needs the image's label"):
        S.score(model, digits.x_test[0].numpy())
    assert S.score(model, digits.x_test[0].numpy(), 3)["mu"].shape == (2,)
