"""Input complexity L(x) (vae_core/complexity.py): PNG lengths in nats, checked against Pillow directly."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from vae_core import complexity as Cx


def test_length_of_a_known_image_equals_pillows_png_in_nats():
    grey = np.zeros((1, 1, 8, 8), np.float32)
    grey[0, 0, 2:6, 3] = 1.0
    grey[0, 0, 0, 0] = 0.5  # round(127.5) = 128
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 3] = 255
    expected[0, 0] = 128
    buf = io.BytesIO()
    Image.fromarray(expected).save(buf, format="PNG", optimize=True, compress_level=9)
    assert Cx.compressed_nats(grey)[0] == pytest.approx(len(buf.getvalue()) * 8 * math.log(2))
    # the PNG is lossless: decoding it gives back the 8-bit image
    decoded = np.asarray(Image.open(io.BytesIO(Cx.png_bytes(Cx.quantise(grey)[0]))))
    assert decoded.shape == (8, 8) and np.array_equal(decoded, expected)


def test_colour_images_are_rgb_and_noise_costs_more_than_a_flat_image():
    rng = np.random.default_rng(0)
    colour = rng.random((2, 3, 16, 16)).astype(np.float32)
    colour[1] = 0.25
    assert Image.open(io.BytesIO(Cx.png_bytes(Cx.quantise(colour)[0]))).mode == "RGB"
    lengths = Cx.compressed_nats(colour)
    assert lengths[0] > 3 * lengths[1]  # 768 random bytes hardly compress; a flat image does
    seen = []
    Cx.compressed_nats(np.zeros((5, 1, 4, 4)), progress=seen.append, every=2)
    assert seen == [0.4, 0.8, 1.0]
