"""A small noise-conditional convolutional score network for images.

A compact U-Net in the spirit of NCSN/DDPM: residual blocks with GroupNorm and
SiLU, the log-sigma embedding added inside every block, one skip connection per
block, nearest-neighbour upsampling. Images are `(batch, height, width, channels)`.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import NoiseEmbedding
from models.registry import register_model


class ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, emb):
    groups = min(8, self.features // 4)
    h = nn.silu(nn.GroupNorm(num_groups=min(8, x.shape[-1] // 4))(x))
    h = nn.Conv(self.features, (3, 3))(h)
    h = h + nn.Dense(self.features)(nn.silu(emb))[:, None, None, :]
    h = nn.silu(nn.GroupNorm(num_groups=groups)(h))
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1))(x)
    return (x + h) / jnp.sqrt(2.0)


@register_model("ncsn_small")
class NCSNSmall(nn.Module):
  """`s_theta(x, sigma)` for small images; `ch_mult` gives the width at each resolution."""
  nf: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 2

  @nn.compact
  def __call__(self, x, sigma):
    emb = NoiseEmbedding(4 * self.nf)(sigma)
    h = nn.Conv(self.nf, (3, 3))(x)
    skips = [h]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.nf * mult)(h, emb)
        skips.append(h)
      if level != len(self.ch_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
        skips.append(h)
    h = ResBlock(h.shape[-1])(h, emb)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = ResBlock(self.nf * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
      if level != 0:
        b, height, width, c = h.shape
        h = jax.image.resize(h, (b, 2 * height, 2 * width, c), "nearest")
        h = nn.Conv(c, (3, 3))(h)
    h = nn.silu(nn.GroupNorm(num_groups=min(8, h.shape[-1] // 4))(h))
    return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
