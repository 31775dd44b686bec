"""The linear-Gaussian VAE and its closed form, probabilistic PCA (Tipping & Bishop 1999; Lucas et al. 2019)."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from vae_core import checkpoint as C
from vae_core.__main__ import main
from vae_core.config import ConfigError, ModelConfig
from vae_core.data import Dataset
from vae_core.metrics import active_units, evaluate_elbo, generator
from vae_core.model import VAE, init_weights
from vae_core.objectives import elbo_terms, log_likelihood
from vae_core.ppca import analytic_elbo, closed_form, fit_linear_vae, moments, ppca_check

SIGMA2S = (0.05, 0.1, 0.2)
KEYS = {"sigma2", "au_closed_form", "au_trained", "rate_closed_form", "rate_trained", "neg_elbo_trained",
        "neg_loglik_closed_form"}


@pytest.fixture(scope="module")
def rows(digits):
    return ppca_check(digits, SIGMA2S, 64)


@pytest.fixture(scope="module")
def fitted(digits):
    """The linear VAE at σ² = 0.1, d = 64, fitted on the digits' training set."""
    return fit_linear_vae(digits.x_train, 0.1, 64)


def _x64(digits) -> np.ndarray:
    return digits.x_train.flatten(1).double().numpy()  # (N, 64)


def test_ppca_check_meets_the_closed_form_on_digits(rows):
    """The issue's check (|ΔAU| ≤ 1, rate within 10 %), and in fact equality: the optimum is reached."""
    assert [r["sigma2"] for r in rows] == list(SIGMA2S)
    assert [r["au_closed_form"] for r in rows] == [18, 12, 6]
    for r in rows:
        assert KEYS <= set(r)
        assert abs(r["au_trained"] - r["au_closed_form"]) <= 1
        assert abs(r["rate_trained"] / r["rate_closed_form"] - 1) <= 0.10
        assert r["au_trained"] == r["au_closed_form"] == r["au_closed_form_at_threshold"]
        assert r["rate_trained"] == pytest.approx(r["rate_closed_form"], rel=1e-6)


def test_neg_elbo_at_the_optimum_is_the_ppca_negative_log_likelihood(rows):
    for r in rows:
        assert abs(r["neg_elbo_trained"] - r["neg_loglik_closed_form"]) < 1e-6


def test_images_too_large_for_a_pixel_covariance_are_refused():
    with pytest.raises(ValueError, match="at most 4096 values per image"):
        moments(torch.zeros(2, 3, 64, 64))


def test_eigenvalues_are_the_maximum_likelihood_covariance_ones(digits):
    """moments' S is the 1/N covariance: scikit-learn's PCA variances are the 1/(N − 1) ones."""
    _, cov = moments(digits.x_train)
    lam = np.sort(torch.linalg.eigvalsh(cov).numpy())[::-1]
    n = len(digits.x_train)
    pca = PCA().fit(_x64(digits))
    np.testing.assert_allclose(lam, pca.explained_variance_ * (n - 1) / n, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("sigma2, latent_dim", [(0.05, 64), (0.1, 64), (0.2, 64), (0.05, 4)])
def test_closed_form_against_the_ppca_density_and_the_exact_posterior(digits, sigma2, latent_dim):
    """Independently of closed_form's formulas: −log N(x; m, WWᵀ + σ²I) averaged over the images with the
    maximum-likelihood W = U(Λ − σ²I)^½ (Tipping & Bishop 1999), and the mean KL of the exact posterior
    N(M⁻¹Wᵀ(x − m), σ²M⁻¹), M = WᵀW + σ²I, from its full covariance."""
    x = torch.from_numpy(_x64(digits))  # (N, D)
    m = x.mean(0)
    lam, U = np.linalg.eigh(np.cov(x.numpy(), rowvar=False, bias=True))
    lam, U = torch.from_numpy(lam[::-1].copy()), torch.from_numpy(U[:, ::-1].copy())
    q = int((lam[:latent_dim] > sigma2).sum())
    W = U[:, :q] * (lam[:q] - sigma2).sqrt()  # (D, q)
    cov = W @ W.T + sigma2 * torch.eye(len(m), dtype=torch.float64)
    nll = -torch.distributions.MultivariateNormal(m, cov).log_prob(x).mean().item()
    eye = torch.eye(q, dtype=torch.float64)  # (q, q)
    M = W.T @ W + sigma2 * eye  # (q, q)
    post_mean = torch.linalg.solve(M, W.T @ (x - m).T).T  # (N, q)
    posterior = torch.distributions.MultivariateNormal(post_mean, sigma2 * torch.linalg.inv(M))
    prior = torch.distributions.MultivariateNormal(torch.zeros(q, dtype=torch.float64), eye)
    rate = torch.distributions.kl_divergence(posterior, prior).mean().item()

    exact = closed_form(lam.numpy(), sigma2, latent_dim, len(x))
    assert exact["active"] == q
    assert exact["neg_loglik"] == pytest.approx(nll, abs=1e-9)
    assert exact["rate"] == pytest.approx(rate, abs=1e-9)


def test_the_fitted_model_is_the_ppca_maximum_likelihood_model(digits, fitted):
    """Its own marginal p(x) = N(b, WWᵀ + σ²I) has the closed-form likelihood, and its ELBO is tight."""
    W = fitted.decoder.linear.weight.detach().double()  # (D, d)
    b = fitted.decoder.linear.bias.detach().double()  # (D,)
    x = torch.from_numpy(_x64(digits))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + 0.1 * torch.eye(len(b), dtype=torch.float64))
    nll = -marginal.log_prob(x).mean().item()
    lam = torch.linalg.eigvalsh(moments(digits.x_train)[1]).numpy()
    exact = closed_form(lam, 0.1, 64, len(x))
    assert nll == pytest.approx(exact["neg_loglik"], abs=1e-6)
    assert analytic_elbo(fitted, digits.x_train)["neg_elbo"] == pytest.approx(nll, abs=1e-6)
    gram = W.T @ W  # (d, d) orthogonal columns at the optimum (Lucas et al. 2019)
    assert (gram - torch.diag(torch.diagonal(gram))).abs().max() < 1e-4


