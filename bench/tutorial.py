"""The seed tutorial's training loop, as written there (pytorch/examples vae): a torchvision dataset through a
per-item DataLoader with ToTensor, batch 128, MLP 784-400-d, BCE summed over pixels, Adam 1e-3. Kept only
as the baseline the benchmarks compare against."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .common import torchvision_fashion_root


class TutorialVAE(nn.Module):
    def __init__(self, latent_dim: int = 2, hidden: int = 400):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def tutorial_loss(x_recon, x, mu, logvar):
    recon = F.binary_cross_entropy(x_recon, x.view(-1, 784), reduction="sum")
    return recon + -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def tutorial_loader(n: int | None = None, batch_size: int = 128):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    ds = datasets.FashionMNIST(str(torchvision_fashion_root()), train=True, download=False,
                               transform=transforms.ToTensor())
    if n is not None and n < len(ds):
        ds = Subset(ds, range(n))
    return DataLoader(ds, batch_size=batch_size, shuffle=True)


def train_tutorial(model, loader, seconds: float | None = None, epochs: int = 1) -> tuple[float, int]:
    """The tutorial's loop; returns (wall seconds, epochs run). With `seconds`, stops when the budget is spent."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    done = 0
    for _ in range(epochs if seconds is None else 10**6):
        for data, _ in loader:
            opt.zero_grad()
            x_recon, mu, logvar = model(data)
            loss = tutorial_loss(x_recon, data, mu, logvar)
            loss.backward()
            opt.step()
            if seconds is not None and time.perf_counter() - start > seconds:
                return time.perf_counter() - start, done
        done += 1
    return time.perf_counter() - start, done


def to_vae_core(model: TutorialVAE):
    """The same weights as a `vae_core` VAE (tutorial preset), so both are evaluated by the same code."""
    from vae_core.config import tutorial_preset
    from vae_core.model import VAE

    vae = VAE(tutorial_preset(latent_dim=model.fc_mu.out_features).model)
    with torch.no_grad():
        vae.encoder.body[0].load_state_dict(model.fc1.state_dict())
        vae.encoder.head.weight.copy_(torch.cat([model.fc_mu.weight, model.fc_logvar.weight]))
        vae.encoder.head.bias.copy_(torch.cat([model.fc_mu.bias, model.fc_logvar.bias]))
        vae.decoder.body[0].load_state_dict(model.fc3.state_dict())
        vae.decoder.head.load_state_dict(model.fc4.state_dict())
    return vae.eval()
