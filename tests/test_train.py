import math
import threading

import pytest
import torch

from vae_core.config import FIRST_RUN_STEPS, ModelConfig, ObjectiveConfig, TrainConfig, recommended_training
from vae_core.metrics import evaluate_elbo
from vae_core.model import VAE, init_weights
from vae_core.runs import build_model
from vae_core.train import fit


def small(digits, **kw):
    torch.manual_seed(0)
    return VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(64,), **kw))


def test_training_on_digits_lowers_the_test_loss(digits):
    model = small(digits)
    before = evaluate_elbo(model, digits.x_test)["elbo"]
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=8, batch_size=64))
    hist = result.history
    assert result.stop_reason is None and len(hist) == 8
    assert hist[-1]["test_elbo"] < before - 10
    assert hist[-1]["train_elbo"] < hist[0]["train_elbo"]
    for rec in hist:
        assert abs(rec["test_elbo"] - rec["test_recon"] - rec["test_kl"]) < 1e-6
        assert abs(sum(rec["kl_per_dim"]) - rec["test_kl"]) < 1e-4
        assert 0 <= rec["active_units"] <= 2 and rec["seconds"] > 0
    # the history's test numbers are the model's: evaluating afterwards gives the same figure
    assert abs(evaluate_elbo(model, digits.x_test)["elbo"] - hist[-1]["test_elbo"]) < 1e-4


def test_same_seed_same_history(digits):
    runs = []
    for _ in range(2):
        model = small(digits)
        runs.append(fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=2, seed=7)).history)
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1])


def test_callbacks_carry_the_epoch_and_stop_keeps_the_last_complete_epoch(digits):
    model = small(digits)
    steps, epochs = [], []
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=3, batch_size=500),
                 on_step=lambda p: steps.append((p.epoch, p.step, p.steps, p.fraction, p.loss.total.item())),
                 on_epoch=lambda rec, m: epochs.append(rec["epoch"]),
                 should_stop=lambda: len(steps) >= 5)
    assert epochs == [1] and len(steps) == 5 and steps[0][2] == 3  # 1438 images / 500 = 3 steps
    assert [s[:2] for s in steps] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [round(s[3], 4) for s in steps] == [round(f, 4) for f in (1 / 9, 2 / 9, 3 / 9, 4 / 9, 5 / 9)]
    assert "stopped by the user during epoch 2" in result.stop_reason and not result.diverged
    assert "after epoch 1" in result.stop_reason
    # the kept weights are the ones the history reports: epoch 1's, not the two steps into epoch 2
    assert evaluate_elbo(model, digits.x_test)["elbo"] == pytest.approx(result.history[-1]["test_elbo"], abs=1e-4)


def test_stop_before_the_first_epoch_keeps_the_initial_weights(digits):
    model = small(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=3, batch_size=500), should_stop=lambda: True)
    assert result.history == [] and "before any epoch was complete" in result.stop_reason
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_history_does_not_depend_on_other_threads_drawing_random_numbers(digits):
    """Every random draw of `fit` comes from its own generator: a thread hammering torch's global generator (as
    another session's run or a page would) changes nothing."""
    alone = fit(small(digits), digits, ObjectiveConfig(), TrainConfig(epochs=2, seed=3, batch_size=64)).history
    model = small(digits)
    stop = threading.Event()

    def noise():
        while not stop.is_set():
            torch.randn(1000)
            torch.manual_seed(int(torch.randint(0, 1000, ())))

    t = threading.Thread(target=noise)
    t.start()
    try:
        busy = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=2, seed=3, batch_size=64)).history
    finally:
        stop.set()
        t.join()
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]  # noqa: E731
    assert strip(alone) == strip(busy)


def test_divergence_stops_and_keeps_finite_weights(digits):
    model = small(digits)
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=5, lr=10.0))
    assert result.diverged and "diverged" in result.stop_reason and "learning rate" in result.stop_reason
    assert all(torch.isfinite(p).all() for p in model.parameters())
    mu, logvar = model.encode(digits.x_test[:10])
    assert torch.isfinite(mu).all()  # the kept weights are usable


def test_conv_gaussian_and_conditional_models_train(digits):
    for kw in (dict(architecture="conv", channels=(8, 16)), dict(likelihood="gaussian"),
               dict(likelihood="gaussian", gaussian_sigma=0.2), dict(n_classes=10)):
        model = small(digits, **kw)
        hist = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=3, batch_size=64)).history
        assert hist[-1]["test_elbo"] < hist[0]["test_elbo"], kw


