"""MLP score network for low-dimensional data (the 2D toys)."""
import flax.linen as nn
import jax.numpy as jnp

from models.layers import NoiseEmbedding
from models.registry import register_model


@register_model("mlp")
class ScoreMLP(nn.Module):
  """`s_theta(x, sigma)` for `x` of shape `(batch, dim)`: residual SiLU MLP, log-sigma added to each layer."""
  nf: int = 128
  num_layers: int = 3

  @nn.compact
  def __call__(self, x, sigma):
    emb = nn.silu(NoiseEmbedding(self.nf)(sigma))
    h = nn.Dense(self.nf)(x)
    for _ in range(self.num_layers):
      h = h + nn.Dense(self.nf)(nn.silu(h + nn.Dense(self.nf)(emb)))
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(h))
