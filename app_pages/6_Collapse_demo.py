"""Collapse demo: a ready lecture demonstration — the run that collapses and the same run cured, side by side, from
shipped runs (no training), with a presentation mode. `?demo=collapse` (or `?demo=decoder`) on any page opens it;
`?present=1` opens it in presentation mode."""
import streamlit as st

from vae_core.ui import first_paint

first_paint.page_header(
    "Posterior collapse: a lecture demo",
    "Two VAEs trained alike, one setting apart: on the left a run whose latent dimensions collapse as it trains — "
    "their KL falls to 0 and their posterior becomes the prior, so they tell the decoder nothing — and on the right "
    "the same run cured with free bits. Scrub the epochs to watch it happen; the arrow keys ← → step through them.",
    r"\mathcal L_{\beta,\lambda}=\mathbb E_q[-\log p(x|z)]+\beta\sum_{j}\max\big(\lambda,\ "
    r"\overline{\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))}\big)",
)

# The library: on a fresh server these wait for torch, which the header above did not need.
from vae_core import collapse, demo, pictures, replay, store  # noqa: E402
from vae_core.runs import RunSpec  # noqa: E402
from vae_core.sweep import MANIFEST, SweepError, submit_sweep  # noqa: E402
from vae_core.ui import cache, jobs, state, step_keys, widgets  # noqa: E402
from vae_core.ui.text import plain, sentence  # noqa: E402

PICK, EPOCH, PANEL, PRESENT, SOURCE, LIVE = "demo_pick", "demo_epoch", "demo_panel", "demo_present", "demo_source", "demo_live"
WANT_LIVE = "demo_want_live"  # the runs were started here: show them once both have finished
PANELS = ("Training replay", "Reconstructions and samples", "Rate–distortion plane")
# Keyboard (presentation mode): ← → step the epoch, ↑ ↓ / PageUp PageDown the panel.
STEP_KEYS = {"ArrowLeft": "demo_prev", "ArrowRight": "demo_next", "PageDown": "demo_panel_next",
             "ArrowDown": "demo_panel_next", "PageUp": "demo_panel_prev", "ArrowUp": "demo_panel_prev"}

# ---------------------------------------------------------------- the address: which demo, presentation mode
if PICK not in st.session_state:
    st.session_state[PICK] = demo.demo_for(st.query_params.get("demo")).key
if PRESENT not in st.session_state:
    st.session_state[PRESENT] = st.query_params.get("present") == "1"
st.session_state.setdefault(PANEL, 0)
present = bool(st.session_state[PRESENT])
ws = store.Workspace()
me = state.browser_id()


def _step_epoch(stops: list[int], delta: int) -> None:
    now = st.session_state.get(EPOCH, stops[0])
    i = stops.index(now) if now in stops else 0
    st.session_state[EPOCH] = stops[min(len(stops) - 1, max(0, i + delta))]


def _step_panel(delta: int) -> None:
    st.session_state[PANEL] = min(len(PANELS) - 1, max(0, st.session_state.get(PANEL, 0) + delta))


def _leave_presentation() -> None:
    st.session_state[PRESENT] = False


# ---------------------------------------------------------------- controls (folded away when presenting)
controls = st.expander("Controls", expanded=False) if present else st.container()
with controls:
    c1, c2, c3 = st.columns([3, 2, 2], vertical_alignment="bottom")
    key = c1.selectbox("Demonstration", list(demo.DEMOS), key=PICK,
                       format_func=lambda k: f"{demo.DEMOS[k].title}: {demo.DEMOS[k].collapsed} vs {demo.DEMOS[k].cured}")
    c2.toggle("Presentation mode", key=PRESENT, help="Large fonts, the sidebar and the controls folded away, one "
              "panel per screen; ← → step the epochs, ↑ ↓ (or PageUp, PageDown) the panels. The address ?present=1 "
              "opens it.")
    chosen = demo.DEMOS[key]
    live_folder = ws.sweep_path(demo.live_folder_name(chosen, me))
    live_ready = False
    try:
        if (live_folder / MANIFEST).is_file():
            demo.load_pair(chosen, live_folder)
            live_ready = True
    except demo.DemoError:
        pass
    sources = {"shipped": "shipped runs (no training)"}
    if live_ready:
        sources["live"] = "the runs you trained here"
    if st.session_state.get(WANT_LIVE) and live_ready:  # the runs trained from this page have finished: show them
        st.session_state[SOURCE] = "live"
        st.session_state.pop(WANT_LIVE)
    if st.session_state.get(SOURCE) not in sources:
        st.session_state.pop(SOURCE, None)
    source = c3.radio("Runs shown", list(sources), key=SOURCE, format_func=sources.get, horizontal=False,
                      disabled=len(sources) == 1, help="Train the pair live below; once both runs have finished "
                      "they can be shown here instead of the shipped ones.")
