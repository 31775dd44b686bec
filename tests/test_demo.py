"""The lecture demo of posterior collapse (`vae_core/demo.py`, app_pages/6_Collapse_demo.py): the shipped pairs
really show collapse developing in one run and not in the other (numbers read from their replay files); the replay's
axes hold every drawn ±2σ ellipse; the page, `?demo=collapse` from any page, presentation mode and training the pair
live."""
import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from apphelp import chart_figure, messages, rerun_until, shell, unescape
from PIL import Image
from streamlit.testing.v1 import AppTest

from vae_core import demo, replay_plots
from vae_core.replay import Replay
from vae_core.runs import default_service

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "6_Collapse_demo.py")



# ---------------------------------------------------------------- the shipped pairs, measured

def test_the_collapse_pair_loses_active_units_as_it_trains_and_the_cure_keeps_them():
    pair = demo.load_pair(demo.DEMOS["collapse"])
    c, k = pair.collapsed.replay, pair.cured.replay
    assert list(c.epochs) == list(k.epochs) == list(range(1, 21)) == demo.epochs(pair)
    assert c.active_units[0] == 16 and c.active_units[-1] == 13  # 16/16 → 13/16 over 20 epochs …
    assert (c.active_units[-4:] == 13).all() and c.active_units[:7].min() == 16  # … lost late, and kept lost
    assert (k.active_units == 16).all()  # free bits λ = 0.5: every unit active at every epoch
    first, last = demo.moment(c, 1), demo.moment(c, 20)
    assert first.at_prior == () and len(last.at_prior) >= 3  # dimensions whose KL reached the prior (< 0.01 nats)
    assert demo.moment(k, 20).at_prior == () and k.kl_per_dim.min() > 0.4  # held near the floor λ
    assert c.lattice is not None and k.lattice is not None  # the decoder lattice can be shown


def test_the_strong_decoder_pair_loses_its_rate_as_it_trains():
    pair = demo.load_pair(demo.DEMOS["decoder"])
    c, k = pair.collapsed.replay, pair.cured.replay
    rate = c.kl_per_dim.sum(1)
    assert rate[0] > 10 and rate[-1] < 1  # 11.8 → 0.9 nats: the PixelCNN learns to ignore z
    assert c.active_units[0] == 16 and c.active_units[-10:].max() <= 14
    assert (k.active_units == 16).all() and k.kl_per_dim.sum(1)[-1] > 7


# ---------------------------------------------------------------- the replay's axes hold the ellipses

def _tight_replay(epochs: int = 3) -> Replay:
    """Means within ±0.2, unit variances: the ±2σ ellipses reach ±2.2, ten times past the means."""
    rng = np.random.default_rng(0)
    p = 50
    means = rng.uniform(-0.2, 0.2, (epochs, p, 2)).astype(np.float32)
    cov = np.tile(np.array([1.0, 0.0, 1.0], np.float32), (epochs, p, 1))
    return Replay(epochs=np.arange(1, epochs + 1), probe_ids=np.arange(p), labels=np.arange(p) % 10, means=means,
                  cov=cov, kl_per_dim=rng.uniform(0, 1, (epochs, 4)).astype(np.float32),
                  active_units=np.full(epochs, 4), mutual_info=np.ones(epochs),
                  lattice=np.zeros((epochs, 20, 20), np.uint8), axes=("z₀", "z₁"))


def _rings(fig: go.Figure) -> list[np.ndarray]:
    """Every ellipse outline drawn in the figure and its frames."""
    found = []
    for data in [fig.data, *[f.data for f in fig.frames]]:
        for t in data:
            if isinstance(t, go.Scatter) and t.mode == "lines" and t.line.color == "#d62728":
                xy = np.array([(x, y) for x, y in zip(t.x, t.y) if x is not None and np.isfinite(x)], float)
                found.append(xy)
    return found


