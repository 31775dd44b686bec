"""vae_core: the VAE latent-space explorer's engine. Pure Python + PyTorch; never imports streamlit."""

__version__ = "0.1.0"
