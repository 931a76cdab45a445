"""Layers shared by the networks."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def noise_level_embedding(c_noise: jnp.ndarray, dim: int, max_period: float = 10_000.0) -> jnp.ndarray:
  """Sinusoidal features of `c_noise = log(sigma)`, shape `(batch, dim)`.

  Conditioning on `log sigma` (rather than sigma) spreads geometric noise levels
  evenly over the embedding, as in NCSN++ (Song et al. 2021, App. H).
  """
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  # log(sigma) lies in roughly [-7, 5]; scaling by 1000/4 maps it to DDPM-like time-step magnitudes.
  args = (250.0 * c_noise)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class NoiseEmbedding(nn.Module):
  """Sinusoidal log-sigma features followed by a two-layer MLP."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, c_noise):
    emb = noise_level_embedding(c_noise, self.features)
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
