"""Denoising score matching losses over a `score_fn`; they never see a network."""
from losses.dsm import score_matching_loss, multiscale_dsm_loss, sample_noise_levels

__all__ = ["score_matching_loss", "multiscale_dsm_loss", "sample_noise_levels"]
