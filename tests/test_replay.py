"""The training replay: what it records per epoch is what the model's encoder says about the probe, the file
round-trips and rejects bad bytes, the run service saves it beside every checkpoint, and recording is cheap."""
import numpy as np
import pytest
import torch

from vae_core import replay
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.executors import LocalExecutor
from vae_core.metrics import evaluate_elbo, mutual_information
from vae_core.model import VAE, init_weights
from vae_core.projection import pca
from vae_core.runs import RunService, RunSpec
from vae_core.store import DataRef, Workspace
from vae_core.train import fit


def recorded(digits, d: int, epochs: int = 3):
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=d, hidden=(64,))), 0)
    rec = replay.Recorder(digits.x_test, digits.y_test, probe=200, class_names=digits.class_names)
    hist = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=epochs, batch_size=64),
               on_epoch=lambda r, m: rec.record(r["epoch"], m)).history
    return model.eval(), rec.finish(), hist


def test_a_2d_replay_holds_each_epochs_posterior_of_the_probe(digits):
    model, rp, hist = recorded(digits, 2)
    assert list(rp.epochs) == [1, 2, 3] and rp.means.shape == (3, 200, 2) and rp.cov.shape == (3, 200, 3)
    x = digits.x_test[torch.as_tensor(rp.probe_ids)]
    mu, logvar = model.encode(x)
    assert np.allclose(rp.means[-1], mu.detach().numpy(), atol=1e-5)  # the raw latent, last epoch = final model
    var = logvar.exp().detach().numpy()
    assert np.allclose(rp.cov[-1], np.stack([var[:, 0], 0 * var[:, 0], var[:, 1]], -1), atol=1e-6)
    ref = evaluate_elbo(model, x)
    assert np.allclose(rp.kl_per_dim[-1], ref["kl_per_dim"], atol=1e-4)
    assert rp.active_units[-1] == ref["active_units"]
    assert rp.mutual_info[-1] == pytest.approx(mutual_information(model, x))
    assert rp.lattice.shape[0] == 3 and rp.lattice.dtype == np.uint8
    assert list(rp.labels) == list(digits.y_test[torch.as_tensor(rp.probe_ids)].numpy())
    assert rp.class_names == list(digits.class_names) and rp.axes == ("z₀", "z₁")


def test_a_higher_dimensional_replay_uses_one_fixed_pca_for_every_epoch(digits):
    model, rp, _ = recorded(digits, 6)
    x = digits.x_test[torch.as_tensor(rp.probe_ids)]
    mu, logvar = (t.detach().double().numpy() for t in model.encode(x))
    coords, _ = pca(mu)  # the last epoch's own PCA, centred
    assert np.allclose(np.abs(rp.means[-1]), np.abs(coords), atol=1e-4)  # the same axes (up to sign)
    # Σ_map = Wᵀ diag(σ²) W with W the axes: check it against the means' directions
    centred = mu - mu.mean(0)
    w = np.linalg.lstsq(centred, rp.means[-1].astype(np.float64), rcond=None)[0]  # (d, 2) recovers W
    cov = np.einsum("dk,pd,dl->pkl", w, np.exp(logvar), w)
    assert np.allclose(rp.cov[-1], np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]], -1), atol=1e-4)
    # earlier epochs are projected on the same axes: the epoch-1 frame is not its own PCA
    assert rp.means.shape == (3, 200, 2)


def test_the_replay_file_round_trips_and_refuses_bad_bytes(digits, tmp_path):
    _, rp, _ = recorded(digits, 2, epochs=2)
    path = replay.save(tmp_path / "run.replay", rp)
    back = replay.load(path)
    for name in ("epochs", "probe_ids", "labels", "means", "cov", "kl_per_dim", "active_units", "mutual_info",
                 "lattice"):
        assert np.array_equal(getattr(back, name), getattr(rp, name)), name
    assert back.axes == rp.axes and back.record_seconds == rp.record_seconds and back.class_names == rp.class_names
    blob = replay.to_bytes(rp)
    for bad in (b"", b"junk" * 10, blob[: len(blob) // 2], blob[:8] + b"[" + blob[9:]):
        with pytest.raises(replay.ReplayError):
            replay.from_bytes(bad)
    assert replay.path_for(tmp_path / "m.safetensors").name == "m.replay"


def test_every_run_of_the_service_leaves_its_replay_beside_the_checkpoint(tmp_path):
    service = RunService(Workspace(tmp_path / "ws"), LocalExecutor(1))
    spec = RunSpec(data=DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=2, hidden=(32,)),
                   objective=ObjectiveConfig(), train=TrainConfig(epochs=3, batch_size=64))
    run = service.submit(spec, label="r")
    assert run.wait(120) and run.status == "done"
    rp = replay.load(replay.path_for(run.saved))
    assert rp.epochs[0] == 1 and rp.epochs[-1] == 3 and len(rp.record_seconds) == len(rp.epochs)
    # recording keeps within its budget of the training time (beyond the first and the last frame)
    trained = sum(r["seconds"] + r["eval_seconds"] for r in run.history)
    assert sum(rp.record_seconds[1:-1]) <= replay.BUDGET * trained
    assert [r["replay_seconds"] > 0 for r in run.history] == [e in rp.epochs for e in (1, 2, 3)]


def test_a_frame_is_skipped_when_it_would_break_the_budget(digits):
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,))), 0)
    rec = replay.Recorder(digits.x_test, None, probe=50, epochs=10)
    rec.seconds = [1.0]  # as if the first frame had cost a second
    rec.trained = 0.0
    assert rec.record(2, model, epoch_seconds=1.0) == 0.0  # 1 + 1 s of recording > 10 % of 1 s of training
    assert rec.record(10, model, epoch_seconds=1.0) > 0  # the last epoch is always recorded
    rec.seconds, rec.trained = [0.001], 100.0
    assert rec.record(3, model, epoch_seconds=1.0) > 0  # well within the budget


def test_a_long_run_records_at_most_sixty_evenly_spaced_epochs(digits):
    assert list(replay.frame_indices(5)) == [0, 1, 2, 3, 4]
    idx = replay.frame_indices(500)
    assert len(idx) == 60 and idx[0] == 0 and idx[-1] == 499 and np.all(np.diff(idx) >= 8)
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(16,))), 0)
    rec = replay.Recorder(digits.x_test, None, probe=50, epochs=100)
    recorded = [e for e in range(1, 101) if rec.record(e, model) > 0]
    assert recorded == list(replay.frame_indices(100) + 1) and len(recorded) == 60
    assert list(rec.finish().epochs) == recorded
