"""Layers shared by the networks."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def noise_level_embedding(
  c_noise: jnp.ndarray, dim: int, max_period: float = 10_000.0, scale: float = 250.0
) -> jnp.ndarray:
  """Sinusoidal features of `scale * c_noise`, `c_noise = log(sigma)`, shape `(batch, dim)`.

  Conditioning on `log sigma` (rather than sigma) spreads geometric noise levels
  evenly over the embedding, as in NCSN++ (Song et al. 2021, App. H). log(sigma) lies in roughly [-7, 5];
  `scale = 1000/4` maps it to DDPM-like time-step magnitudes. A label already of that magnitude (score_sde's
  and EDM's VP label `999 t`) takes `scale = 1`: DDPM's own embedding of the time step.
  """
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  args = (scale * c_noise)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def input_fourier_features(x, exponents):
  """`x` with VDM's Fourier features of the input (Kingma et al. 2021, Sec. 3.4 and App. C; `Base2FourierFeatures`):
  `sin(2^n 2 pi x)` and `cos(2^n 2 pi x)` of every channel for each exponent `n` of `exponents`, concatenated on the
  last axis, `(..., C (1 + 2 len(exponents)))`. At high frequencies they resolve the fine detail of the data's levels
  that likelihood depends on (VDM's CIFAR-10 in [-1, 1]: `n = 6, 7`, periods of 2 and 1 level). `()` leaves `x`."""
  if not exponents:
    return x
  freqs = 2.0 * jnp.pi * 2.0 ** jnp.asarray(exponents, x.dtype)
  h = jnp.reshape(x[..., None] * freqs, x.shape[:-1] + (-1,))
  return jnp.concatenate([x, jnp.sin(h), jnp.cos(h)], axis=-1)


class NoiseEmbedding(nn.Module):
  """Sinusoidal log-sigma features followed by a two-layer MLP; with `augment_dim > 0` the augmentation
  labels join the features before the MLP (`add_augment_embedding`)."""

  features: int
  dtype: Any = jnp.float32
  augment_dim: int = 0
  conditioning: str = "log_sigma"  # or "score_sde": `c_noise` is a time-step label (models/utils.py)

  @nn.compact
  def __call__(self, c_noise, augment_labels=None):
    if self.conditioning not in ("log_sigma", "score_sde"):
      raise ValueError(f"unknown model.conditioning {self.conditioning!r}; valid choices: log_sigma, score_sde")
    emb = noise_level_embedding(c_noise, self.features, scale=1.0 if self.conditioning == "score_sde" else 250.0)
    emb = add_augment_embedding(emb, augment_labels, self.augment_dim, self.dtype)
    emb = nn.Dense(self.features, dtype=self.dtype)(emb)
    return nn.Dense(self.features, dtype=self.dtype)(nn.silu(emb))


def add_label_embedding(emb, labels, num_classes: int, dtype: Any = jnp.float32):
  """`emb + E[y]`: a learned vector per class added to the noise embedding `emb` `(batch, features)`, as
  class-conditional diffusion models do (Ho & Salimans 2022; Karras et al. 2022). Row `num_classes` is
  the null label, no class, which classifier-free guidance trains by label dropout and samples as the
  unconditional score; `labels=None` is that null label for every example. With `num_classes = 0` the
  network has no class input (and no parameters for one): `emb` is returned as it is. Call it inside a
  compact module: the table is that module's `label_embedding` parameter."""
  if num_classes == 0:
    if labels is not None:
      raise ValueError("class labels given to a network without class input (model.num_classes=0)")
    return emb
  if labels is None:
    labels = jnp.full(emb.shape[:1], num_classes, jnp.int32)
  table = nn.Embed(num_classes + 1, emb.shape[-1], dtype=dtype, name="label_embedding")
  return emb + table(labels).astype(emb.dtype)


def add_augment_embedding(features, augment_labels, augment_dim: int, dtype: Any = jnp.float32, kernel_init=None):
  """`features + A a`: the augmentation labels `a` `(batch, augment_dim)` of EDM's non-leaking augmentation
  (datasets/augment.py; Karras et al. 2022, App. F.2) mapped by a bias-free linear layer and added to the
  noise-level features `(batch, features)` before the embedding's MLP, as EDM's `map_augment` does. Without
  bias, `a = 0` (no augmentation, and `augment_labels=None`, as in sampling) leaves `features` unchanged.
  With `augment_dim = 0` the network has no such input (and no parameters for it). Call it inside a compact
  module: `A` is that module's `augment_embedding` parameter."""
  if augment_dim == 0:
    if augment_labels is not None:
      raise ValueError("augmentation labels given to a network without augmentation input (model.augment_dim=0)")
    return features
  if augment_labels is None:
    augment_labels = jnp.zeros(features.shape[:1] + (augment_dim,), jnp.float32)
  if augment_labels.shape[-1] != augment_dim:
    raise ValueError(f"{augment_labels.shape[-1]} augmentation labels for a network of model.augment_dim={augment_dim}")
  init = {} if kernel_init is None else {"kernel_init": kernel_init}
  dense = nn.Dense(features.shape[-1], use_bias=False, dtype=dtype, name="augment_embedding", **init)
  return features + dense(augment_labels).astype(features.dtype)
