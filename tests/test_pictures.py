import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_core import pictures
from vae_core.config import ModelConfig
from vae_core.decoding import overview
from vae_core.model import VAE


def rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]


def test_png_bytes_and_pairs_picture():
    png = pictures.png_bytes(np.random.default_rng(0).random((8, 8)), scale=3)
    assert Image.open(io.BytesIO(png)).size == (24, 24)
    already = np.zeros((5, 7, 3), np.uint8)
    assert Image.open(io.BytesIO(pictures.png_bytes(already))).size == (7, 5)
    x = np.zeros((5, 1, 4, 4))
    pic = pictures.pairs_picture(x, x + 1, per_row=3)
    assert pic.shape == (4, 3, 1, 4, 4) and pic[1, 0].min() == 1


def test_scatter_panel_puts_each_point_where_its_coordinates_say_in_its_class_colour():
    pts = np.array([[1.0, 1.0], [-1.5, -0.5], [5.0, 0.0]])  # the last one is outside the square
    panel = np.asarray(pictures.scatter_panel(pts, np.array([3, 7, 1]), limit=2.0, size=100, prior_rings=False))
    assert panel[25, 75].tolist() == rgb(pictures.PALETTE[3])  # x = 1 → column 75; y = 1 → row 25 (y up)
    assert panel[62, 12].tolist() == rgb(pictures.PALETTE[7])  # x = −1.5 → 12; y = −0.5 → 62
    orange = (panel == rgb(pictures.PALETTE[1])).all(-1)
    assert not orange.any()
    assert panel[0, 0].tolist() == [255, 255, 255]


def test_square_limit_and_cell_centres():
    assert pictures.square_limit(np.array([[2.3, -0.1], [-1.0, 0.5]]), quantile=1.0) == 3
    assert pictures.square_limit(np.zeros((4, 2))) == 2  # never below 2
    assert pictures.square_limit(np.full((4, 2), 50.0)) == 8  # nor above 8
    assert pictures.square_limit(np.array([[np.nan, np.nan]])) == 3 == pictures.square_limit(np.zeros((0, 2)))
    assert np.allclose(pictures.cell_centres(2.0, 4), [-1.5, -0.5, 0.5, 1.5])


def test_overview_figure_keeps_the_decoded_rows_top_down_and_adds_a_legend():
    decoded = np.zeros((4, 4, 1, 5, 5))
    decoded[0] = 1.0  # the top row of cells is white
    pic = pictures.overview_figure(np.zeros((3, 2)), np.array([0, 1, 2]), ["a", "b", "c"], decoded, 2.0,
                                   left_title="L", right_title="R", size=80)
    assert pic.dtype == np.uint8 and pic.shape[2] == 3
    left_width = 44 + 80 + 12
    right = pic[28:28 + 80, left_width + 24 + 44:left_width + 24 + 44 + 80]  # the decoded square
    assert right[:15].mean() > 240  # the top row of cells, white
    assert right[70, 10].max() < 15  # the middle of the bottom-left cell, black
    no_legend = pictures.overview_figure(np.zeros((3, 2)), None, None, decoded, 2.0, left_title="L",
                                         right_title="R", size=80)
    assert no_legend.shape[0] < pic.shape[0]


@pytest.mark.parametrize("latent_dim,n_classes", [(2, 0), (3, 0), (1, 0), (2, 3)])
def test_overview_of_any_model_is_one_rgb_picture(latent_dim, n_classes):
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=latent_dim, hidden=(16,), n_classes=n_classes))
    mu = np.random.default_rng(0).normal(size=(50, latent_dim))
    labels = np.arange(50) % 3
    pic = overview(model, mu, labels, ["x", "y", "z"])
    assert pic.ndim == 3 and pic.shape[2] == 3 and pic.shape[1] > 2 * 400


def test_overview_decodes_the_cell_centres_of_the_square(monkeypatch):
    """The right panel of a 2-D model is the decoder at the centres of the cells of the left panel's square."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(16,)))
    seen = {}

    def fake_figure(xy, classes, class_names, decoded, limit, **kwargs):
        seen.update(decoded=decoded, limit=limit)
        return np.zeros((1, 1, 3), np.uint8)

    monkeypatch.setattr(pictures, "overview_figure", fake_figure)
    mu = np.random.default_rng(0).normal(size=(200, 2))
    overview(model, mu)
    axis = pictures.cell_centres(seen["limit"], 16)
    z = torch.tensor([[axis[0], axis[-1]]], dtype=torch.float32)  # the top-left cell: smallest x, largest y
    expected = model.decode_mean(z).detach().numpy()[0]
    assert np.array_equal(seen["decoded"][0, 0], pictures.to_uint8(expected))  # as 8-bit pixels: bounded memory
