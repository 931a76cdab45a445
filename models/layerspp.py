"""Building blocks of the DDPM U-Net (Ho et al. 2020) and of NCSN++ / DDPM++ (Song et al. 2021).

Layer for layer the blocks of score_sde's `models/layers.py` and `models/layerspp.py`, so that the
networks have the same parameters. All of them take NHWC inputs, keep their parameters in float32
and compute in `dtype` (float32 or bfloat16).

A GroupNorm has `min(C // 4, 32)` groups (score_sde's `layerspp.py`: NCSN++ and DDPM++), or the number
of groups its block is given (`num_groups`): score_sde's DDPM (`models/ddpm.py`, `layers.py`) normalises with
flax's default, 32 groups at every width. The two rules agree only where `C >= 128`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scorejax.models import up_or_down_sampling as updown

# `c_noise = log sigma` lies in about [-7, 5] (sigma from 1e-3 to 100); times 250 it spans about
# 3000, the magnitude of DDPM's integer time steps (0..999) that the sinusoidal embedding expects.
POSITIONAL_EMBEDDING_SCALE = 250.0


def default_init(scale: float = 1.0):
  """DDPM's initialisation: variance scaling, fan-avg, uniform (Glorot for scale 1).

  `scale = 0` becomes 1e-10: the layer starts at (almost) zero but still has a gradient direction.
  """
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def conv3x3(
  x, features: int, stride: int = 1, init_scale: float = 1.0, use_bias: bool = True, dtype: Any = jnp.float32
):
  """3x3 'SAME' convolution with DDPM initialisation (call inside a compact module)."""
  return nn.Conv(
    features,
    (3, 3),
    strides=(stride, stride),
    padding="SAME",
    use_bias=use_bias,
    kernel_init=default_init(init_scale),
    bias_init=nn.initializers.zeros,
    dtype=dtype,
  )(x)


def conv1x1(x, features: int, init_scale: float = 1.0, dtype: Any = jnp.float32):
  """1x1 convolution with DDPM initialisation (call inside a compact module)."""
  return nn.Conv(features, (1, 1), kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros, dtype=dtype)(
    x
  )


def group_norm(x, dtype: Any = jnp.float32, num_groups: int | None = None):
  """GroupNorm with `num_groups` groups, by default NCSN++'s `min(C // 4, 32)` (call inside a compact module)."""
  return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32) if num_groups is None else num_groups, dtype=dtype)(x)


def timestep_embedding(timesteps, embedding_dim: int, max_positions: int = 10_000):
  """DDPM's sinusoidal embedding (Vaswani et al. 2017): `[sin(t w_i), cos(t w_i)]`,
  `w_i = max_positions^(-i / (half - 1))`, `i = 0..half-1`; shape `(batch, embedding_dim)`."""
  half = embedding_dim // 2
  freqs = jnp.exp(-np.log(max_positions) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [(0, 0), (0, 1)])
  return emb


def positional_noise_embedding(c_noise, embedding_dim: int):
  """`timestep_embedding(250 * log sigma)`: DDPM's time embedding of the noise level."""
  return timestep_embedding(POSITIONAL_EMBEDDING_SCALE * c_noise, embedding_dim)


class GaussianFourierProjection(nn.Module):
  """Random Fourier features of `c_noise = log sigma` (Tancik et al. 2020; Song et al. 2021, App. H):
  `[sin(2 pi W c), cos(2 pi W c)]`, `W ~ N(0, scale^2)` fixed (no gradient); shape `(batch, 2 * size)`."""

  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, c_noise):
    w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    proj = c_noise.astype(jnp.float32)[:, None] * jax.lax.stop_gradient(w)[None, :] * 2 * np.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class NIN(nn.Module):
  """Network-in-network: a per-pixel linear map `x W + b` over the channel axis (DDPM)."""

  num_units: int
  init_scale: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
    b = self.param("b", nn.initializers.zeros, (self.num_units,))
    return jnp.einsum("...c,cd->...d", x.astype(self.dtype), w.astype(self.dtype)) + b.astype(self.dtype)