present = bool(st.session_state[PRESENT])
st.query_params["demo"] = chosen.key
if present:
    st.query_params["present"] = "1"
else:
    st.query_params.pop("present", None)

folder = live_folder if source == "live" else demo.shipped_folder(chosen)
try:
    pair = cache.demo_pair(chosen.key, str(folder), (folder / MANIFEST).stat().st_mtime_ns)
except (demo.DemoError, OSError) as err:
    st.error(f"This demonstration's runs cannot be read: {plain(sentence(err))} Pick the other demonstration.")
    widgets.stop()
captions = demo.captions(pair)
d = pair.latent_dim

# ---------------------------------------------------------------- one scrubber for both runs
stops = demo.epochs(pair)
if st.session_state.get(EPOCH) not in stops:
    st.session_state[EPOCH] = stops[0]
bar = st.container(key="demo_presenting") if present else st.container(key="demo_bar")
with bar:
    if present:
        b0, b1, b2, b3, b4, b5, b6 = st.columns([1, 1, 5, 1, 1, 4, 2], vertical_alignment="center")
    else:
        b0, b1, b2 = st.columns([1, 1, 12], vertical_alignment="center")
    b0.button("◀", key="demo_prev", on_click=_step_epoch, args=(stops, -1), help="Previous epoch (←)",
              disabled=st.session_state[EPOCH] == stops[0], width="stretch")
    b1.button("▶", key="demo_next", on_click=_step_epoch, args=(stops, 1), help="Next epoch (→)",
              disabled=st.session_state[EPOCH] == stops[-1], width="stretch")
    epoch = b2.select_slider("Epoch", stops, key=EPOCH, help="Both runs' training replays at this epoch (← → step).")
    if present:
        panel = st.session_state[PANEL]
        b3.button("▲", key="demo_panel_prev", on_click=_step_panel, args=(-1,), help="Previous panel (↑, PageUp)",
                  disabled=panel == 0, width="stretch")
        b4.button("▼", key="demo_panel_next", on_click=_step_panel, args=(1,), help="Next panel (↓, PageDown)",
                  disabled=panel == len(PANELS) - 1, width="stretch")
        b5.markdown(f"**{PANELS[panel]}** · {panel + 1} of {len(PANELS)}")
        b6.button("Exit", key="demo_exit", on_click=_leave_presentation, icon=":material/close:",
                  width="stretch", help="Leave presentation mode")
shown = [st.session_state[PANEL]] if present else list(range(len(PANELS)))
font = 17 if present else 13


def side_heading(side: demo.Side) -> str:
    word = "Collapses" if side.role == "collapsed" else "Cured"
    return f"{word}: {side.label}"


# ---------------------------------------------------------------- panel 1: the replay, scrubbed together
if 0 in shown:
    st.subheader(f"{PANELS[0]} — epoch {epoch} of {stops[-1]}")
    lim, kl_max = demo.map_limit(pair), demo.kl_limit(pair)
    columns = st.columns(2)
    for side, column in zip(pair.sides, columns):
        with column:
            now = demo.moment(side.replay, epoch)
            colour = "red" if now.at_prior or now.active_units < d else "green"
            st.markdown(f"#### {side_heading(side)}  \n:{colour}[{now.line}]")
            path = replay.path_for(side.checkpoint)
            figure = cache.demo_frame(str(path), path.stat().st_mtime_ns, epoch, lim, kl_max,
                                      side.objective.free_bits, font, side.replay, 560 if present else 640)
            st.plotly_chart(figure, key=f"demo_frame_{side.role}", config={"displayModeBar": False},
                            width="stretch")
    st.caption(captions["replay"])

