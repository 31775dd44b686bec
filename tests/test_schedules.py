"""Every cure for posterior collapse under one schedule API: each weight curve against its paper's formula, the
capacity objective's gradient, the soft KL target's feedback, aggressive encoder training's two stopping rules, and
the cures as CLI flags and sweep lists."""
import json
import math

import pytest
import torch

from vae_core import train as T
from vae_core.__main__ import main
from vae_core.config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig
from vae_core.lab_plots import families, run_label
from vae_core.model import VAE, init_weights
from vae_core.objectives import (ElboTerms, Loss, TrainingObjective, capacity_at, capacity_elbo, cyclical_weight,
                                 kl_weight)
from vae_core.sweep import SweepSpec, parse_values, run_name


def fu_et_al(t: int, iterations: int, cycles: int, ramp: float) -> float:
    """Fu et al. 2019, eq. 4 as printed, with f(τ) = τ/R: iteration t = 1…T, τ = mod(t − 1, ⌈T/M⌉)/(T/M)."""
    tau = ((t - 1) % math.ceil(iterations / cycles)) / (iterations / cycles)
    return tau / ramp if tau <= ramp else 1.0


@pytest.mark.parametrize("cycles,ramp", [(4, 0.5), (1, 1.0), (5, 0.25)])
def test_cyclical_weight_is_fu_et_al_eq_4(cycles, ramp):
    epochs, steps = 10, 40  # T = 400 iterations; iteration t runs at epoch progress (t − 1)/steps
    ours = [cyclical_weight((t - 1) / steps, epochs, cycles, ramp) for t in range(1, epochs * steps + 1)]
    theirs = [min(1.0, fu_et_al(t, epochs * steps, cycles, ramp)) for t in range(1, epochs * steps + 1)]
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert ours.count(0.0) == cycles  # each cycle starts from 0


def test_kl_weight_is_beta_times_the_schedule():
    cyc = ObjectiveConfig(beta=2.0, kl_schedule="cyclical", cycles=2, ramp=0.5)
    assert [kl_weight(cyc, p, 8) for p in (0, 1, 2, 3, 4, 5, 7.9)] == pytest.approx([0, 1, 2, 2, 0, 1, 2])
    lin = ObjectiveConfig(beta=2.0, warmup_epochs=4)
    assert [kl_weight(lin, p, 8) for p in (0, 1, 2, 4, 6)] == pytest.approx([0, 0.5, 1, 2, 2])
    assert kl_weight(ObjectiveConfig(beta=3.0), 0.0, 8) == 3.0


def test_capacity_grows_linearly_to_c_max():
    cfg = ObjectiveConfig(capacity=20.0, capacity_epochs=4)
    assert [capacity_at(cfg, p, 10) for p in (0, 1, 2, 4, 9)] == pytest.approx([0, 5, 10, 20, 20])
    whole = ObjectiveConfig(capacity=20.0)  # capacity_epochs 0: the whole run
    assert capacity_at(whole, 5, 10) == pytest.approx(10)


def test_capacity_objective_pulls_the_rate_towards_c_from_both_sides():
    """D + γ|KL − C| (Burgess et al. 2018): ∂/∂KL_bj = ±γ/B, the sign of KL − C; the recon gradient is 1/B."""
    for kl_value, sign in ((3.0, 1.0), (0.5, -1.0)):
        kl_dim = torch.full((4, 2), kl_value, requires_grad=True)  # (B, d), rate 2·kl_value
        recon = torch.ones(4, requires_grad=True)
        loss = capacity_elbo(ElboTerms(recon=recon, kl_per_dim=kl_dim, mu=torch.zeros(4, 2)), capacity=2.0,
                             gamma=50.0)
        loss.total.backward()
        assert torch.allclose(kl_dim.grad, torch.full((4, 2), sign * 50.0 / 4))
        assert torch.allclose(recon.grad, torch.full((4,), 1 / 4))
        assert float(loss.kl.detach()) == pytest.approx(2 * kl_value)  # the loss still reports the true rate
    rule = TrainingObjective(ObjectiveConfig(capacity=2.0, gamma=50.0), 10)
    assert rule.weight(3.0) == 0.0 and rule.capacity(5.0) == pytest.approx(1.0)


