"""The collapse verdict (vae_core/collapse.py): on digits runs with known outcomes, each fix it offers measured on
the run that triggered it, and its words for the causes that are too slow to train here (a PixelCNN decoder)."""
import functools

import pytest
import torch

from vae_core import collapse
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.data import load_digits
from vae_core.runs import RunSpec, build_model
from vae_core.store import DataRef
from vae_core.train import fit

# d = 16 on the 8×8 digits, a small MLP, the Train page's batch for them (64: 23 steps an epoch)
BASE = RunSpec(data=DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=16, hidden=(64,)),
               train=TrainConfig(epochs=35, batch_size=64))


def spec_with(beta: float = 1.0, free_bits: float = 0.0, epochs: int = 35) -> RunSpec:
    return RunSpec(data=BASE.data, model=BASE.model, objective=ObjectiveConfig(beta=beta, free_bits=free_bits),
                   train=TrainConfig(epochs=epochs, batch_size=64))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny models train fastest on one thread: two contend for a busy 2-core machine (34 s against 6 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def last_record(spec: RunSpec) -> dict:
    """The last history record of `spec` trained as the run service trains it (cached: fixes share runs)."""
    return fit(build_model(spec.model, spec.train.seed), _digits(), spec.objective, spec.train).history[-1]


@functools.cache
def _digits():
    return load_digits()


def verdict_of(spec: RunSpec) -> collapse.Verdict:
    return collapse.verdict(last_record(spec), spec)


def test_beta_8_collapses_every_dimension_by_design_and_free_bits_none():
    found = verdict_of(spec_with(beta=8))
    assert found.n_collapsed == 16 and found.by_kl == found.inactive == tuple(range(16))
    assert found.cause == collapse.BETA and "β = 8 > 1 trades rate away by design" in found.reason
    assert found.headline.startswith("Every latent dimension collapsed (16 of 16)") and "z0–z15" in found.measures
    assert [f.label for f in found.fixes] == ["Free bits λ = 0.5", "β = 1"]
    kept = verdict_of(spec_with(beta=8, free_bits=0.5))
    assert kept.n_collapsed == 0 and kept.cause == collapse.NONE and not kept.fixes
    assert min(kept.kl_per_dim) > 0.2 and kept.headline.startswith("No collapse")


@pytest.mark.parametrize("trigger, cause", [(spec_with(beta=8), collapse.BETA),  # β > 1
                                            (spec_with(epochs=1), collapse.LAG),  # 23 steps: the encoder lagged
                                            (spec_with(), collapse.LAG)])  # β = 1, 805 steps: some dimensions unused
def test_each_fix_leaves_fewer_dimensions_collapsed(trigger, cause):
    found = verdict_of(trigger)
    assert found.cause == cause and found.n_collapsed > 0 and found.fixes
    for fix in found.fixes:
        assert verdict_of(fix.apply(trigger)).n_collapsed < found.n_collapsed, fix.label


def test_a_short_run_is_told_to_train_longer_and_every_fix_takes_enough_steps():
    found = verdict_of(spec_with(epochs=1))
    assert "took 23 optimiser steps, under the 700" in found.reason and "He et al. 2019" in found.reason
    assert [f.label for f in found.fixes] == ["Train longer (35 epochs)", "Free bits λ = 0.5 and 35 epochs"]
    assert all(f.apply(spec_with(epochs=1)).train.epochs == 35 for f in found.fixes)


def record(kl, variance, steps=805, epoch=35) -> dict:
    """A history record as `train.fit` writes it, with the given KL and Cov_x(E[z|x]) per dimension."""
    return {"epoch": epoch, "steps": steps, "kl_per_dim": list(kl), "mean_var_per_dim": list(variance),
            "active_units": sum(v > 0.01 for v in variance)}


def test_a_pixelcnn_decoder_collapses_at_beta_1_and_free_bits_is_the_fix():
    """Measured on the digits (d = 16, MLP 512-256 encoder, PixelCNN decoder, 35 epochs of batch 64): test KL 0.05
    nats in all, every dimension under 0.01 nats, yet 3 units count as active; free bits λ = 0.5 keep all 16."""
    spec = RunSpec(data=DataRef("digits"), model=ModelConfig(image_shape=(1, 8, 8), latent_dim=16, autoregressive=True),
                   train=TrainConfig(epochs=35, batch_size=64))
    found = collapse.verdict(record([0.003] * 16, [0.02] * 3 + [0.001] * 13), spec)
    assert found.n_collapsed == 16 and found.inactive == tuple(range(3, 16)) and found.active_units == 3
    assert found.cause == collapse.DECODER and "PixelCNN decoder" in found.reason and "even at β = 1" in found.reason
    assert [f.changes for f in found.fixes] == [{"free_bits": 0.5}]
    again = collapse.verdict(record([0.5] * 10 + [0.003] * 6, [0.5] * 10 + [0.0] * 6),
                             found.fixes[0].apply(spec))  # still collapsed with the fix: says so, offers the next
    assert "already had λ=0.5, and 6 still collapsed" in again.reason
    assert [f.label for f in again.fixes] == ["Free bits λ = 1"]


def test_free_bits_can_hold_a_dimension_s_kl_without_information():
    spec = spec_with(free_bits=0.5)
    found = collapse.verdict(record([0.5] * 16, [1.0] * 12 + [0.0] * 4), spec)
    assert found.by_kl == () and found.inactive == (12, 13, 14, 15) and found.n_collapsed == 4
    assert "z12–z15 keep KL above zero without varying from image to image" in found.measures


def test_the_cause_follows_the_settings():
    short = collapse.verdict(record([0.0] * 16, [0.0] * 16, steps=230, epoch=10), spec_with(beta=4, epochs=10))
    assert short.cause == collapse.BETA  # β decides before the run's length …
    assert [f.changes for f in short.fixes] == [{"free_bits": 0.5, "epochs": 35}, {"beta": 1.0, "epochs": 35}]
    capacity = RunSpec(data=BASE.data, model=BASE.model, objective=ObjectiveConfig(capacity=5))
    found = collapse.verdict(record([1.0] * 5 + [0.0] * 11, [1.0] * 5 + [0.0] * 11), capacity)
    assert found.cause == collapse.CAPACITY and found.fixes[0].apply(capacity).objective == ObjectiveConfig(free_bits=0.5)
    linear = RunSpec(data=BASE.data, model=ModelConfig(image_shape=(1, 8, 8), latent_dim=16, architecture="linear",
                                                       likelihood="gaussian", gaussian_sigma=0.2))
    found = collapse.verdict(record([1.0] * 5 + [0.0] * 11, [1.0] * 5 + [0.0] * 11), linear)
    assert found.cause == collapse.LINEAR and "σ² = 0.04" in found.reason
    assert found.fixes[0].apply(linear).model.gaussian_sigma ** 2 == pytest.approx(0.02)
    soft = RunSpec(data=BASE.data, model=BASE.model, objective=ObjectiveConfig(kl_target=3))
    fix = collapse.verdict(record([1.0] * 5 + [0.0] * 11, [1.0] * 5 + [0.0] * 11), soft).fixes[0]
    assert fix.apply(soft).objective.free_bits == 0.5  # a valid objective: the soft target goes


def test_records_from_before_which_units_were_recorded():
    old = {"epoch": 40, "kl_per_dim": [0.3] * 14 + [0.001] * 2, "active_units": 13}
    found = collapse.verdict(old, spec_with())
    assert found.inactive is None and found.n_collapsed == 3 and "3 of 16 (which ones was not recorded)" in found.measures


def test_dims_reads_as_ranges():
    assert collapse.dims([0, 1, 2, 5, 7, 8]) == "z0–z2, z5, z7, z8" and collapse.dims([]) == ""
