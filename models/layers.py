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