def test_soft_kl_target_lowers_the_weight_below_the_target_and_restores_it_above():
    rule = TrainingObjective(ObjectiveConfig(beta=1.0, kl_target=5.0), 10)

    def step(rate: float) -> float:
        kl_dim = torch.full((2, 1), rate)
        rule.loss(ElboTerms(recon=torch.zeros(2), kl_per_dim=kl_dim, mu=torch.zeros(2, 1)), 1.0)
        return rule.weight(1.0)

    below = [step(1.0) for _ in range(10)]
    assert below == pytest.approx([1.05 ** -k for k in range(1, 11)])
    above = [step(9.0) for _ in range(20)]
    assert above[0] == pytest.approx(below[-1] * 1.05) and above[-1] == 1.0  # back to β, never above
    frozen = rule.weight(1.0)
    rule.loss(ElboTerms(recon=torch.zeros(2), kl_per_dim=torch.zeros(2, 1), mu=torch.zeros(2, 1)), 1.0, adapt=False)
    assert rule.weight(1.0) == frozen


def test_cures_that_set_the_kl_weight_exclude_each_other():
    for bad in (dict(capacity=5.0, free_bits=0.5), dict(capacity=5.0, warmup_epochs=3),
                dict(capacity=5.0, kl_schedule="cyclical"), dict(kl_target=3.0, free_bits=0.5),
                dict(kl_schedule="cyclical", warmup_epochs=2), dict(kl_schedule="sawtooth"), dict(ramp=0.0),
                dict(cycles=0), dict(aggressive="yes")):
        with pytest.raises(ConfigError):
            ObjectiveConfig(**bad)
    ObjectiveConfig(aggressive=True, kl_schedule="cyclical", free_bits=0.5)  # these combine


def test_aggressive_inner_loop_stops_when_the_encoder_loss_stops_improving(digits):
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=4, hidden=(32,))), 0)
    agg = T.AggressiveEncoder(model, 1e-3, digits.x_train, None)
    flat = [10.0, 9.0, 8.0] + [8.0] * 100  # block means: 10·10, 9, 8, 8 → stops after the 4th block
    calls = iter(flat[i // agg.CHECK] for i in range(10 ** 4))

    def loss_of(idx):
        p = next(iter(model.encoder.parameters()))
        value = torch.tensor(next(calls)) + 0 * p.sum()
        return Loss(total=value, recon=value, kl=value, kl_per_dim=value[None])

    agg.train_encoder(loss_of, len(digits.x_train), 16, torch.Generator().manual_seed(0))
    assert agg.inner_steps == 4 * agg.CHECK  # stopped after the block that did not improve, far before MAX


def test_aggressive_training_ends_when_mutual_information_stops_rising(digits, monkeypatch):
    values = iter([0.5, 0.9, 0.8, 2.0, 3.0])  # I(x;z) on the probe after epochs 1, 2, 3: falls after epoch 2
    monkeypatch.setattr(T, "mutual_information", lambda *a, **k: next(values))
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=4, hidden=(32,))), 0)
    hist = T.fit(model, digits, ObjectiveConfig(aggressive=True), TrainConfig(epochs=4, batch_size=256)).history
    assert [r["aggressive"] for r in hist] == [True, True, True, False]
    assert [r["probe_mutual_info"] for r in hist] == [0.5, 0.9, 0.8, None]
    steps = math.ceil(len(digits.x_train) / 256)
    assert all(0 < r["encoder_steps"] < T.AggressiveEncoder.MAX * steps for r in hist[:3])  # the loop stops early
    assert hist[3]["encoder_steps"] == 0 and hist[-1]["test_elbo"] < hist[0]["test_elbo"]


