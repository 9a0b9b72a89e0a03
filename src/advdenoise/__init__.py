"""Adversarial robustness of a CT-scan classifier and autoencoder denoising defences."""

__version__ = "0.1.0"