def test_beta_free_bits_and_warmup_change_the_training(digits):
    ref = fit(small(digits), digits, ObjectiveConfig(), TrainConfig(epochs=3)).history[-1]
    big_beta = fit(small(digits), digits, ObjectiveConfig(beta=8.0), TrainConfig(epochs=3)).history[-1]
    assert big_beta["test_kl"] < ref["test_kl"]
    warm = fit(small(digits), digits, ObjectiveConfig(warmup_epochs=4), TrainConfig(epochs=2)).history
    steps = math.ceil(len(digits.x_train) / TrainConfig().batch_size)
    assert [r["kl_weight"] for r in warm] == pytest.approx([(e + (steps - 1) / steps) / 4 for e in (0, 1)])
    fb = fit(small(digits), digits, ObjectiveConfig(beta=8.0, free_bits=1.0), TrainConfig(epochs=3)).history[-1]
    assert fb["test_kl"] > big_beta["test_kl"]


def test_mutual_information_is_bounded_by_log_n(trained_digits, digits):
    import math

    from vae_core.metrics import mutual_information
    x = digits.x_test
    mi = mutual_information(trained_digits, x)
    assert 0 < mi <= math.log(len(x))
    # E_x KL(q(z|x) ‖ p(z)) = I(x; z) + KL(q(z) ‖ p(z)) ≥ I(x; z): the rate bounds the information
    kl = evaluate_elbo(trained_digits, x)["kl"]
    assert 0.5 * kl < mi <= kl + 0.05
    for n in (2, 10, 50):
        assert mutual_information(trained_digits, x[:n]) <= math.log(n) + 1e-9


def test_mutual_information_of_a_collapsed_encoder_is_near_zero(digits):
    import math

    from vae_core.metrics import mutual_information
    model = small(digits)
    with torch.no_grad():  # encoder outputs μ = 0, log σ² = 0 for every x: q(z|x) = p(z)
        for p in model.encoder.head.parameters():
            p.zero_()
    assert abs(mutual_information(model, digits.x_test)) < 0.05
    assert mutual_information(model, digits.x_test) <= math.log(len(digits.x_test))


def test_initial_weights_depend_on_the_seed_only(digits):
    cfg = ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(32,), architecture="conv", channels=(4, 8))
    torch.manual_seed(1)
    a = init_weights(VAE(cfg), 5).state_dict()
    torch.manual_seed(2)  # another state of the global generator
    b = init_weights(VAE(cfg), 5).state_dict()
    c = init_weights(VAE(cfg), 6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    w = a["encoder.head.weight"]  # PyTorch's default scheme: U(−1/√fan_in, 1/√fan_in) for a = √5
    assert w.abs().max() <= 1 / w.shape[1] ** 0.5 and w.std() > 0.5 / (3 * w.shape[1]) ** 0.5


def test_recommended_training_gives_every_dataset_enough_steps_and_batches():
    for n in (10, 100, 1438, 5000, 60000):
        cfg = recommended_training(n)
        steps_per_epoch = -(-n // cfg.batch_size)
        assert 10 <= cfg.epochs <= 100 and cfg.batch_size <= n
        assert steps_per_epoch * cfg.epochs >= min(FIRST_RUN_STEPS, 100 * steps_per_epoch)
        assert steps_per_epoch >= 20 or cfg.batch_size == min(32, n)
    assert (recommended_training(1438).batch_size, recommended_training(60000).batch_size) == (64, 384)


def test_the_defaults_fitted_to_the_digits_keep_both_latent_units_where_fixed_defaults_collapse(digits):
    """The 'first run that works': d = 2 on the 8×8 digits with the page's old fixed defaults (batch 384, 10 epochs:
    40 steps) ends with the posterior collapsed; the size-fitted defaults keep both units active."""
    model_cfg = ModelConfig(image_shape=digits.image_shape, latent_dim=2)
    fixed = build_model(model_cfg, 0)
    old = fit(fixed, digits, ObjectiveConfig(), TrainConfig(epochs=10, batch_size=384)).history[-1]
    fitted = build_model(model_cfg, 0)
    new = fit(fitted, digits, ObjectiveConfig(), recommended_training(len(digits.x_train))).history[-1]
    assert old["active_units"] == 0 and old["test_kl"] < 0.05
    assert new["active_units"] == 2 and new["test_elbo"] < old["test_elbo"] - 2