def test_fewer_latents_than_active_directions_keeps_the_largest(digits):
    model = fit_linear_vae(digits.x_train, 0.05, 4)
    lam = torch.linalg.eigvalsh(moments(digits.x_train)[1]).numpy()
    exact = closed_form(lam, 0.05, 4, len(digits.x_train))
    trained = analytic_elbo(model, digits.x_train)
    assert exact["active"] == active_units(model.encode(digits.x_train)[0].detach()) == 4
    assert trained["kl"] == pytest.approx(exact["rate"], rel=1e-6)
    assert trained["neg_elbo"] == pytest.approx(exact["neg_loglik"], abs=1e-6)


def test_the_active_unit_threshold_misses_eigenvalues_just_above_sigma2():
    """Var_x(μᵢ) = 1 − σ²/λᵢ at the optimum: λ = 1.005σ² is active but its variance, 0.005, is under 0.01."""
    res = closed_form(np.array([2.0, 0.1005, 0.0102, 0.05]), 0.1, 4, 1000)
    assert res["active"] == 2 and res["active_at_threshold"] == 1
    assert res["rate"] == pytest.approx(0.5 * math.log(20) + 0.5 * math.log(1.005))


def test_a_trained_model_s_active_units_follow_the_threshold(digits):
    """Two pixels with variances 0.2 and 0.1005 at σ² = 0.1: both latents are active (rate and −ELBO reach the
    closed form), but the second one's code variance, 1 − 0.1/0.1005 ≈ 0.005, is under the 0.01 threshold."""
    z = np.random.default_rng(0).standard_normal((4000, 2))
    x = (z - z.mean(0)) / z.std(0) * np.sqrt([0.2, 0.1005]) + 0.5  # (N, 2), 1/N variances exactly these
    x = torch.tensor(x.reshape(-1, 1, 1, 2), dtype=torch.float32)
    (row,) = ppca_check(Dataset("two pixels", x, None, x[:10], None), [0.1], 2)
    assert row["au_closed_form"] == 2 and row["au_trained"] == row["au_closed_form_at_threshold"] == 1
    assert row["rate_trained"] == pytest.approx(row["rate_closed_form"], rel=1e-5)
    assert row["neg_elbo_trained"] == pytest.approx(row["neg_loglik_closed_form"], abs=1e-6)


