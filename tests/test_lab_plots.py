import json

import numpy as np

from vae_core.lab_plots import kl_heatmap, kl_timeline, most_instructive
from vae_core.rd_plane import LABEL_WIDTHS, labels, plot_area, rd_plane, text_box, to_px

EVALS = [dict(beta=b, free_bits=fb, warmup=0, rate=r, distortion=d, test_elbo=r + d, active_units=au,
              kl_per_dim=[r / 2, r / 2])
         for b, fb, r, d, au in [(4, 0, 1.0, 40.0, 1), (0.5, 0, 9.0, 20.0, 2), (1, 0, 5.0, 25.0, 2),
                                 (4, 0.5, 2.0, 33.0, 2)]]


def layers(spec: dict, mark: str) -> list[dict]:
    """The layers of an R–D plane spec drawn with `mark`, nested ones included."""
    flat = [inner for layer in spec["layer"] for inner in layer.get("layer", [layer])]
    return [layer for layer in flat if layer["mark"]["type"] == mark]


def runs_of(spec: dict) -> list[dict]:
    """The runs' rows of an R–D plane spec (its point layer)."""
    (points,) = layers(spec, "circle")
    return points["data"]["values"] if "data" in points else next(
        layer["data"]["values"] for layer in spec["layer"] if points in layer.get("layer", []))


def test_rd_plane_joins_beta_runs_in_order_and_draws_iso_elbo_lines():
    spec = rd_plane(EVALS)
    json.dumps(spec)  # what Streamlit sends
    runs = runs_of(spec)
    assert [r["text"] for r in runs] == ["β=0.5", "β=1", "β=4", "β=4"] and all(r["side"] for r in runs)  # room for each
    assert [r["family"] for r in runs] == ["β-VAE"] * 3 + ["λ=0.5"]  # λ = 0 family and λ = 0.5 family
    assert [(r["R"], r["D"]) for r in runs[:3]] == [(9.0, 20.0), (5.0, 25.0), (1.0, 40.0)]  # β = 0.5, 1, 4
    (line,) = layers(spec, "line")[1:]  # the runs, joined in order of β within their family
    assert line["encoding"]["order"] == {"field": "beta"} and line["encoding"]["color"]["field"] == "family"
    assert runs[0]["run"] == "β=0.5" and runs[0]["−ELBO"] == 29.0 and runs[0]["active units"] == 2  # the tooltip
    diagonals = layers(spec, "line")[0]["data"]["values"]
    assert len(diagonals) == 2 * 5
    for a, b in zip(diagonals[::2], diagonals[1::2]):  # every point of an iso line has the same R + D
        assert a["level"] == b["level"] and np.isclose(a["R"] + a["D"], b["R"] + b["D"])


def test_kl_heatmap_is_runs_by_dimensions():
    fig = kl_heatmap(EVALS)
    assert np.array(fig.data[0].z).shape == (4, 2) and fig.data[0].z[1][0] == 4.5


def test_kl_timeline_one_line_per_dimension_and_lambda():
    hist = [{"epoch": e, "kl_per_dim": [1.0 / e, 0.5]} for e in (1, 2, 3)]
    fig = kl_timeline(hist, free_bits=0.5)
    assert len(fig.data) == 2 and list(fig.data[0].y) == [1.0, 0.5, 1 / 3]
    assert any(s.type == "line" for s in fig.layout.shapes)


def test_ppca_spectrum_marks_each_noise_variance_with_its_active_count():
    from vae_core.lab_plots import ppca_spectrum
    lam = np.array([0.5, 0.3, 0.15, 0.08, 0.01])
    fig = ppca_spectrum(lam[::-1], [0.05, 0.2], latent_dim=4)  # any order in; the 4 largest shown, largest first
    assert list(fig.data[0].y) == [0.5, 0.3, 0.15, 0.08]
    assert [t.name for t in fig.data[1:]] == ["σ² = 0.05: 4 active", "σ² = 0.2: 2 active"]
    assert [t.y[0] for t in fig.data[1:]] == [0.05, 0.2]


def label_boxes(spec: dict, width: int) -> list[tuple[str, tuple]]:
    """Every text drawn on the R–D plane (points' labels and notes) as (text, box in px), `width` px wide: about
    0.6 × the font size per character and 1.25 × it high, placed from the axis domains and the plane's size."""
    return [(text, text_box(*to_px(spec, width, x, y), text, side, font, gap))
            for text, x, y, side, gap, font in labels(spec)]


def assert_texts_apart(spec: dict, widths) -> None:
    """At each width, every text on the plane lies inside the plot and covers no other."""
    for width in widths:
        boxes = label_boxes(spec, width)
        left, top, right, bottom = plot_area(spec, width)
        for i, (text, (x0, y0, x1, y1)) in enumerate(boxes):
            assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, (width, text)
            for other, (u0, v0, u1, v1) in boxes[i + 1:]:
                assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, (width, text, other)


def test_rd_plane_labels_never_overlap_where_collapsed_runs_crowd_at_zero_rate():
    """The issue's sweep: runs pile up at R ≈ 0 (every β ≥ 2 without free bits) and at R ≈ 7 (free bits): on a
    phone and on a wide screen no two texts overlap, each inside the plot; crowds lose labels, not the rest."""
    crowd = [dict(beta=b, free_bits=fb, warmup=wu, rate=r, distortion=d, test_elbo=r + d, active_units=0,
                  kl_per_dim=[r]) for b in (2, 4, 8, 16) for wu in (0, 10)
             for fb, r, d in ((0, 0.01 * b / 16, 27.1 + 0.01 * wu), (0.5, 6.5 + 0.1 * b / 4 + 0.05 * wu, 20.5 + 0.1 * b))]
    spec = rd_plane(crowd + EVALS, collapsed_distortion=27.05)
    labelled = [r["R"] for r in runs_of(spec) if r["side"]]
    assert any(x < 0.05 for x in labelled) and 6 < len(labelled) < len(crowd + EVALS)  # one of the pile named
    placed = [(text, x, y) for text, x, y, *_ in labels(spec)]
    assert ("decoder ignoring z: D = 27.05", max(r["R"] for r in runs_of(spec)) * 1.15, 27.05) in placed
    assert ("dotted: equal −ELBO", "right", "top") in placed and len(placed) == len(set(placed))  # each text once
    assert len(placed) - len(labelled) >= 2 + 3  # the two notes and most of the five levels, after the points
    assert_texts_apart(spec, (*LABEL_WIDTHS, 1300))


def test_the_replay_opens_on_a_run_that_collapses_as_it_trains():
    def history(*au):
        return [{"epoch": e, "active_units": a} for e, a in enumerate(au, 1)]
    evals = [{"active_units": a} for a in (16, 4, 0, 16)]
    assert most_instructive([history(16, 16), history(16, 4), history(0, 0), history(12, 16)], evals) == 1
    assert most_instructive([history(16, 16), history(4, 4), history(0, 0), []], evals) == 2  # else the most collapsed
