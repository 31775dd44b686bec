import math

import pytest
import torch

from vae_core.config import ModelConfig, ObjectiveConfig
from vae_core.model import VAE
from vae_core.objectives import (ElboTerms, TrainingObjective, beta_elbo, elbo, elbo_terms, free_bits_elbo,
                                 gaussian_kl_per_dim, iwae_bound, kl_warmup_weight, log_likelihood, log_normal)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.tensor([[0.0, 1.5, -2.0, 0.3]])
    logvar = torch.tensor([[0.0, -1.0, 0.7, -3.0]])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(400_000, 4)  # (S, 4) samples of q
    log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())  # per dimension
    log_p = -0.5 * (math.log(2 * math.pi) + z ** 2)
    mc = (log_q - log_p).mean(0)
    closed = gaussian_kl_per_dim(mu, logvar)[0]
    assert torch.allclose(closed, mc, atol=0.02), (closed, mc)
    assert closed[0] == 0.0  # q = p gives exactly zero


def test_closed_form_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(5, 3), torch.ones(5, 3))
    assert torch.allclose(gaussian_kl_per_dim(mu, logvar), torch.distributions.kl_divergence(q, p), atol=1e-5)


def _model(likelihood="bernoulli", sigma=None, d=3):
    torch.manual_seed(1)
    return VAE(ModelConfig(image_shape=(1, 6, 6), latent_dim=d, hidden=(16,), likelihood=likelihood,
                           gaussian_sigma=sigma))


def test_bernoulli_log_likelihood_is_the_summed_bce():
    model, x = _model(), torch.rand(4, 1, 6, 6)
    logits = torch.randn(4, 1, 6, 6)
    p = torch.sigmoid(logits)
    manual = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(1)
    assert torch.allclose(log_likelihood(model, x, logits), manual, atol=1e-4)


@pytest.mark.parametrize("sigma", [None, 0.3])
def test_gaussian_log_likelihood_is_a_normal_density(sigma):
    model, x = _model("gaussian", sigma), torch.rand(4, 1, 6, 6)
    logits = torch.randn(4, 1, 6, 6)
    s = model.log_sigma.exp()
    ref = torch.distributions.Normal(torch.sigmoid(logits), s).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(log_likelihood(model, x, logits), ref, atol=1e-4)


def test_elbo_parts_add_up():
    model, x = _model(), torch.rand(8, 1, 6, 6)
    terms = elbo_terms(model, x)
    loss = elbo(terms)
    assert torch.allclose(loss.total, terms.recon.mean() + terms.kl.mean())
    assert torch.allclose(loss.kl_per_dim.sum(), loss.kl)
    assert torch.allclose(loss.neg_elbo, loss.total)
    assert torch.allclose(terms.neg_elbo, terms.recon + terms.kl_per_dim.sum(1))


def test_beta_one_is_the_plain_elbo_and_beta_scales_only_the_kl():
    model, x = _model(), torch.rand(8, 1, 6, 6)
    terms = elbo_terms(model, x)
    assert torch.equal(beta_elbo(terms, 1.0).total, elbo(terms).total)
    assert torch.equal(TrainingObjective(ObjectiveConfig(), 10).loss(terms, 3.0).total, elbo(terms).total)
    b4 = beta_elbo(terms, 4.0)
    assert torch.allclose(b4.total, b4.recon + 4 * b4.kl)
    assert torch.equal(b4.kl, elbo(terms).kl)  # the reported KL is the true one


def test_free_bits_zero_the_gradient_only_below_lambda():
    mu = torch.tensor([[0.1, 2.0], [0.2, 2.2]], requires_grad=True)  # dim 0 KL ≈ 0.01, dim 1 KL ≈ 2.2
    logvar = torch.zeros(2, 2, requires_grad=True)
    terms = ElboTerms(recon=torch.zeros(2), kl_per_dim=gaussian_kl_per_dim(mu, logvar), mu=mu)
    loss = free_bits_elbo(terms, free_bits=0.5)
    loss.total.backward()
    assert torch.all(mu.grad[:, 0] == 0) and torch.all(logvar.grad[:, 0] == 0)
    assert torch.all(mu.grad[:, 1] != 0)
    assert torch.allclose(loss.total, 0.5 + terms.kl_per_dim[:, 1].mean())  # λ counted for the floored dim
    assert torch.allclose(loss.kl, terms.kl_per_dim.mean(0).sum())  # reported KL is the true KL


