import os
import shutil
import tempfile

import pytest
import torch

# Every test, and every server a test starts, works in a throwaway workspace: nothing is written to the user's
# real $VAE_HOME, nor into the source tree.
WORKSPACE = tempfile.mkdtemp(prefix="vae-home-tests-")
os.environ["VAE_HOME"] = WORKSPACE

from vae_core import store  # noqa: E402
from vae_core.checkpoint import Checkpoint  # noqa: E402
from vae_core.config import ModelConfig, ObjectiveConfig, TrainConfig  # noqa: E402
from vae_core.data import load_digits  # noqa: E402
from vae_core.model import VAE  # noqa: E402
from vae_core.train import fit  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _throwaway_workspace():
    yield
    shutil.rmtree(WORKSPACE, ignore_errors=True)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def trained_digits(digits):
    """A small 2-D VAE trained briefly on digits, shared by tests that need a sensible model."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=2, hidden=(128, 64)))
    fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=15, batch_size=64))
    return model.eval()


@pytest.fixture(scope="session")
def cvae_5d(digits):
    """A tiny conditional VAE with a 5-D latent, trained for one epoch: the d > 2 and CVAE paths of the pages
    (PCA and UMAP maps, traversals, a grid per class, an image of yours placed on the PCA map)."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_shape=digits.image_shape, latent_dim=5, hidden=(32,), n_classes=10))
    result = fit(model, digits, ObjectiveConfig(), TrainConfig(epochs=1, batch_size=64))
    return Checkpoint(model=model.eval(), dataset=digits.info(), history=result.history)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, empty workspace (and so a fresh run service) for one test."""
    monkeypatch.setenv("VAE_HOME", str(tmp_path / "home"))
    return store.Workspace()
