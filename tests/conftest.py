import os
import shutil
import tempfile

import pytest
import torch

# Every test, and every server a test starts, works in a throwaway workspace: nothing is written to the user's
# real $VAE_HOME, nor into the source tree.
WORKSPACE = tempfile.mkdtemp(prefix="vae-home-tests-")
os.environ["VAE_HOME"] = WORKSPACE

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
