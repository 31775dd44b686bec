"""End to end, the Latent page's map in a real browser (its own server, `serve.py`, whose routes serve the map's
points and images): every image of the dataset drawn; the image of the point under the pointer; the images mode,
the data's own lattice beside the decoder's; a box selection and its gallery, paged; a second model's map beside
the first, the same images selected on both. Each waits on the map's own state (its root element's data-drawn,
data-hover, data-thumbs attributes) or the page's, never on fixed sleeps. Uses the server fixture of
test_browser.py (its own server for this module).
"""
from __future__ import annotations

import re

import pytest
import torch

from test_browser import (FASHION, browser, choose, no_exception, server, settled, shot, until,  # noqa: F401
                          visit)
from vae_core import checkpoint as C
from vae_core import store
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import load_digits
from vae_core.model import VAE
from vae_core.train import fit

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover — test_browser's fixtures skip (or fail, in CI) without it
    expect = None

MODEL = "fashion-mnist-2d" if FASHION else "digits-2d"  # the shipped model whose map the tests browse
IMAGES = 70_000 if FASHION else 1_797
MAP = ".st-key-ls_map .vm-root"


def open_map(browser, server, model: str = MODEL):
    """The Latent page of `model` in a new browser context, once its map has drawn every point."""
    pg = visit(browser, server, f"latent?model={model}", "Latent space")
    expect(pg.locator(f"{MAP}[data-drawn]").first).to_be_attached(timeout=180_000)  # the first visit encodes
    settled(pg)
    no_exception(pg)
    return pg


def plot_box(pg, which: int = 0) -> dict:
    return pg.locator(".st-key-ls_map .vm-main .vm-stack").nth(which).bounding_box()


def hover_a_point(pg) -> str:
    """Move the pointer over the map until it is over a point (the map says which): the row it shows."""
    box = plot_box(pg)
    root = pg.locator(MAP).first
    for fy in (0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65):
        for fx in (0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65):
            pg.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            if root.get_attribute("data-hover"):
                return root.get_attribute("data-hover")
    raise AssertionError("no point found under the pointer")


def drag_box(pg, which: int, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag a selection box over the fractions (x0, y0)–(x1, y1) of map `which`'s plot."""
    box = plot_box(pg, which)
    pg.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * (x0 + x1) / 2, box["y"] + box["height"] * (y0 + y1) / 2, steps=5)
    pg.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=5)
    pg.mouse.up()


def test_every_image_is_drawn_and_hover_shows_its_image(browser, server):
    pg = open_map(browser, server)
    expect(pg.locator(".vm-status").first).to_contain_text(f"of {IMAGES:,} points")
    row = hover_a_point(pg)
    tip = pg.locator(".vm-tip").first
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"#{row}")
    image = pg.locator(".vm-tip-image").first
    expect(image).to_have_attribute("data-row", row)  # the image of that very row has loaded, from the server
    assert pg.evaluate("i => i.complete && i.naturalWidth >= 56", image.element_handle())
    shot(pg, "latent_hover")
    pg.context.close()


def test_the_images_mode_draws_the_datas_lattice_beside_the_decoders(browser, server):
    pg = open_map(browser, server)
    pg.locator(".vm-mode").first.click()
    root = pg.locator(MAP).first
    expect(root).to_have_attribute("data-mode", "images")
    expect(pg.locator(".st-key-ls_map .vm-decoder").first).to_be_visible()  # the decoder's lattice beside
    pg.wait_for_function("r => +r.dataset.cells > 3 && r.dataset.thumbs === r.dataset.cells", arg=root.element_handle())
    box = plot_box(pg)
    pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    cells = int(root.get_attribute("data-cells"))
    for _ in range(4):  # zoom in: a finer lattice of the data, more and smaller neighbourhoods
        pg.mouse.wheel(0, -300)
    pg.wait_for_function("([r, n]) => +r.dataset.cells > n && r.dataset.thumbs === r.dataset.cells",
                         arg=[root.element_handle(), cells])
    expect(pg.locator(".st-key-ls_map .vm-decoder .vm-title").first).to_contain_text("the decoder")
    no_exception(pg)
    shot(pg, "latent_images")
    pg.context.close()


def test_a_box_selection_shows_its_images_page_by_page(browser, server):
    pg = open_map(browser, server)
    heading = pg.locator("h3", has_text="Selection:").first
    until(lambda: drag_box(pg, 0, 0.2, 0.2, 0.8, 0.8),
          lambda: expect(heading).not_to_have_text("Selection: 0 images", timeout=10_000))
    selected = int(re.search(r"Selection: ([\d,]+)", heading.inner_text()).group(1).replace(",", ""))
    assert selected > 48
    expect(pg.get_by_text(re.compile(rf"images 1–48 of {selected:,}")).first).to_be_visible()
    expect(pg.locator(".vm-status").first).to_contain_text(f"{selected:,} selected")  # the map shows it too
    page_box = pg.get_by_label(re.compile(r"page \(of"))
    page_box.fill("2")
    page_box.press("Enter")
    expect(pg.get_by_text(re.compile(rf"images 49–96 of {selected:,}")).first).to_be_visible()
    expect(pg.get_by_role("button", name=re.compile(r"Selection: ids and codes"))).to_be_visible()
    settled(pg)
    no_exception(pg)
    shot(pg, "latent_selection")
    pg.context.close()


@pytest.fixture(scope="module")
def second_digits_model():
    """A second model of the digits in the server's workspace (the tests' throwaway one), trained here briefly."""
    data = load_digits()
    torch.manual_seed(1)
    model = VAE(ModelConfig(image_shape=data.image_shape, latent_dim=2, hidden=(64,)))
    fit(model, data, ObjectiveConfig(), TrainConfig(epochs=20, batch_size=64, seed=1))
    path = store.Workspace().save_model("digits-other", C.Checkpoint(model=model.eval(), dataset=data.info()),
                                        overwrite=True)
    yield "digits-other"
    path.unlink(missing_ok=True)


def test_two_models_side_by_side_show_one_selection_on_both(browser, server, second_digits_model):
    pg = open_map(browser, server, "digits-2d")
    choose(pg, "Beside it, the map of", f"saved · {second_digits_model}")
    maps = pg.locator(f"{MAP}[data-drawn]")
    expect(maps).to_have_count(2, timeout=120_000)
    settled(pg)
    expect(pg.get_by_text("orthogonal Procrustes fit").first).to_be_visible()
    heading = pg.locator("h3", has_text="Selection:").first
    until(lambda: drag_box(pg, 1, 0.3, 0.3, 0.7, 0.7),  # on the second map …
          lambda: expect(heading).not_to_have_text("Selection: 0 images", timeout=10_000))
    selected = re.search(r"Selection: ([\d,]+)", heading.inner_text()).group(1)
    for status in pg.locator(".vm-status").all():  # … the same images, highlighted on both
        expect(status).to_contain_text(f"{selected} selected")
    choose(pg, "Colour by", "second model − first")
    expect(pg.locator(".vm-legend").first).to_contain_text("−ELBO, second model − first (nats)")
    settled(pg)
    no_exception(pg)
    shot(pg, "latent_two_models")
    pg.context.close()
