"""AppTest of the posterior-collapse lab page on the shipped digits sweep."""
import json
from pathlib import Path

import base64

import numpy as np
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Collapse_lab.py")
SHIPPED = ROOT / "checkpoints" / "sweeps" / "digits-d16"


def _decode(obj):
    """Plotly ≥ 6 sends numeric arrays as {'dtype', 'bdata' (base64)[, 'shape']}: turn them back into lists."""
    if isinstance(obj, dict) and set(obj) >= {"dtype", "bdata"}:
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if "shape" in obj:
            arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
        return arr.tolist()
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _fig(el):
    """The chart's figure with plotly's binary arrays decoded."""
    return go.Figure(_decode(json.loads(el.proto.spec)))


@pytest.fixture
def lab():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["lab_sweep"] = str(SHIPPED)
    return at.run()


def test_lab_shows_the_shipped_sweep(lab):
    assert not lab.exception
    charts = lab.get("plotly_chart")
    rd = _fig(charts[0])
    run_traces = [t for t in rd.data if t.mode == "lines+markers+text"]
    n_runs = sum(len(t.x) for t in run_traces)
    manifest = json.loads((SHIPPED / "sweep.json").read_text())
    assert n_runs == len(manifest["runs"]) == 20
    heat = _fig(charts[1]).data[0]
    assert len(heat.z) == 20 and len(heat.z[0]) == 16
    table = lab.dataframe[0].value
    assert len(table) == 20
    assert ((table["rate R"] + table["distortion D"] - table["−ELBO"]).abs() < 1e-6).all()
    assert table["I(x;z)"].max() <= 5.89  # log(359 test images)
    collapsed = table[(table["β"] >= 4) & (table["λ"] == 0)]
    assert (collapsed["active units"] == 0).all()  # β ≥ 4 collapses every unit …
    rescued = table[(table["β"] >= 4) & (table["λ"] == 0.5)]
    assert (rescued["active units"] == 16).all()  # … and free bits bring them back
    assert len(lab.get("image")) == 2 * 20  # reconstructions and prior samples of every run


def test_lab_timeline_follows_the_chosen_run(lab):
    lab.selectbox(key="lab_timeline_run").set_value(12).run()
    assert not lab.exception
    timeline = _fig(lab.get("plotly_chart")[2])
    assert len([t for t in timeline.data if t.mode == "lines"]) == 16


def test_lab_rejects_bad_values_with_a_message(tmp_path, monkeypatch):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["lab_sweep"] = str(SHIPPED)
    at.run()
    at.text_input(key="lab_betas").set_value("1, banana")
    at.button[0].click().run()
    assert not at.exception
    assert any("not a number" in e.value for e in at.error)