def test_free_bits_floor_is_on_the_batch_mean_not_per_image():
    # one image far above λ, one below: the batch mean is above λ, so the dimension keeps its gradient
    mu = torch.tensor([[3.0], [0.0]], requires_grad=True)
    terms = ElboTerms(recon=torch.zeros(2), kl_per_dim=gaussian_kl_per_dim(mu, torch.zeros(2, 1)), mu=mu)
    free_bits_elbo(terms, free_bits=1.0).total.backward()
    assert mu.grad[0, 0] != 0


def test_kl_warmup_is_linear_then_one():
    assert kl_warmup_weight(0, 10) == 0.0
    assert kl_warmup_weight(2.5, 10) == 0.25
    assert kl_warmup_weight(10, 10) == 1.0 and kl_warmup_weight(50, 10) == 1.0
    assert kl_warmup_weight(0, 0) == 1.0
    model, x = _model(), torch.rand(8, 1, 6, 6)
    terms = elbo_terms(model, x)
    half = TrainingObjective(ObjectiveConfig(beta=2.0, warmup_epochs=4), 10).loss(terms, 1.0)
    assert torch.allclose(half.total, half.recon + 0.5 * half.kl)


def test_log_normal_matches_torch():
    z, mu, lv = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * lv)).log_prob(z).sum(-1)
    assert torch.allclose(log_normal(z, mu, lv), ref, atol=1e-5)


def test_iwae_is_above_the_elbo_and_grows_with_k(trained_digits, digits):
    model, x = trained_digits, digits.x_test
    torch.manual_seed(0)
    with torch.no_grad():
        elbo_mc = torch.stack([-elbo_terms(model, x).neg_elbo for _ in range(20)]).mean(0)  # (N,)
    torch.manual_seed(0)
    bounds = {k: iwae_bound(model, x, k=k).mean().item() for k in (1, 10, 100, 500)}
    # k = 1 is an unbiased estimate of the ELBO
    assert abs(bounds[1] - elbo_mc.mean().item()) < 0.3
    assert bounds[10] > elbo_mc.mean().item()
    assert bounds[1] <= bounds[10] <= bounds[100] + 0.02 <= bounds[500] + 0.04
    assert bounds[500] - elbo_mc.mean().item() < 5  # a 2-D posterior is close to Gaussian: a modest gap


def test_iwae_chunking_does_not_change_the_value(trained_digits, digits):
    x = digits.x_test[:50]
    torch.manual_seed(3)
    a = iwae_bound(trained_digits, x, k=40, chunk=40)
    torch.manual_seed(3)
    b = iwae_bound(trained_digits, x, k=40, chunk=7)
    assert a.shape == (50,) and torch.isfinite(b).all()
    assert abs(a.mean() - b.mean()) < 0.3  # different draws, same estimator


def test_masked_convolutions_make_the_pixelcnn_decoder_causal():
    from vae_core.config import ModelConfig
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 6, 5), latent_dim=2, hidden=(8,), autoregressive=True,
                            ar_channels=4, ar_layers=3))
    x = torch.rand(32, 1, 6, 5, requires_grad=True)  # many inputs, so no dead ReLU hides a dependency
    z = torch.randn(32, 2)
    logits = model.decode(z, None, x)
    h, w = 6, 5
    for i in range(h):
        for j in range(w):
            grad, = torch.autograd.grad(logits[:, 0, i, j].sum(), x, retain_graph=True)
            dep = grad[:, 0].abs().sum(0) > 0  # (H, W): which input pixels this output depends on
            flat = dep.flatten()
            pos = i * w + j
            assert not flat[pos:].any(), f"pixel ({i},{j}) depends on itself or a later pixel"
            if j > 0:
                assert dep[i, j - 1], f"pixel ({i},{j}) ignores its left neighbour"
            if i > 0:
                assert dep[i - 1, j], f"pixel ({i},{j}) ignores the pixel above"


def test_autoregressive_generation_and_likelihood_agree():
    from vae_core.config import ModelConfig
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,), autoregressive=True,
                            ar_channels=4, ar_layers=1))
    z = torch.randn(3, 2)
    x = model.sample_images(z)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    # generating pixel by pixel uses exactly the conditionals the teacher-forced decoder scores
    mean = model.decode_mean(z)
    probs = torch.sigmoid(model.decode(z, None, mean))
    assert torch.allclose(mean, probs, atol=1e-5)
