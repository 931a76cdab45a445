"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): RefineNet score networks.

Both map `x` of shape `(batch, H, W, C)` to a score estimate of the same shape through a dilated
ResNet encoder and a RefineNet decoder (`models/refinenet_layers.py`), ELU activations and instance
normalisation++:

* `ncsn` (NCSN, "Generative Modeling by Estimating Gradients of the Data Distribution", 2019,
  App. A / B.1): every normalisation is conditional instance norm++, whose `gamma, alpha, beta` are
  looked up by the index `i` of the noise level `sigma_i`; output `s(x, sigma_i)` directly. The index
  is the SDE's: the wrapper (`models.utils.get_score_fn`) feeds it the label of the level of the SDE's
  discrete chain (`sde.score_sde_label(t, continuous=False)`), so the network knows no noise levels.
* `ncsnv2` (NCSNv2, "Improved Techniques for Training Score-Based Generative Models", 2020,
  technique 3): unconditional, `s(x, sigma) = s(x) / sigma`; the division lives in
  `models.utils.get_score_fn` (`model.scale_by_sigma=True`), not here. `ncsnv2` is the 32-64 px
  network (score_sde's `ncsnv2_64`, used for CIFAR-10 and CelebA); `ncsnv2_128` and `ncsnv2_256`
  are the deeper ones for 96-128 px and 129-256 px images (LSUN, FFHQ).

The layer layout is the authors' (ermongroup/ncsn, ermongroup/ncsnv2, yang-song/score_sde_pytorch).
Resolution: each non-dilated downsampling stage halves H and W, so H and W must be divisible by 2
(`ncsn`, `ncsnv2`), 4 (`ncsnv2_128`) or 8 (`ncsnv2_256`). No `2x - 1` centering inside: the data
pipeline decides the data range.
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from scorejax.models.refinenet_layers import NCSNConv, RefineBlock, ResidualBlock, get_act, get_normalization
from scorejax.models.registry import register_model


def refinenet(x, y, *, nf, encoder, decoder, act, norm, refine_norm, pool, interpolation, dtype):
  """The shared RefineNet body, called inside a module's compact `__call__`.

  `encoder[k] = (width multiplier, dilation)` of stage k: stage 0 is two residual blocks at full
  resolution, each later stage a `resample='down'` block (halving the resolution when its dilation
  is 1) then a plain one. `decoder[k]` = width multiplier of the RefineBlock that fuses encoder
  stage k with the block below it; the deepest RefineBlock refines its stage alone.
  """
  h = NCSNConv(nf, dtype=dtype)(x)
  stages = []
  for k, (mult, dilation) in enumerate(encoder):
    for resample in (None if k == 0 else "down", None):
      h = ResidualBlock(mult * nf, norm, act, resample, dilation, dtype)(h, y)
    stages.append(h)
  h = None
  for k in reversed(range(len(encoder))):
    inputs = [stages[k]] if h is None else [stages[k], h]
    h = RefineBlock(decoder[k] * nf, act, refine_norm, pool, interpolation, end=(k == 0), dtype=dtype)(inputs, y)
  h = act(norm()(h) if y is None else norm()(h, y))
  return NCSNConv(x.shape[-1], dtype=dtype)(h)


@register_model("ncsn")
class NCSN(nn.Module):
  """NCSN v1 score network `s(x, sigma_i)` (Song & Ermon 2019), CIFAR-10 defaults.

  `c_noise` is the index of the level among the `num_scales` levels of the SDE's discrete chain, as the
  SDE labels it (`LEVEL_CONDITIONED`: `models.utils.get_score_fn` feeds `sde.score_sde_label(t, False)`,
  SMLD's index from `sigma_max` down for VE, score_sde's label of its NCSN); rounded, and clipped to the table.
  """

  nf: int = 128
  normalization: str = "InstanceNorm++"
  nonlinearity: str = "elu"
  interpolation: str = "bilinear"
  num_scales: int = 10  # the levels of the SDE's chain: one row of each conditional normalisation per level
  dtype: Any = jnp.float32

  ENCODER = ((1, 1), (2, 1), (2, 2), (2, 4))
  DECODER = (1, 1, 2, 2)
  LEVEL_CONDITIONED: ClassVar[bool] = True  # `c_noise` is the chain level's label (models/utils.py)

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    y = jnp.clip(jnp.round(c_noise), 0, self.num_scales - 1).astype(jnp.int32)
    norm = get_normalization(self.normalization, num_classes=self.num_scales, dtype=self.dtype)
    return refinenet(
      x,
      y,
      nf=self.nf,
      encoder=self.ENCODER,
      decoder=self.DECODER,
      act=get_act(self.nonlinearity),
      norm=norm,
      refine_norm=norm,
      pool="avg",
      interpolation=self.interpolation,
      dtype=self.dtype,
    )


@register_model("ncsnv2")
class NCSNv2(nn.Module):
  """NCSNv2 score network `s(x)` for 32-64 px images (Song & Ermon 2020), CIFAR-10 defaults.

  Unconditional: `c_noise` is ignored; use with `model.scale_by_sigma=True` so the score is `s(x) / sigma`.
  """

  nf: int = 128
  normalization: str = "InstanceNorm++"
  nonlinearity: str = "elu"
  interpolation: str = "bilinear"
  dtype: Any = jnp.float32

  ENCODER = ((1, 1), (2, 1), (2, 2), (2, 4))
  DECODER = (1, 1, 2, 2)

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    del c_noise  # technique 3: the noise level enters only through the division by sigma outside
    return refinenet(
      x,
      None,
      nf=self.nf,
      encoder=self.ENCODER,
      decoder=self.DECODER,
      act=get_act(self.nonlinearity),
      norm=get_normalization(self.normalization, dtype=self.dtype),
      refine_norm=None,
      pool="max",
      interpolation=self.interpolation,
      dtype=self.dtype,
    )


@register_model("ncsnv2_128")
class NCSNv2_128(NCSNv2):  # noqa: N801 (score_sde's name)
  """NCSNv2 for 96-128 px images (LSUN bedroom/church/tower): one more stage, widths up to 4 nf."""

  ENCODER = ((1, 1), (2, 1), (2, 1), (4, 2), (4, 4))
  DECODER = (1, 1, 2, 2, 4)


@register_model("ncsnv2_256")
class NCSNv2_256(NCSNv2):  # noqa: N801 (score_sde's name)
  """NCSNv2 for 129-256 px images (FFHQ 256): two more stages than `ncsnv2`."""

  ENCODER = ((1, 1), (2, 1), (2, 1), (2, 1), (4, 2), (4, 4))
  DECODER = (1, 1, 2, 2, 2, 4)
