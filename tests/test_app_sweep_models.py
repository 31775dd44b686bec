"""A run of a collapse-lab sweep as the active model, with streamlit.testing (no browser): opened by
`?model=SWEEP/RUN` or by the lab's button, listed in the sidebar, working on every page (d = 16 and 64); and the
16-D Fashion-MNIST run on the Anomalies page, which ranks MNIST-like digits as MORE likely than its own test
images (Nalisnick et al. 2019) while the complexity-corrected score does not."""
import json

import pytest
import torch
from apphelp import N_ALL, ROOT, map_points, messages, mnist_like, model_options, npz_bytes, settle, shell

from vae_core import checkpoint as C
from vae_core.anomaly import CHANCE_BAND, CORRECTED_SCORE, RAW_SCORE, score_new_data
from vae_core.data import load_array_file, load_dataset
from vae_core.locations import available_builtin
from vae_core.metrics import per_sample_scores
from vae_core.ui import state

SWEEPS = ROOT / "checkpoints" / "sweeps"
FASHION_RUN = "fashion-every-cure-d16/beta1_fb0_wu0"  # β = 1, d = 16, every unit active
FASHION = (SWEEPS / f"{FASHION_RUN}.safetensors").exists() and available_builtin()["fashion-mnist"]
PAGES = ("0_Overview", "2_Latent_space", "3_Decoder_grid", "4_Anomalies", "1_Train", "5_Collapse_lab")
RAW_LABEL = "New vs. test AUROC · raw −ELBO"
CORRECTED_LABEL = "New vs. test AUROC · corrected −ELBO − L(x)"

pytestmark = pytest.mark.skipif(not (SWEEPS / "digits-d16" / "beta1_fb0_wu0.safetensors").exists(),
                                reason="the shipped sweeps are missing")



def active_id(at) -> str:
    return at.session_state[state.SELECT_KEY]


@pytest.mark.skipif(not FASHION, reason="needs Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_the_16d_fashion_run_opened_by_its_address_finds_mnist_like_digits_more_likely(home):
    x = mnist_like()
    stored = home.put_dataset(load_array_file(npz_bytes(x=x), "digits-28.npz"), "digits-28.npz")
    at = shell(model=FASHION_RUN).run()
    assert not at.exception and not at.error
    assert active_id(at) == f"sweep:{FASHION_RUN}" and at.query_params["model"] == FASHION_RUN
    assert f"sweep · {FASHION_RUN}" in model_options(at)
    assert "Latent size:** 16" in "\n".join(m.value for m in at.sidebar.markdown)

    at.switch_page("app_pages/4_Anomalies.py")
    at.session_state["an_new_source"] = f"file:{stored.hash}"
    settle(at)
    if any(b.key == "an_new_start" for b in at.button):  # a slow machine: the estimate first, then the button
        settle(at.button(key="an_new_start").click())
    assert not at.exception and not at.error and active_id(at) == f"sweep:{FASHION_RUN}"

    model = C.load(SWEEPS / f"{FASHION_RUN}.safetensors").model
    x_test = load_dataset("fashion-mnist", "cpu").x_test
    want = score_new_data(model, x_test, torch.from_numpy(x[:, None] / 255.0).float(),
                          test_scores=per_sample_scores(model, x_test))["auroc"]
    shown = {m.label: m.value for m in at.metric if m.label in (RAW_LABEL, CORRECTED_LABEL)}
    assert shown == {RAW_LABEL: f"{want[RAW_SCORE]:.3f}", CORRECTED_LABEL: f"{want[CORRECTED_SCORE]:.3f}"}
    assert want[RAW_SCORE] < 0.5 - CHANCE_BAND and want[CORRECTED_SCORE] > 0.5 + CHANCE_BAND
    assert (f"{want[RAW_SCORE]:.2f}", f"{want[CORRECTED_SCORE]:.2f}") == ("0.32", "0.87")  # the README's figures
    [warning] = messages(at, ("warning",))
    assert "the model gives the new images HIGHER likelihood than the test images" in warning
    assert "Nalisnick et al. 2019" in warning and f"Corrected: AUROC {want[CORRECTED_SCORE]:.2f}" in warning


RUNS = ["digits-d16/beta1_fb0_wu0", "digits-d16/beta8_fb0_wu0", "digits-ppca-d64/beta1_fb0_wu0_s20.1"]


@pytest.mark.parametrize("run", RUNS + ([FASHION_RUN] if FASHION else []))
def test_every_page_works_with_a_sweep_run_of_many_dimensions(home, run):
    """d = 16 (one run with every unit collapsed, β = 8), the linear-Gaussian pPCA run at d = 64, and Fashion's."""
    at = shell(model=run).run()
    assert active_id(at) == f"sweep:{run}"
    for name in PAGES:
        at.switch_page(f"app_pages/{name}.py")
        settle(at, 300)
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, messages(at, ("error",)))
        assert active_id(at) == f"sweep:{run}" and at.query_params["model"] == run
        if name == "2_Latent_space":  # every image of the dataset on the map (a PCA plane of the 16 or 64 dimensions)
            assert map_points(at) == (70_000 if run == FASHION_RUN else N_ALL)


