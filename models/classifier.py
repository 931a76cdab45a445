"""Noise-conditional classifiers `p_phi(y | x_t, t)` for classifier guidance (Song et al. 2021, Sec. 5 and
App. I.1; Dhariwal & Nichol 2021, Sec. 4): the network sees a noisy input and its noise level
`c_noise = log sigma(t)`, as the score networks do, and returns the logits of the classes. Trained by
`losses/classifier.py` on inputs noised by the same SDE as the score model it guides."""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from scorejax.models.layers import NoiseEmbedding
from scorejax.models.ncsn_small import ResBlock
from scorejax.models.registry import register_model
from scorejax.models.utils import noise_conditioning


@register_model("classifier_mlp")
class NoisyVectorClassifier(nn.Module):
  """`net(x, c_noise) -> logits (batch, num_classes)` for vectors `(batch, dim)`: the residual SiLU MLP of
  the score network (models/mlp.py) with the noise embedding added to each layer, ending in the logits."""

  takes_vectors = True  # data of shape (dim,)
  nf: int = 128
  num_layers: int = 3
  num_classes: int = 0
  dtype: Any = jnp.float32
  is_classifier: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False, labels=None):
    del labels  # what it predicts
    dense = lambda features, **kw: nn.Dense(features, dtype=self.dtype, **kw)
    emb = nn.silu(NoiseEmbedding(self.nf, self.dtype)(c_noise))
    h = dense(self.nf)(x)
    for _ in range(self.num_layers):
      h = h + dense(self.nf)(nn.silu(h + dense(self.nf)(emb)))
    return dense(self.num_classes)(nn.silu(h))


@register_model("classifier_conv")
class NoisyImageClassifier(nn.Module):
  """`net(x, c_noise) -> logits (batch, num_classes)` for images `(batch, H, W, C)`: the downsampling half of
  `ncsn_small` (residual blocks that add the noise embedding, a strided convolution between resolutions),
  then GroupNorm, SiLU, the mean over the image, and a dense layer to the logits (the encoder-and-pool
  classifier of Dhariwal & Nichol 2021, Sec. 4, at the size of the 8x8 digits)."""

  nf: int = 32
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  num_classes: int = 0
  dtype: Any = jnp.float32
  is_classifier: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False, labels=None):
    del labels
    emb = NoiseEmbedding(4 * self.nf, self.dtype)(c_noise)
    h = nn.Conv(self.nf, (3, 3), dtype=self.dtype)(x)
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.nf * mult, self.dtype)(h, emb)
      if level != len(self.ch_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
    h = nn.silu(nn.GroupNorm(num_groups=min(8, h.shape[-1] // 4), dtype=self.dtype)(h))
    return nn.Dense(self.num_classes, dtype=self.dtype)(jnp.mean(h, axis=(1, 2)))


def is_classifier(model) -> bool:
  """Whether a network (or its class) returns class logits rather than a score."""
  return getattr(model, "is_classifier", False)


def get_logits_fn(model, params, sde, train: bool = False, rng=None):
  """`logits_fn(x, t) -> (batch, num_classes)` (float32) of a noise-conditional classifier with `params`,
  conditioned as the score networks are on `c_noise = log sigma(t)` of `sde`."""

  def logits_fn(x, t):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
    rngs = {"dropout": rng} if (train and rng is not None) else None
    out = model.apply({"params": params}, x, noise_conditioning(sde, t), train=train, rngs=rngs)
    return out.astype(jnp.float32)

  return logits_fn
