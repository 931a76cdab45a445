"""A small noise-conditional convolutional score network for images.

A compact U-Net in the spirit of NCSN/DDPM: residual blocks with GroupNorm and
SiLU, the log-sigma embedding added inside every block, one skip connection per
block, nearest-neighbour upsampling. Images are `(batch, height, width, channels)`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scorejax.models.layers import NoiseEmbedding, add_label_embedding, input_fourier_features
from scorejax.models.registry import register_model


class ResBlock(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb):
    groups = min(8, self.features // 4)
    h = nn.silu(nn.GroupNorm(num_groups=min(8, x.shape[-1] // 4), dtype=self.dtype)(x))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(h)
    h = h + nn.Dense(self.features, dtype=self.dtype)(nn.silu(emb))[:, None, None, :]
    h = nn.silu(nn.GroupNorm(num_groups=groups, dtype=self.dtype)(h))
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    return (x + h) / jnp.sqrt(2.0).astype(h.dtype)


@register_model("ncsn_small")
class NCSNSmall(nn.Module):
  """`net(x, c_noise, labels=None, augment_labels=None)` (`c_noise = log sigma`) for small images; `ch_mult`
  gives the width at each resolution; with `num_classes > 0` the class label's embedding joins the noise
  embedding, with `augment_dim > 0` the augmentation labels `(batch, augment_dim)` join its features."""

  nf: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 2
  num_classes: int = 0  # > 0: class-conditional (labels in 0..num_classes-1, num_classes the null label)
  augment_dim: int = 0  # > 0: takes the labels of EDM's augmentation (datasets/augment.py; None = zeros)
  conditioning: str = "log_sigma"  # or "score_sde": `c_noise` is a time-step label such as 999 t (models/utils.py)
  input_fourier: Sequence[int] = ()  # exponents n of VDM's Fourier features of the input (layers.py); () for none
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False, labels=None, augment_labels=None):
    emb = NoiseEmbedding(4 * self.nf, self.dtype, self.augment_dim, self.conditioning)(c_noise, augment_labels)
    emb = add_label_embedding(emb, labels, self.num_classes, self.dtype)
    h = nn.Conv(self.nf, (3, 3), dtype=self.dtype)(input_fourier_features(x, self.input_fourier))
    skips = [h]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.nf * mult, self.dtype)(h, emb)
        skips.append(h)
      if level != len(self.ch_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
        skips.append(h)
    h = ResBlock(h.shape[-1], self.dtype)(h, emb)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = ResBlock(self.nf * mult, self.dtype)(jnp.concatenate([h, skips.pop()], axis=-1), emb)
      if level != 0:
        b, height, width, c = h.shape
        h = jax.image.resize(h, (b, 2 * height, 2 * width, c), "nearest")
        h = nn.Conv(c, (3, 3), dtype=self.dtype)(h)
    h = nn.silu(nn.GroupNorm(num_groups=min(8, h.shape[-1] // 4), dtype=self.dtype)(h))
    return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
