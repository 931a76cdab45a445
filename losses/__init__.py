"""Denoising score matching losses over a `score_fn`; they never see a network."""
from scorejax.losses.dsm import score_matching_loss, multiscale_dsm_loss, sample_noise_levels
from scorejax.losses.sde_losses import (continuous_dsm_loss, smld_loss, ddpm_loss, denoising_loss_at_time,
                               get_sde_loss_fn)

__all__ = ["score_matching_loss", "multiscale_dsm_loss", "sample_noise_levels",
           "continuous_dsm_loss", "smld_loss", "ddpm_loss", "denoising_loss_at_time", "get_sde_loss_fn"]
