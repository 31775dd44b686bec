import numpy as np
import pytest
import torch
from scipy.stats import norm

from vae_core import decoding as D
from vae_core.config import ModelConfig
from vae_core import plots
from vae_core.decoding import decode_lattice, lattice_axis, lattice_value
from vae_core.pictures import tile
from vae_core.model import VAE


def test_quantile_axis_has_equal_prior_mass_per_step():
    axis = lattice_axis(7, "quantile", coverage=0.9)
    assert np.allclose(norm.cdf(axis), np.linspace(0.05, 0.95, 7))
    assert np.allclose(axis, -axis[::-1])


def test_linear_axis_and_bad_spacing():
    assert np.allclose(lattice_axis(5, "linear", span=2), [-2, -1, 0, 1, 2])
    with pytest.raises(ValueError):
        lattice_axis(5, "log")


def test_decode_lattice_puts_each_code_in_its_cell():
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 4, 4), latent_dim=3, hidden=(8,)))
    ax, ay = np.array([-1.0, 0.0, 1.0]), np.array([-2.0, 2.0])
    ref = np.array([0.5, 0.5, 0.5])
    grid = decode_lattice(model, ax, ay, dims=(2, 0), reference=ref)
    assert grid.shape == (2, 3, 1, 4, 4)
    # top-left cell is (x = −1, y = +2) since row 0 is the largest y
    expected = model.decode_mean(torch.tensor([[2.0, 0.5, -1.0]])).detach().numpy()[0]
    assert np.allclose(grid[0, 0], expected, atol=1e-6)


def test_tile_layout():
    imgs = np.zeros((2, 3, 1, 4, 4), dtype=np.float32)
    imgs[1, 2] = 0.5
    pic = tile(imgs, pad=1)
    assert pic.shape == (2 * 5 - 1, 3 * 5 - 1)
    assert np.all(pic[5:9, 10:14] == 0.5) and np.all(pic[4, :] == 1.0)


def test_slerp_endpoints_and_norm():
    a, b = np.array([3.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    path = D.slerp(a, b, np.linspace(0, 1, 11))
    assert np.allclose(path[0], a) and np.allclose(path[-1], b)
    norms = np.linalg.norm(path, axis=1)
    assert np.allclose(norms, np.linspace(3, 2, 11))  # the norm moves linearly, never dips to the centre
    lin = D.lerp(a, b, np.linspace(0, 1, 11))
    assert np.linalg.norm(lin, axis=1).min() < norms.min()


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = np.array([1.0, 1.0])
    assert np.allclose(D.slerp(a, 2 * a, np.array([0.5])), [[1.5, 1.5]])
    assert np.allclose(D.slerp(np.zeros(2), a, np.array([0.5])), [[0.5, 0.5]])


def test_interpolate_validates():
    with pytest.raises(ValueError):
        D.interpolate(np.zeros(2), np.ones(2), 1)
    with pytest.raises(ValueError):
        D.interpolate(np.zeros(2), np.ones(2), 5, "cubic")
    assert D.interpolate(np.zeros(2), np.ones(2), 5, "spherical").shape == (5, 2)


def test_density_integrates_to_about_one():
    pts = np.random.default_rng(0).normal(size=(500, 2))
    g = np.linspace(-5, 5, 101)
    dens = D.density_2d(pts, g, g)
    assert dens.shape == (101, 101)
    assert abs(dens.sum() * (g[1] - g[0]) ** 2 - 1) < 0.02


@pytest.mark.parametrize("spacing", ["quantile", "linear"])
def test_lattice_value_meets_the_axis_at_cell_centres_and_follows_the_spacing_between(spacing):
    n = 7
    axis = lattice_axis(n, spacing, 2.5, 0.9)
    assert np.allclose(lattice_value(np.arange(n), n, spacing, 2.5, 0.9), axis)
    between = lattice_value(np.array([2.5]), n, spacing, 2.5, 0.9)[0]
    assert axis[2] < between < axis[3]
    if spacing == "quantile":  # halfway in prior mass, not in z
        p = [float(torch.special.ndtr(torch.tensor(v, dtype=torch.float64))) for v in (axis[2], axis[3], between)]
        assert p[2] == pytest.approx((p[0] + p[1]) / 2)


def test_lattice_click_targets_carry_the_latent_point_drawn_under_them():
    n, cell = 5, 8
    axis = lattice_axis(n)
    picture = np.zeros((n * (cell + 1) - 1, n * (cell + 1) - 1))
    fig = plots.lattice_figure(picture, axis, axis, cell=cell, targets=(np.arange(n), axis, axis))
    t = fig.data[-1]
    for x, y, (zx, zy) in zip(t.x, t.y, t.customdata):
        col, row = round((x - cell / 2 + 0.5) / (cell + 1)), round((y - cell / 2 + 0.5) / (cell + 1))
        assert zx == pytest.approx(axis[col]) and zy == pytest.approx(axis[n - 1 - row])  # row 0 is the top