def test_the_replay_figure_axes_hold_every_drawn_ellipse():
    rp = _tight_replay()
    fig = replay_plots.replay_figure(rp)
    lo, hi = fig.layout.xaxis.range
    ylo, yhi = fig.layout.yaxis.range
    rings = _rings(fig)
    assert len(rings) == 1 + rp.n_epochs  # the first frame's ellipses and every frame's
    for xy in rings:
        assert lo <= xy[:, 0].min() and xy[:, 0].max() <= hi and ylo <= xy[:, 1].min() and xy[:, 1].max() <= yhi
    assert hi >= 2.2 and hi <= 2.2 * 1.1 + 0.1  # the ellipses fit, and the map is not zoomed out far past them
    assert replay_plots.map_limit(rp) == pytest.approx(hi)


def test_the_replay_gif_draws_every_ellipse_inside_its_panel():
    rp = _tight_replay()
    gif = Image.open(io.BytesIO(replay_plots.replay_gif(rp, size=240)))
    for i in range(rp.n_epochs):
        gif.seek(i)
        panel = np.asarray(gif.convert("RGB"))[24:24 + 240, 8:8 + 240].astype(int)  # the scatter panel
        red = (panel[..., 0] > 150) & (panel[..., 1] < 90) & (panel[..., 2] < 90)
        ys, xs = np.nonzero(red)
        assert len(xs) > 100  # the ellipses are drawn …
        assert xs.min() > 3 and xs.max() < 236 and ys.min() > 3 and ys.max() < 236  # … whole, inside the panel
        assert xs.max() - xs.min() > 150  # … and large: ±2.2 of a ±2.42 panel, not cut at ±0.2


def test_both_sides_of_the_demo_share_axes_that_hold_their_ellipses():
    pair = demo.load_pair(demo.DEMOS["collapse"])
    lim, kl_max = demo.map_limit(pair), demo.kl_limit(pair)
    for epoch in (1, 20):
        ranges = []
        for side in pair.sides:
            fig = demo.epoch_figure(side.replay, epoch, lim, kl_max, side.objective.free_bits)
            ranges.append((tuple(fig.layout.xaxis.range), tuple(fig.layout.yaxis3.range)))
            for xy in _rings(fig):
                assert np.abs(xy).max() <= lim
        assert ranges[0] == ranges[1] == ((-lim, lim), (0, kl_max))


@pytest.mark.parametrize("name", list(demo.DEMOS))
def test_the_rd_plane_names_both_runs_and_stretches_to_the_line_of_a_decoder_ignoring_z(name):
    """Both runs named by their role (the legend by their settings), one dotted line through each, the dashed line
    however far it lies, and no two texts overlapping on a phone or a wide screen, at the presentation's font size
    too."""
    from test_lab_plots import assert_texts_apart
    from vae_core.rd_plane import LABEL_WIDTHS, labels

    pair = demo.load_pair(demo.DEMOS[name])
    for font in (13, 17):  # the page's, and presentation mode's
        spec = demo.rd_figure(pair, font=font)
        texts = [text for text, *_ in labels(spec)]
        assert {"collapsed", "cured"} <= set(texts)
        legend = next(layer["layer"][0]["encoding"]["color"]["scale"]["domain"] for layer in spec["layer"]
                      if "layer" in layer)
        assert legend == [f"{side.role}: {side.label}" for side in pair.sides]
        line = f"decoder ignoring z: D = {pair.collapsed_distortion:.2f}"
        assert line in texts and spec["encoding"]["y"]["scale"]["domain"][1] > pair.collapsed_distortion
        levels = {row["D"] for row in spec["layer"][0]["data"]["values"] if row["R"] == 0}
        assert levels == {e["rate"] + e["distortion"] for e in (side.evaluation for side in pair.sides)}
        assert_texts_apart(spec, LABEL_WIDTHS)


def test_the_live_spec_trains_exactly_the_shipped_pair_again():
    pair = demo.load_pair(demo.DEMOS["collapse"])
    spec = demo.live_spec(pair, 2)
    names = [name for name, _ in spec.run_specs(pair.image_shape)]
    assert names == ["beta4_fb0_wu0", "beta4_fb0.5_wu0"] and spec.epochs == 2
    assert spec.n_train == pair.spec.n_train and spec.seed == pair.spec.seed
    with pytest.raises(ValueError):
        demo.live_spec(pair, 0)
    assert demo.live_folder_name(demo.DEMOS["collapse"], "ab/../cd") == "demo-collapse-abcd"


# ---------------------------------------------------------------- the page

