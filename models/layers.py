"""Layers shared by the networks."""
import jax.numpy as jnp
import flax.linen as nn


def noise_level_embedding(sigma: jnp.ndarray, dim: int, max_period: float = 10_000.0) -> jnp.ndarray:
  """Sinusoidal features of `log(sigma)`, shape `(batch, dim)`.

  Conditioning on `log sigma` (rather than sigma) spreads geometric noise levels
  evenly over the embedding, as in NCSN++ (Song et al. 2021, App. H).
  """
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  # log(sigma) lies in roughly [-7, 5]; scaling by 1000/4 maps it to DDPM-like time-step magnitudes.
  args = (250.0 * jnp.log(sigma))[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class NoiseEmbedding(nn.Module):
  """Sinusoidal log-sigma features followed by a two-layer MLP."""
  features: int

  @nn.compact
  def __call__(self, sigma):
    emb = noise_level_embedding(sigma, self.features)
    emb = nn.Dense(self.features)(emb)
    return nn.Dense(self.features)(nn.silu(emb))
