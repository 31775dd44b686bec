"""AppTest of the posterior-collapse lab page: the shipped digits sweep, and a new sweep run in the background."""
import json
from pathlib import Path

import numpy as np
import pytest
from apphelp import chart_figure, good_npz, messages, npz_bytes, settle, shell
from streamlit.testing.v1 import AppTest

from vae_core import checkpoint as C
from vae_core import store
from vae_core.data import load_array_file
from vae_core.runs import default_service

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "app_pages" / "5_Collapse_lab.py")
SHIPPED = ROOT / "checkpoints" / "sweeps" / "digits-d16"


def lab_page(sweep: Path = SHIPPED, section: str = "overview") -> AppTest:
    """The lab page alone on `sweep`, showing `section`."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["lab_sweep"] = str(sweep)
    at.session_state["lab_section"] = section
    return at.run()


@pytest.fixture
def lab():
    return lab_page()


def picker(at: AppTest, sweep: Path = SHIPPED):
    return at.selectbox(key=f"lab_timeline_run_{sweep.name}")


def test_lab_shows_the_shipped_sweep(lab):
    assert not lab.exception
    assert not lab.get("plotly_chart")  # the overview alone: the plane (Vega-Lite, not Plotly) and the table
    (chart,) = lab.get("vega_lite_chart")
    rd = json.loads(chart.proto.spec)
    n_runs = sum(len(layer["data"]["values"]) for layer in rd["layer"] if "layer" in layer)  # the runs' points
    manifest = json.loads((SHIPPED / "sweep.json").read_text())
    assert n_runs == len(manifest["runs"]) == 20
    table = lab.dataframe[0].value
    assert len(table) == 20 and list(table.columns[:4]) == ["run", "rate R", "distortion D", "active units"]
    assert ((table["rate R"] + table["distortion D"] - table["−ELBO"]).abs() < 1e-6).all()
    assert table["I(x;z)"].max() <= 5.89  # log(359 test images)
    collapsed = table[(table["β"] >= 4) & (table["λ"] == 0)]
    assert (collapsed["active units"] == 0).all()  # β ≥ 4 collapses every unit …
    rescued = table[(table["β"] >= 4) & (table["λ"] == 0.5)]
    assert (rescued["active units"] == 16).all()  # … and free bits bring them back
    assert not lab.get("image")
    lab.segmented_control(key="lab_section").set_value("kl").run()
    heat = chart_figure(lab.get("plotly_chart")[0]).data[0]
    assert len(heat.z) == 20 and len(heat.z[0]) == 16 and not lab.dataframe
    lab.segmented_control(key="lab_section").set_value("pictures").run()
    assert not lab.exception and not lab.get("plotly_chart")
    assert len(lab.get("image")) == 2 * 20  # reconstructions and prior samples of every run


def test_lab_timeline_follows_the_chosen_run():
    lab = lab_page(section="kl")
    assert lab.session_state["lab_section"] == "kl"
    assert picker(lab).value == 13  # opens on β=4, warm-up 10: 8 active units after its first epoch, 0 at the end
    picker(lab).set_value(12).run()
    assert not lab.exception
    timeline = chart_figure(lab.get("plotly_chart")[1])
    assert len([t for t in timeline.data if t.mode == "lines"]) == 16
    (verdict,) = [w for w in messages(lab, ("warning",)) if "collapsed" in w]  # the chosen run's collapse, and why
    assert "β=4: Every latent dimension collapsed (16 of 16)" in verdict and verdict.count("z0–z15") == 2
    assert "β = 4 > 1 trades rate away by design" in verdict and "Fix 1: **Free bits λ = 0.5**" in verdict
    picker(lab).set_value(14).run()  # the same β with free bits: nothing collapsed
    assert any("β=4, λ=0.5: No collapse: all 16 latent dimensions" in m for m in messages(lab, ("info",)))


def test_the_replay_opens_on_a_collapsing_run_and_follows_the_sweep():
    every_cure = SHIPPED.parent / "fashion-every-cure-d16"
    lab = lab_page(every_cure, "kl")
    assert not lab.exception
    runs = json.loads((every_cure / "sweep.json").read_text())["runs"]
    first = picker(lab, every_cure)
    history = C.peek(every_cure / runs[first.value]["file"])["history"]
    assert history[-1]["active_units"] < history[0]["active_units"]  # it collapses as it trains
    assert first.format_func(first.value) == "β=4" and any("**β=4**, epoch by epoch" in c.value for c in lab.caption)
    lab.selectbox(key="lab_sweep").set_value(str(SHIPPED)).run()  # another sweep: its own picker, its own runs
    assert not lab.exception and lab.session_state["lab_section"] == "kl"
    (shown,) = [s for s in lab.selectbox if s.label == "Run"]
    assert shown.key == f"lab_timeline_run_{SHIPPED.name}" and shown.value == 13
    assert shown.format_func(shown.value) == "β=4, warm-up 10"
    assert any("**β=4, warm-up 10**, epoch by epoch" in c.value for c in lab.caption)


def test_lab_rejects_bad_values_with_a_message():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["lab_sweep"] = str(SHIPPED)
    at.run()
    assert not at.text_input  # the new-sweep form is folded away, and not drawn until opened
    at.session_state["lab_new_sweep"] = True  # the user opens it
    at.run()
    at.text_input(key="lab_betas").set_value("1, banana").run()
    assert not at.exception
    assert any("not a number" in e for e in messages(at, ("error",)))
    assert at.button(key="lab_run").disabled


def lab_form(**values) -> AppTest:
    """The whole app on the lab page with the new-sweep form filled in: `lab_<field>` = value (numbers for the
    number inputs, text for the others); not yet rerun."""
    at = shell().run()
    at.session_state["lab_new_sweep"] = True  # the form's expander, opened
    at.switch_page("app_pages/5_Collapse_lab.py").run()
    for field, value in values.items():
        (at.number_input if isinstance(value, int) else at.text_input)(key=f"lab_{field}").set_value(value)
    return at


def test_a_new_sweep_trains_in_the_background_while_the_user_is_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    at = lab_form(betas="1, 4", lams="0", epochs=20, latent=4, name="bg-sweep").run()
    assert any(c.value.startswith("2 runs: about") for c in at.caption)  # the estimate, measured before starting
    at.button(key="lab_run").click().run()
    runs = default_service().runs(group=str(store.Workspace().sweep_path("bg-sweep")))
    assert len(runs) == 2
    at.switch_page("app_pages/0_Overview.py").run()  # the user leaves: the sweep goes on
    at.switch_page("app_pages/2_Latent_space.py").run()
    for run in runs:
        assert run.wait(120) and run.status == "done"
    at.switch_page("app_pages/5_Collapse_lab.py")
    settle(at)
    assert not at.exception and not at.error
    assert at.selectbox(key="lab_sweep").value.endswith("bg-sweep")
    assert len(at.dataframe[0].value) == 2 and any("2 of 2 runs finished" in c.value for c in at.caption)


def test_the_lab_form_adds_runs_per_cure_and_prices_the_aggressive_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    at = lab_form(betas="1, 4", lams="0", epochs=2, latent=4, cycles="2", capacities="5, 10", targets="3",
                  name="cures")
    at.checkbox(key="lab_aggressive").check().run()
    assert not at.exception and not at.error
    estimate = next(c.value for c in at.caption if "runs: about" in c.value)
    assert estimate.startswith("10 runs: about") and "of training" in estimate and "busy" not in estimate
    assert "encoder steps per decoder step" in estimate  # aggressive runs: their probe counted the inner loop
    at.text_input(key="lab_cycles").set_value("2.5").run()
    assert any("not a whole number" in e for e in messages(at, ("error",))) and at.button(key="lab_run").disabled


def test_the_ppca_panel_sets_the_exact_fit_beside_the_closed_form():
    at = lab_page(section="ppca")
    assert any("Collapse without any optimisation problem" in h.value for h in at.subheader)
    table = at.dataframe[-1].value
    assert list(table["AU closed form"]) == [18, 12, 6] and table["AU exact fit"].isna().all()
    at.button(key="lab_ppca_fit").click().run()
    settle(at)
    assert not at.exception and not at.error
    table = at.dataframe[-1].value
    assert list(table["AU exact fit"]) == [18, 12, 6]
    assert np.allclose(table["rate exact fit"], table["rate closed form"], rtol=1e-5)
    assert np.allclose(table["−ELBO exact fit"], table["−log p (pPCA)"], atol=1e-5)
    assert any("the same active units as the closed form at 3 of 3" in m for m in messages(at, ("success",)))


def test_the_lab_sweeps_a_dataset_stored_in_the_workspace_and_the_manifest_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    ws = store.Workspace()
    rng = np.random.default_rng(0)
    arrays = load_array_file(npz_bytes(x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=np.arange(60) % 3),
                             "mine.npz")
    stored = ws.put_dataset(arrays, "mine.npz")
    at = lab_form(betas="1", lams="0", epochs=1, latent=2, name="on-mine")
    at.selectbox(key="lab_dataset").set_value(f"file:{stored.hash}").run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("1 runs: about") for c in at.caption)
    at.button(key="lab_run").click().run()
    (run,) = default_service().runs(group=str(ws.sweep_path("on-mine")))
    assert run.wait(120) and run.status == "done"
    manifest = json.loads((ws.sweep_path("on-mine") / "sweep.json").read_text())
    assert manifest["spec"]["dataset_hash"] == stored.hash and manifest["spec"]["dataset"] == "mine.npz"
    assert manifest["image_shape"] == [1, 8, 8] and len(manifest["runs"]) == 1
    ckpt_info = C.peek(ws.sweep_path("on-mine") / manifest["runs"][0]["file"])["dataset"]
    assert ckpt_info["hash"] == stored.hash  # the run's model finds its data again by hash
    settle(at)
    assert not at.exception and not at.error and at.selectbox(key="lab_sweep").value.endswith("on-mine")


def test_a_file_uploaded_in_the_lab_form_is_stored_and_selected(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    at = lab_form()
    at.selectbox(key="lab_dataset").set_value("upload").run()
    assert at.button(key="lab_run").disabled  # nothing to sweep yet
    settle(at.file_uploader(key="lab_upload").set_value(("mine.npz", good_npz(n=40), "application/octet-stream")).run())
    (stored,) = store.Workspace().list_datasets()
    assert at.session_state["lab_dataset"] == f"file:{stored.hash}" and stored.file_name == "mine.npz"
    assert not at.exception and not at.error and not at.button(key="lab_run").disabled
