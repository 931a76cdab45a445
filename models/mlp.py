"""MLP score network for low-dimensional data (the 2D toys)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.models.layers import NoiseEmbedding, add_label_embedding
from scorejax.models.registry import register_model


@register_model("mlp")
class ScoreMLP(nn.Module):
  """`net(x, c_noise, labels=None)` (`c_noise = log sigma`, or a time-step label) for `x` of shape
  `(batch, dim)`: a residual SiLU MLP with the noise embedding (and, with `num_classes > 0`, the class label)
  added to each layer."""

  takes_vectors = True  # data of shape (dim,); networks without this attribute take images (H, W, C)
  nf: int = 128
  num_layers: int = 3
  num_classes: int = 0  # > 0: class-conditional (labels in 0..num_classes-1, num_classes the null label)
  conditioning: str = "log_sigma"  # or "score_sde": `c_noise` is a time-step label such as 999 t (models/utils.py)
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False, labels=None):
    dense = lambda features, **kw: nn.Dense(features, dtype=self.dtype, **kw)
    emb = NoiseEmbedding(self.nf, self.dtype, conditioning=self.conditioning)(c_noise)
    emb = nn.silu(add_label_embedding(emb, labels, self.num_classes, self.dtype))
    h = dense(self.nf)(x)
    for _ in range(self.num_layers):
      h = h + dense(self.nf)(nn.silu(h + dense(self.nf)(emb)))
    return dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(h))
