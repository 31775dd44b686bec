import pytest
import torch

from vae_core.config import ConfigError, ModelConfig, ObjectiveConfig, TrainConfig, tutorial_preset
from vae_core.model import VAE


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 5, 7)])
@pytest.mark.parametrize("d", [1, 2, 64])
def test_shapes(arch, shape, d):
    model = VAE(ModelConfig(image_shape=shape, latent_dim=d, architecture=arch, hidden=(32,), channels=(8, 16)))
    x = torch.rand(4, *shape)
    logits, mu, logvar = model(x)
    assert logits.shape == (4, *shape)
    assert mu.shape == logvar.shape == (4, d)
    img = model.decode_mean(torch.randn(6, d))
    assert img.shape == (6, *shape) and img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_conditional_vae_uses_the_label(arch):
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, architecture=arch, hidden=(16,), n_classes=3))
    z = torch.zeros(2, 2)
    out = model.decode(z, torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="labels"):
        model.decode(z)


def test_default_is_the_issue_mlp_784_512_256_2():
    model = VAE(ModelConfig())
    linears = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 256), (256, 4)]


def test_tutorial_preset_is_784_400_d():
    p = tutorial_preset()
    model = VAE(p.model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 400), (400, 4), (2, 400), (400, 784)]
    assert p.train.lr == 1e-3 and p.train.batch_size == 128 and p.model.likelihood == "bernoulli"


def test_reparameterize_has_the_right_moments():
    torch.manual_seed(0)
    mu, logvar = torch.full((100_000, 1), 2.0), torch.full((100_000, 1), 2 * torch.log(torch.tensor(0.5)))
    z = VAE.reparameterize(mu, logvar)
    assert abs(z.mean() - 2.0) < 0.01 and abs(z.std() - 0.5) < 0.01


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(latent_dim=65), dict(architecture="rnn"),
                                 dict(likelihood="poisson"), dict(image_shape=(1, 28)), dict(hidden=()),
                                 dict(gaussian_sigma=-1.0), dict(latent_dim=True)])
def test_model_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**bad)


def test_configs_round_trip_and_are_hashable():
    cfg = ModelConfig(latent_dim=5, hidden=(64, 32))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) == hash(ModelConfig.from_dict(cfg.to_dict()))
    assert ObjectiveConfig.from_dict({"beta": 2.0}) == ObjectiveConfig(beta=2.0)
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"epochs": 2, "rm -rf": 1})
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