@pytest.fixture
def page():
    return AppTest.from_file(PAGE, default_timeout=120)


def _all_text(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.subheader]
    return "\n".join(unescape(str(p)) for p in parts) + "\n" + "\n".join(messages(at))


def test_the_page_shows_both_runs_side_by_side_and_scrubs_them_together(page):
    at = page.run()
    assert not at.exception and not at.error
    text = _all_text(at)
    assert "Training replay — epoch 1 of 20" in text
    assert "epoch 1: 16 of 16 units active" in text
    assert "its active units go 16 → 13 of 16" in text  # the caption, with the replay's numbers
    assert "Final model: 3 of 16 latent dimensions collapsed." in text
    assert "Final model: No collapse: all 16 latent dimensions carry information." in text
    assert "decoder that ignores z" in text and "D = 384.13" in text
    assert len(at.get("plotly_chart")) == 2  # both runs' replay at this epoch
    (rd,) = at.get("vega_lite_chart")  # and the R–D plane
    runs = next(layer for layer in json.loads(rd.proto.spec)["layer"] if "layer" in layer)  # lines and points
    legend = runs["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert legend == ["collapsed: β=4", "cured: β=4, λ=0.5"]
    assert len(at.get("image")) == 4  # reconstructions and samples of both runs
    assert at.query_params["demo"] == ["collapse"] or at.query_params["demo"] == "collapse"
    at.button(key="demo_next").click().run()
    assert at.select_slider(key="demo_epoch").value == 2 and "Training replay — epoch 2 of 20" in _all_text(at)
    at.select_slider(key="demo_epoch").set_value(20).run()
    text = _all_text(at)
    assert not at.exception and "epoch 20: 13 of 16 units active" in text and "epoch 20: 16 of 16 units active" in text
    assert at.button(key="demo_next").disabled
    left, right = (chart_figure(c) for c in at.get("plotly_chart")[:2])
    assert left.layout.xaxis.range == right.layout.xaxis.range  # the same axes on both sides


def test_the_strong_decoder_demo_opens_from_its_address(page):
    page.query_params["demo"] = "decoder"
    at = page.run()
    assert not at.exception and not at.error
    text = _all_text(at)
    assert "rate 11.84 → 0.94 nats" in text and "epoch 1 of 60" in text
    assert len(at.get("image")) == 6  # a PixelCNN run also shows its teacher-forced row


def test_presentation_mode_shows_one_panel_at_a_time(page):
    page.query_params["present"] = "1"
    at = page.run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["Training replay — epoch 1 of 20"]
    assert at.toggle(key="demo_present").value
    at.button(key="demo_panel_next").click().run()
    assert [s.value for s in at.subheader] == ["Reconstructions and samples"]
    at.button(key="demo_panel_next").click().run()
    assert [s.value for s in at.subheader] == ["Rate–distortion plane"] and at.button(key="demo_panel_next").disabled
    at.button(key="demo_exit").click().run()
    assert not at.exception and len(at.subheader) == 4  # the three panels and "Train it live"
    assert "present" not in at.query_params


def test_demo_collapse_on_any_page_opens_the_demo():
    at = shell(demo="collapse").run()
    assert not at.exception
    assert [t.value for t in at.title][:1] == ["Posterior collapse: a lecture demo"]
    assert "epoch 1: 16 of 16 units active" in _all_text(at)


def test_the_pair_trains_live_with_an_estimate_first(page, home):
    at = page.run()
    at.toggle(key="demo_live").set_value(True).run()
    assert not at.exception
    assert any(c.value.startswith("2 runs: about") and "on this machine" in c.value for c in at.caption)
    at.number_input(key="demo_live_epochs").set_value(1).run()
    at.button(key="demo_live_run").click().run()
    assert not at.exception and not at.error
    folder = home.sweep_path(demo.live_folder_name(demo.DEMOS["collapse"], at.session_state["vae_browser_id"]))
    runs = default_service().runs(group=str(folder))
    assert len(runs) == 2
    for run in runs:
        assert run.wait(300) and run.status == "done", run.error
    rerun_until(at, lambda a: a.radio(key="demo_source").value == "live")
    assert not at.exception
    text = _all_text(at)
    assert "Training replay — epoch 1 of 1" in text
