"""Denoising score matching losses over a `score_fn`, and the loss of a noise-conditional classifier over a
`logits_fn`; they never see a network."""

from scorejax.losses.classifier import accuracy_at_time, noisy_classifier_loss
from scorejax.losses.dsm import score_matching_loss
from scorejax.losses.edm import edm_loss, edm_weight, get_edm_loss_fn, tweedie_denoiser
from scorejax.losses.registry import get_loss, get_loss_fn, loss_names, register_loss
from scorejax.losses.sde_losses import (
  continuous_dsm_loss,
  denoising_loss_at_time,
  discrete_dsm_loss,
  get_sde_loss_fn,
  level_dsm_loss,
)
from scorejax.losses.vdm import Denoiser, bound_terms, score_denoiser, vdm_loss

__all__ = [
  "register_loss",
  "get_loss",
  "get_loss_fn",
  "loss_names",
  "score_matching_loss",
  "continuous_dsm_loss",
  "discrete_dsm_loss",
  "level_dsm_loss",
  "denoising_loss_at_time",
  "get_sde_loss_fn",
  "edm_loss",
  "edm_weight",
  "tweedie_denoiser",
  "get_edm_loss_fn",
  "Denoiser",
  "bound_terms",
  "score_denoiser",
  "vdm_loss",
  "noisy_classifier_loss",
  "accuracy_at_time",
]