# ---------------------------------------------------------------- panel 2: reconstructions and prior samples
if 1 in shown:
    st.subheader(PANELS[1])
    try:
        data = cache.dataset(store.DataRef(pair.spec.dataset, pair.spec.dataset_hash, n_test=pair.spec.n_test))
    except Exception as err:  # noqa: BLE001 — the rest of the demo needs no images
        data = None
        st.info(f"The test images of {plain(pair.spec.dataset)} are not on this server ({plain(err)}), so the "
                "reconstructions and samples cannot be drawn; the replay and the R–D plane above need none.")
    if data is not None:
        scale = pictures.display_scale(data.image_shape[1], 56)  # twice the lab's size: seen from the back row
        names = {"recon": "inputs (top row) and what the code gives",
                 "teacher_forced": "teacher-forced (the decoder sees the input's earlier pixels)",
                 "samples": "samples from the prior N(0, I)"}
        columns = st.columns(2)
        for side, column in zip(pair.sides, columns):
            with column, widgets.guard(f"draw the pictures of {side.name}"):
                mtime = side.checkpoint.stat().st_mtime_ns
                ckpt = cache.load_checkpoint_file(str(side.checkpoint), mtime)
                pics = cache.run_pictures(str(side.checkpoint), mtime, ckpt.model, data.x_test, data.y_test, 3, scale)
                found = collapse.verdict(side.evaluation, RunSpec(data=pair.spec.data_ref(), model=ckpt.config,
                                                                  objective=ckpt.objective, train=ckpt.train))
                st.markdown(f"#### {side_heading(side)}  \n:{'red' if found.n_collapsed else 'green'}"
                            f"[Final model: {found.headline}]")
                for name in ("recon", "teacher_forced", "samples"):
                    if name in pics:
                        widgets.image(pics[name], caption=names[name])
        st.caption(captions["pictures"])

# ---------------------------------------------------------------- panel 3: the rate–distortion plane
if 2 in shown:
    st.subheader(PANELS[2])
    st.vega_lite_chart(cache.demo_rd(str(pair.folder), (pair.folder / MANIFEST).stat().st_mtime_ns, font, pair),
                       key="demo_rd", width="stretch")
    st.caption(captions["rd"])

# ---------------------------------------------------------------- train it live
if not present:
    st.subheader("Train it live")
    svc = jobs.service()
    going = [r for r in svc.runs(owner=me, group=str(live_folder))]
    if going and not all(r.done for r in going):
        jobs.watch_sweep(live_folder.name, going[::-1], svc)
    if st.toggle("Train this pair again on this server", key=LIVE,
                 help="Both runs with the shipped settings (same data, model and seed), recorded as they train; "
                      "the time is measured here before you start."):
        with widgets.guard("prepare the runs"):
            n_epochs = st.number_input("Epochs per run", 1, demo.MAX_DEMO_EPOCHS, pair.spec.epochs, key="demo_live_epochs",
                                       help=f"The shipped runs trained {pair.spec.epochs} epochs; fewer show less of "
                                            "the collapse but finish sooner.")
            spec = demo.live_spec(demo.load_pair(chosen), int(n_epochs))
            probes = cache.sweep_estimates(spec, tuple(pair.image_shape))
            _, expected = jobs.expected_run_seconds(svc, list(probes.values()))
            st.caption(f"2 runs: {expected} on this machine, each with its end-of-run evaluation (IWAE k = "
                       f"{spec.iwae_k}); {next(iter(probes.values())).probe_note}.")
            if st.button("Train both runs", key="demo_live_run", type="primary", icon=":material/play_arrow:"):
                try:
                    queued = submit_sweep(jobs.service(warm=True), spec, live_folder, pair.image_shape, owner=me,
                                          estimates=probes)
                except SweepError as err:
                    st.error(f"Could not start the runs: {plain(sentence(err))}")
                else:
                    st.session_state[WANT_LIVE] = True
                    if queued:
                        st.rerun()  # the page now follows the runs
    if live_ready:
        st.caption("Your runs have finished: pick “the runs you trained here” under *Runs shown* at the top.")

step_keys.listen(STEP_KEYS)