def test_analytic_elbo_matches_the_repo_s_elbo(digits):
    """For a linear VAE away from the optimum, against the training path (objectives.elbo_terms: reparameterised
    samples through VAE.mean_of and log_likelihood): exactly at z = μ plus the variance term
    E_q‖x − Wz − b‖² − ‖x − Wμ − b‖² = Σⱼ sⱼ‖Wⱼ‖², and within 4 standard errors of 50 samples per image."""
    cfg = ModelConfig(image_shape=(1, 8, 8), latent_dim=5, architecture="linear", likelihood="gaussian",
                      gaussian_sigma=0.4)
    model = init_weights(VAE(cfg), 3).double()
    with torch.no_grad():
        model.encoder.logvar.copy_(torch.linspace(-2.0, 1.0, 5))
    x = digits.x_train.double()
    exact = analytic_elbo(model, x)
    with torch.no_grad():
        mu, logvar = model.encode(x)  # (N, d)
        at_mean = -log_likelihood(model, x, model.decode(mu)).mean().item()
        spread = (logvar[0].exp() * model.decoder.linear.weight.pow(2).sum(0)).sum().item() / (2 * 0.4**2)
        gen = generator(0, x.device)
        recon = torch.stack([elbo_terms(model, x, generator=gen).recon for _ in range(50)])  # (50, N)
        kl = elbo_terms(model, x, generator=gen).kl_per_dim.mean(0)  # (d,)
    assert exact["recon"] == pytest.approx(at_mean + spread, rel=1e-7)  # the model's log σ is a float32 buffer
    within = (recon - recon.mean(0)).std().item() / math.sqrt(recon.numel())  # standard error of the mean
    assert abs(recon.mean().item() - exact["recon"]) < 4 * within
    np.testing.assert_allclose(kl.numpy(), exact["kl_per_dim"], rtol=1e-12)
    assert evaluate_elbo(model, x)["kl"] == pytest.approx(exact["kl"], rel=1e-12)


def test_the_linear_decoder_mean_is_the_identity_not_a_sigmoid(fitted, digits):
    W, b = fitted.decoder.linear.weight.detach(), fitted.decoder.linear.bias.detach()
    z = torch.randn(7, 64, generator=torch.Generator().manual_seed(0)) * 3  # (7, d)
    mean = fitted.decode_mean(z)  # (7, 1, 8, 8)
    torch.testing.assert_close(mean.flatten(1), z @ W.T + b)
    assert mean.min() < 0 or mean.max() > 1  # not squashed into [0, 1]
    x = digits.x_test[:5]
    mu, _ = fitted.encode(x)
    torch.testing.assert_close(fitted.reconstruct(x).flatten(1), mu @ W.T + b)
    sigma = fitted.config.gaussian_sigma
    ref = torch.distributions.Normal(mean, sigma).log_prob(x[:1].expand_as(mean)).flatten(1).sum(1)
    torch.testing.assert_close(log_likelihood(fitted, x[:1].expand_as(mean), fitted.decode(z)), ref)


def test_a_fitted_model_is_a_normal_checkpoint(tmp_path, digits, fitted):
    path = C.save(tmp_path / "ppca.safetensors", C.Checkpoint(model=fitted, dataset=digits.info()))
    loaded = C.load(path)
    assert loaded.config == fitted.config and loaded.config.architecture == "linear"
    assert analytic_elbo(loaded.model, digits.x_train) == analytic_elbo(fitted, digits.x_train)


def test_the_cli_prints_json_rows_and_a_table(capsys):
    assert main(["ppca-check", "--dataset", "digits", "--sigma2", "0.2,0.3", "--latent-dim", "8", "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["sigma2"] for r in out] == [0.2, 0.3] and all(KEYS <= set(r) for r in out)
    assert [r["au_trained"] for r in out] == [r["au_closed_form"] for r in out] == [6, 4]
    assert main(["ppca-check", "--sigma2", "0.3", "--latent-dim", "8"]) == 0
    table = capsys.readouterr().out
    assert "AU closed" in table and "rate trained" in table
    assert main(["ppca-check", "--sigma2", "0"]) == 2
    assert "σ²" in capsys.readouterr().err


def test_the_train_command_trains_a_linear_vae(tmp_path, capsys):
    out = tmp_path / "linear.safetensors"
    assert main(["train", "--dataset", "digits", "--arch", "linear", "--likelihood", "gaussian", "--sigma", "0.3",
                 "--latent-dim", "8", "--epochs", "2", "--out", str(out)]) == 0
    ckpt = C.load(out)
    assert ckpt.config.architecture == "linear" and ckpt.config.gaussian_sigma == 0.3
    assert math.isfinite(ckpt.history[-1]["test_elbo"])
    assert main(["train", "--dataset", "digits", "--arch", "linear", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "fixed gaussian_sigma" in capsys.readouterr().err


@pytest.mark.parametrize("kw, message", [
    (dict(), "Gaussian likelihood with a fixed gaussian_sigma"),
    (dict(likelihood="gaussian"), "fixed gaussian_sigma"),
    (dict(likelihood="bernoulli", gaussian_sigma=0.3), "Gaussian likelihood"),
    (dict(likelihood="gaussian", gaussian_sigma=0.3, autoregressive=True), "cannot be autoregressive"),
    (dict(likelihood="gaussian", gaussian_sigma=0.3, n_classes=10), "unconditional"),
])
def test_linear_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(image_shape=(1, 8, 8), architecture="linear", **kw)