def test_the_lab_opens_the_picked_run_as_the_active_model_and_lists_it(home):
    at = shell().run()
    default = active_id(at)
    at.switch_page("app_pages/5_Collapse_lab.py")
    at.session_state["lab_sweep"] = str(SWEEPS / "digits-d16")
    at.session_state["lab_section"] = "kl"  # where the run picker is
    at.run()
    names = [r["name"] for r in json.loads((SWEEPS / "digits-d16" / "sweep.json").read_text())["runs"]]
    at.selectbox(key="lab_timeline_run_digits-d16").set_value(names.index("beta2_fb0_wu10")).run()
    assert active_id(at) == default and not any(o.startswith("sweep · ") for o in model_options(at))
    at.button(key="lab_open").click().run()
    assert not at.exception and not at.error
    assert active_id(at) == "sweep:digits-d16/beta2_fb0_wu10" and at.query_params["model"] == "digits-d16/beta2_fb0_wu10"
    assert [o for o in model_options(at) if o.startswith("sweep · ")] == ["sweep · digits-d16/beta2_fb0_wu10"]
    assert "?model=digits-d16/beta2_fb0_wu10" in "\n".join(c.value for c in at.sidebar.caption)
    at.switch_page("app_pages/3_Decoder_grid.py").run()  # it stays the active model on the other pages
    assert not at.exception and active_id(at) == "sweep:digits-d16/beta2_fb0_wu10"
    at.sidebar.selectbox(key=state.SELECT_KEY).set_value(default).run()  # and can be left, and picked again
    assert active_id(at) == default and "sweep · digits-d16/beta2_fb0_wu10" in model_options(at)


def test_a_sweep_run_of_a_users_sweep_opens_by_its_address(home):
    folder = home.sweep_path("mine")
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text("{}")
    source = SWEEPS / "digits-d16" / "beta1_fb0_wu0.safetensors"
    (folder / "run-a.safetensors").write_bytes(source.read_bytes())
    at = shell(model="mine/run-a").run()
    assert not at.exception and not at.error and active_id(at) == "sweep:mine/run-a"


def test_a_sweep_address_that_names_nothing_or_a_path_gives_one_message_and_the_default(home):
    for name in ("digits-d16/nope", "nope/beta1_fb0_wu0", "digits-d16/../digits-2d", "digits-d16/beta1_fb0_wu0/x",
                 "digits-d16/beta1_fb0_wu0.safetensors", "../checkpoints/sweeps/digits-d16/beta1_fb0_wu0"):
        at = shell(model=name).run()
        assert not at.exception and not at.error
        [warning] = messages(at.sidebar, ("warning",))
        assert f"no model called “{name}”" in warning and "a sweep's run as SWEEP/RUN" in warning
        assert active_id(at) in ("shipped:digits-2d", "shipped:fashion-mnist-2d")
