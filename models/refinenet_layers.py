"""RefineNet layers of NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020).

The score networks of both papers are RefineNets (Lin et al. 2017) on a dilated ResNet encoder:
residual blocks (some downsampling by a mean pool, the deepest ones dilated instead), then a cascade
of RefineBlocks, each made of residual conv units (RCU), multi-resolution fusion (MSF) and chained
residual pooling (CRP). NCSN conditions every normalisation on the noise-level index `y`
(conditional instance normalisation++) and puts a normalisation in front of every RCU, CRP and MSF
convolution; NCSNv2 is unconditional and keeps normalisation only in the residual blocks.

Layout and initialisation follow the authors' code (ermongroup/ncsn, ermongroup/ncsnv2,
yang-song/score_sde_pytorch); every layer takes a `dtype` for its computation, its parameters stay
float32. Images are NHWC. Modules that may be conditional take `(x, y)`, with `y = None` when the
network is unconditional.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
  "elu": nn.elu,
  "relu": nn.relu,
  "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.2),
  "swish": nn.swish,
}


def get_act(nonlinearity: str) -> Callable:
  """The activation named by `model.nonlinearity` (score_sde vocabulary)."""
  if nonlinearity.lower() not in ACTIVATIONS:
    raise ValueError(f"unknown model.nonlinearity {nonlinearity!r}; valid choices: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[nonlinearity.lower()]


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class NCSNConv(nn.Module):
  """`k x k` convolution, stride 1, 'same' padding (= `dilation` for k = 3), with PyTorch's default
  initialisation as in the NCSN code: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

  features: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    init = _uniform(1.0 / math.sqrt(k * k * x.shape[-1]))
    kernel = self.param("kernel", init, (k, k, x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      window_strides=(1, 1),
      padding="SAME",
      rhs_dilation=(self.dilation, self.dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if self.use_bias:
      y = y + self.param("bias", init, (self.features,)).astype(self.dtype)
    return y


# ----------------------------------------------------------------------------- normalisation


def _normal_one(key, shape, dtype=jnp.float32):
  """N(1, 0.02): the initial scales gamma and alpha of instance norm++."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def instance_norm_plus(x, gamma, alpha, beta=None):
  """Instance normalisation++ (Song & Ermon 2019, App. A.1), in the form of the authors' code:

    z_k = gamma_k * ((x_k - mu_k) / s_k + alpha_k * (mu_k - m) / sqrt(v)) + beta_k,

  with `mu_k`, `s_k^2` the spatial mean and (biased) variance of channel k, and `m`, `v` the mean
  and *unbiased* variance (`torch.var`) of the `mu_k` over channels; the term in `alpha` keeps the
  colour information that plain instance norm removes. `eps = 1e-5` under both square roots.
  `gamma`, `alpha`, `beta`: shape `(C,)` or `(batch, C)`. Statistics are taken in float32.
  """
  x32 = x.astype(jnp.float32)
  means = jnp.mean(x32, axis=(1, 2))
  means_plus = (means - jnp.mean(means, -1, keepdims=True)) / jnp.sqrt(jnp.var(means, -1, ddof=1, keepdims=True) + 1e-5)
  h = (x32 - means[:, None, None]) / jnp.sqrt(jnp.var(x32, axis=(1, 2), keepdims=True) + 1e-5)

  def expand(p):  # (C,) or (batch, C) -> broadcastable over (batch, H, W, C)
    return jnp.reshape(p, (-1, 1, 1, p.shape[-1]))

  h = expand(gamma) * (h + expand(alpha) * means_plus[:, None, None])
  if beta is not None:
    h = h + expand(beta)
  return h.astype(x.dtype)


class InstanceNormPlus(nn.Module):
  """Instance normalisation++ with learned `gamma, alpha ~ N(1, 0.02)`, `beta = 0` (NCSNv2)."""

  bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    beta = self.param("beta", nn.initializers.zeros, (c,)) if self.bias else None
    return instance_norm_plus(
      x, self.param("gamma", _normal_one, (c,)), self.param("alpha", _normal_one, (c,)), beta
    ).astype(self.dtype)


class ConditionalInstanceNormPlus(nn.Module):
  """Conditional instance normalisation++ (Song & Ermon 2019, Eq. in App. A.1): `gamma, alpha, beta`
  are rows `y` of a learned table of shape `(num_classes, 3C)`, one row per noise level;
  `gamma, alpha ~ N(1, 0.02)` and `beta = 0` at initialisation, as in the authors' code."""

  num_classes: int
  bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]
    n = 3 if self.bias else 2

    def init(key, shape, dtype=jnp.float32):
      return jnp.concatenate(
        [_normal_one(key, (shape[0], 2 * c), dtype), jnp.zeros((shape[0], shape[1] - 2 * c), dtype)], -1
      )

    table = self.param("embedding", init, (self.num_classes, n * c))
    params = jnp.split(table[y], n, axis=-1)  # gamma, alpha[, beta]
    return instance_norm_plus(x, *params).astype(self.dtype)


class InstanceNorm(nn.Module):
  """Instance normalisation (Ulyanov et al. 2016) with learned per-channel scale and bias."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    h = (x32 - jnp.mean(x32, (1, 2), keepdims=True)) / jnp.sqrt(jnp.var(x32, (1, 2), keepdims=True) + 1e-5)
    h = h * self.param("scale", nn.initializers.ones, (x.shape[-1],)) + self.param(
      "bias", nn.initializers.zeros, (x.shape[-1],)
    )
    return h.astype(self.dtype)


def get_normalization(normalization: str, num_classes: int | None = None, dtype: Any = jnp.float32):
  """A factory of the normalisation named by `model.normalization`; conditional on a class index
  (called as `norm()(x, y)`) when `num_classes` is given, else called as `norm()(x)`."""
  if num_classes is not None:
    if normalization != "InstanceNorm++":
      raise ValueError(f"unknown conditional model.normalization {normalization!r}; valid choices: InstanceNorm++")
    return functools.partial(ConditionalInstanceNormPlus, num_classes=num_classes, dtype=dtype)
  choices = {"InstanceNorm++": InstanceNormPlus, "InstanceNorm": InstanceNorm}
  if normalization not in choices:
    raise ValueError(f"unknown model.normalization {normalization!r}; valid choices: {', '.join(choices)}")
  return functools.partial(choices[normalization], dtype=dtype)


def _normalize(norm, h, y):
  return norm()(h) if y is None else norm()(h, y)


# ----------------------------------------------------------------------------- ResNet encoder


class ConvMeanPool(nn.Module):
  """Convolution then 2x2 mean pooling: halves height and width (which must be even)."""

  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = NCSNConv(self.features, self.kernel_size, dtype=self.dtype)(x)
    return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
  """Pre-activation residual block `x + conv(act(norm(conv(act(norm(x))))))` of the NCSN encoder.

  `resample='down'` with `dilation == 1` halves the resolution (ConvMeanPool in the second conv and
  a 1x1 ConvMeanPool shortcut); with `dilation > 1` it keeps the resolution and widens the receptive
  field by dilated 3x3 convolutions instead (shortcut: a dilated 3x3 conv), as in the authors' code.
  The shortcut is the identity when neither the width nor the resolution changes.
  """

  output_dim: int
  norm: Callable
  act: Callable = nn.elu
  resample: str | None = None
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None):
    conv = functools.partial(NCSNConv, dilation=self.dilation, dtype=self.dtype)
    h = self.act(_normalize(self.norm, x, y))
    if self.resample == "down":
      h = self.act(_normalize(self.norm, conv(x.shape[-1])(h), y))
      if self.dilation > 1:
        return conv(self.output_dim)(h) + conv(self.output_dim)(x)
      return ConvMeanPool(self.output_dim, dtype=self.dtype)(h) + ConvMeanPool(self.output_dim, 1, dtype=self.dtype)(x)
    if self.resample is not None:
      raise ValueError(f"unknown resample {self.resample!r}; valid choices: None, 'down'")
    h = self.act(_normalize(self.norm, conv(self.output_dim)(h), y))
    h = conv(self.output_dim)(h)
    if x.shape[-1] == self.output_dim:
      return h + x
    shortcut = conv(self.output_dim) if self.dilation > 1 else NCSNConv(self.output_dim, 1, dtype=self.dtype)
    return h + shortcut(x)


# ----------------------------------------------------------------------------- RefineNet decoder


def resize_bilinear_align_corners(x, shape):
  """Bilinear resize of NHWC `x` to spatial `shape` with corner pixels aligned: output pixel `j`
  samples input position `j (n_in - 1) / (n_out - 1)` (PyTorch `align_corners=True`, as in NCSN)."""
  for axis, n_out in zip((1, 2), shape):
    n_in = x.shape[axis]
    if n_in == n_out:
      continue
    pos = jnp.linspace(0.0, n_in - 1.0, n_out) if n_out > 1 else jnp.zeros((1,))
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n_in - 1)
    w = jnp.reshape(pos - lo, [n_out if a == axis else 1 for a in range(4)]).astype(x.dtype)
    x = jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return x


class RCUBlock(nn.Module):
  """Residual conv units: `n_blocks` times `x <- x + (conv o act [o norm])^n_stages (x)`, bias-free 3x3 convs."""

  features: int
  n_blocks: int
  n_stages: int = 2
  act: Callable = nn.relu
  norm: Callable | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None):
    for _ in range(self.n_blocks):
      residual = x
      for _ in range(self.n_stages):
        if self.norm is not None:
          x = _normalize(self.norm, x, y)
        x = NCSNConv(self.features, use_bias=False, dtype=self.dtype)(self.act(x))
      x = x + residual
    return x


class CRPBlock(nn.Module):
  """Chained residual pooling: `x <- act(x)`, then `n_stages` times `path <- conv(pool(path))`,
  `x <- x + path` (5x5 windows, stride 1). NCSNv2 max-pools; NCSN normalises and average-pools."""

  features: int
  n_stages: int = 2
  act: Callable = nn.relu
  norm: Callable | None = None
  pool: str = "max"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None):
    x = self.act(x)
    path = x
    for _ in range(self.n_stages):
      if self.norm is not None:
        path = _normalize(self.norm, path, y)
      if self.pool == "max":
        path = nn.max_pool(path, (5, 5), strides=(1, 1), padding="SAME")
      else:  # zero padding counted in the mean, as torch.nn.AvgPool2d(5, 1, 2)
        path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding="SAME", count_include_pad=True)
      path = NCSNConv(self.features, use_bias=False, dtype=self.dtype)(path)
      x = path + x
    return x


class MSFBlock(nn.Module):
  """Multi-resolution fusion: `sum_i resize(conv_i([norm_i] x_i))` at the resolution `shape`."""

  features: int
  shape: Any
  norm: Callable | None = None
  interpolation: str = "bilinear"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, y=None):
    total = 0.0
    for x in xs:
      h = x if self.norm is None else _normalize(self.norm, x, y)
      h = NCSNConv(self.features, dtype=self.dtype)(h)
      if self.interpolation == "bilinear":
        h = resize_bilinear_align_corners(h, self.shape)
      elif self.interpolation == "nearest_neighbor":
        h = jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), "nearest")
      else:
        raise ValueError(
          f"unknown model.interpolation {self.interpolation!r}; valid choices: bilinear, nearest_neighbor"
        )
      total = total + h
    return total


class RefineBlock(nn.Module):
  """RefineNet block (Lin et al. 2017): two RCUs on each input, MSF to the resolution of `xs[0]`
  (skipped when there is one input, the deepest block), CRP, and output RCUs (three in the last
  block, `end=True`, else one). With `norm` set and `pool='avg'` it is NCSN's CondRefineBlock,
  normalised by conditional instance norm++ everywhere; NCSNv2 uses `norm=None`, `pool='max'`."""

  features: int
  act: Callable = nn.relu
  norm: Callable | None = None
  pool: str = "max"
  interpolation: str = "bilinear"
  end: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, y=None):
    rcu = functools.partial(RCUBlock, act=self.act, norm=self.norm, dtype=self.dtype)
    hs = [rcu(x.shape[-1], n_blocks=2)(x, y) for x in xs]
    if len(hs) > 1:
      h = MSFBlock(self.features, xs[0].shape[1:3], self.norm, self.interpolation, self.dtype)(hs, y)
    else:
      h = hs[0]
    h = CRPBlock(self.features, act=self.act, norm=self.norm, pool=self.pool, dtype=self.dtype)(h, y)
    return rcu(self.features, n_blocks=3 if self.end else 1)(h, y)