def test_cyclical_and_capacity_runs_record_their_schedule(digits):
    model = init_weights(VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=4, hidden=(32,))), 0)
    steps = math.ceil(len(digits.x_train) / 256)
    last = (steps - 1) / steps
    cyc = T.fit(model, digits, ObjectiveConfig(kl_schedule="cyclical", cycles=2, ramp=0.5),
                TrainConfig(epochs=4, batch_size=256)).history
    assert [r["kl_weight"] for r in cyc] == pytest.approx([cyclical_weight(e + last, 4, 2, 0.5) for e in range(4)])
    steps = math.ceil(len(digits.x_train) / 32)
    cap = T.fit(model, digits, ObjectiveConfig(capacity=6.0, capacity_epochs=2), TrainConfig(epochs=3, batch_size=32,
                                                                                               lr=3e-3)).history
    assert [r["capacity"] for r in cap] == pytest.approx([min(6.0, 3.0 * (e + 1 - 1 / steps)) for e in range(3)])
    assert abs(cap[-1]["test_kl"] - 6.0) < 1.0  # γ = 100 holds the rate near C


def test_a_sweep_holds_every_cure_side_by_side():
    spec = SweepSpec(betas=(0.5, 1.0), free_bits=(0.0, 0.5), warmups=(0.0,), cycles=(4,), capacities=(10.0, 20.0),
                     capacity_epochs=5, kl_targets=(3.0,), aggressive=True)
    objs = spec.settings()
    assert len(objs) == 4 + 2 + 2 + 2 + 2  # the grid, then cyclical, soft and aggressive per β, capacity once
    names = [run_name(o) for o in objs]
    assert len(set(names)) == len(names)
    assert names[0] == "beta0.5_fb0_wu0"  # the names of older sweeps' runs do not change
    assert {"beta1_fb0_wu0_cyc4r0.5", "beta0.5_fb0_wu0_cyc4r0.5", "beta1_fb0_wu0_cap10e5g100", "beta1_fb0_wu0_kt3",
            "beta0.5_fb0_wu0_aggr", "beta1_fb0_wu0_aggr"} <= set(names)
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    evals = [dict(beta=o.beta, free_bits=o.free_bits, warmup=o.warmup_epochs, objective=o.to_dict(), rate=r,
                  distortion=50 - r, test_elbo=50.0, active_units=1) for r, o in enumerate(objs)]
    legend = set(families(evals))  # the R–D plane's legend
    assert {"β-VAE", "λ=0.5", "cyclical ×4 (ramp 0.5)", "soft target 3 nats", "aggressive",
            "capacity 10 nats, γ=100", "capacity 20 nats, γ=100"} <= legend
    assert run_label(dict(beta=4, free_bits=0, warmup=2)) == "β=4, warm-up 2"  # an older manifest's entry
    with pytest.raises(ConfigError):
        parse_values("2, 2.5", "cycles", 1, 100, integers=True)
    assert parse_values("", "capacity", allow_empty=True) == ()


def test_cli_train_and_sweep_take_the_cures(tmp_path, capsys):
    out = tmp_path / "cyc.safetensors"
    assert main(["train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "32", "--epochs", "2",
                 "--kl-schedule", "cyclical", "--cycles", "2", "--ramp", "0.5", "--out", str(out)]) == 0
    from vae_core import checkpoint as C
    ck = C.load(out)
    assert ck.objective.kl_schedule == "cyclical" and ck.objective.cycles == 2
    assert main(["sweep", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--n-train", "300", "--n-test", "100", "--iwae-k", "0", "--capacity", "4", "--kl-target", "2",
                 "--json", "--out", str(tmp_path / "sw")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == ["beta1_fb0_wu0", "beta1_fb0_wu0_cap4e0g100", "beta1_fb0_wu0_kt2"]
    assert rows[1]["objective"]["capacity"] == 4.0
    assert main(["train", "--dataset", "digits", "--capacity", "5", "--free-bits", "1", "--out", str(tmp_path / "x")]) != 0
    assert "capacity annealing replaces the KL weight" in capsys.readouterr().err