class AttnBlock(nn.Module):
  """Self-attention over all pixels (DDPM, Ho et al. 2020; 'ddpm' attention of NCSN++):

    h = GroupNorm(x),  A = softmax(q k^T / sqrt(C)),  out = x + NIN(A v)  [/ sqrt 2 if skip_rescale]

  with `q, k, v` 1x1 projections of `h`; the output projection starts at zero (`init_scale = 0`).
  `num_groups`: the GroupNorm's groups (`group_norm`; None is NCSN++'s rule).
  """

  skip_rescale: bool = False
  init_scale: float = 0.0
  num_groups: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, height, width, c = x.shape
    h = group_norm(x, self.dtype, self.num_groups)
    q, k, v = (NIN(c, dtype=self.dtype)(h) for _ in range(3))
    logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k).reshape(b, height, width, height * width)
    weights = jax.nn.softmax(logits.astype(jnp.float32) * c**-0.5, axis=-1).astype(self.dtype)
    h = jnp.einsum("bhwHW,bHWc->bhwc", weights.reshape(b, height, width, height, width), v)
    h = NIN(c, init_scale=self.init_scale, dtype=self.dtype)(h)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class Upsample(nn.Module):
  """2x upsampling: nearest neighbours (+ 3x3 conv) or FIR (fused with the 3x3 conv if `with_conv`)."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.with_conv and out_ch != x.shape[-1]:
      raise ValueError("Upsample without a convolution cannot change the number of channels")
    if not self.fir:
      h = updown.naive_upsample_2d(x, 2)
      return conv3x3(h, out_ch, dtype=self.dtype) if self.with_conv else h
    if not self.with_conv:
      return updown.upsample_2d(x, self.fir_kernel, factor=2)
    return updown.Conv2d(
      out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel, kernel_init=default_init(), dtype=self.dtype
    )(x)


class Downsample(nn.Module):
  """2x downsampling: stride-2 3x3 conv or 2x2 average pooling, or FIR (fused with a 3x3 conv if `with_conv`)."""

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.with_conv and out_ch != x.shape[-1]:
      raise ValueError("Downsample without a convolution cannot change the number of channels")
    if not self.fir:
      if self.with_conv:
        return conv3x3(x, out_ch, stride=2, dtype=self.dtype)
      return updown.naive_downsample_2d(x, 2)
    if not self.with_conv:
      return updown.downsample_2d(x, self.fir_kernel, factor=2)
    return updown.Conv2d(
      out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel, kernel_init=default_init(), dtype=self.dtype
    )(x)


def _add_embedding(h, temb, act, dtype):
  """Adds a per-channel bias `Dense(act(temb))` to every pixel of `h` (DDPM's conditioning)."""
  if temb is None:
    return h
  return h + nn.Dense(h.shape[-1], kernel_init=default_init(), dtype=dtype)(act(temb))[:, None, None, :]


class ResnetBlockDDPM(nn.Module):
  """DDPM's residual block (Ho et al. 2020), with NCSN++'s options (Song et al. 2021, App. H):

    h = Conv(act(GN(x))) + Dense(act(temb)),  h = Conv_0(Dropout(act(GN(h))))
    out = skip(x) + h  [/ sqrt 2 if skip_rescale]

  `Conv_0` starts near zero (`init_scale`); `skip` is a NIN (or a 3x3 conv with `conv_shortcut`)
  when the width changes. With `skip_rescale=False, init_scale=0, num_groups=32` this is exactly DDPM's
  block; `num_groups=None` normalises as DDPM++'s (`group_norm`).
  """

  act: Any = nn.swish
  out_ch: int | None = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0
  num_groups: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    out_ch = self.out_ch or x.shape[-1]
    h = conv3x3(self.act(group_norm(x, self.dtype, self.num_groups)), out_ch, dtype=self.dtype)
    h = _add_embedding(h, temb, self.act, self.dtype)
    h = self.act(group_norm(h, self.dtype, self.num_groups))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
    if x.shape[-1] != out_ch:
      x = conv3x3(x, out_ch, dtype=self.dtype) if self.conv_shortcut else NIN(out_ch, dtype=self.dtype)(x)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
  """BigGAN's residual block (Brock et al. 2019), as adapted by NCSN++ (Song et al. 2021, App. H):
  the block itself resamples (`up` / `down`, FIR or nearest / average) both paths,

    h = Conv(resample(act(GN(x)))) + Dense(act(temb)),  h = Conv_0(Dropout(act(GN(h))))
    out = Conv1x1(resample(x)) + h  [/ sqrt 2 if skip_rescale]

  with the 1x1 shortcut only when the width changes or the block resamples.
  """

  act: Any = nn.swish
  up: bool = False
  down: bool = False
  out_ch: int | None = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0
  dtype: Any = jnp.float32

  def _resample(self, x):
    if self.up:
      return updown.upsample_2d(x, self.fir_kernel, 2) if self.fir else updown.naive_upsample_2d(x, 2)
    if self.down:
      return updown.downsample_2d(x, self.fir_kernel, 2) if self.fir else updown.naive_downsample_2d(x, 2)
    return x

  @nn.compact
  def __call__(self, x, temb=None, train: bool = False):
    if self.up and self.down:
      raise ValueError("a block resamples either up or down, not both")
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = self._resample(self.act(group_norm(x, self.dtype)))
    x = self._resample(x)
    h = conv3x3(h, out_ch, dtype=self.dtype)
    h = _add_embedding(h, temb, self.act, self.dtype)
    h = self.act(group_norm(h, self.dtype))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
    if in_ch != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch, dtype=self.dtype)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
  """Merges the input-pyramid image `x` into features `y` (NCSN++ 'input_skip'):
  `cat(Conv1x1(x), y)` or `Conv1x1(x) + y`."""

  method: str = "cat"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    if self.method not in ("cat", "sum"):
      raise ValueError(f"unknown progressive_combine {self.method!r}; valid choices: cat, sum")
    h = conv1x1(x, y.shape[-1], dtype=self.dtype)
    return jnp.concatenate([h, y], axis=-1) if self.method == "cat" else h + y
