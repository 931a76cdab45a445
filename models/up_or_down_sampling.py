"""FIR up- and downsampling of NHWC images (StyleGAN2, Karras et al. 2020, used by NCSN++).

Everything is built on one operation, `upfirdn2d` (as `scipy.signal.upfirdn`, in 2D):

  y = downsample_d( FIR_k * pad_{p0,p1}( upsample_u(x) ) )

`upsample_u` inserts `u - 1` zeros after each pixel, `pad` adds `p0` zeros before and `p1` after
(negative values crop), `FIR_k *` is a true 2D convolution with the kernel `k` ("valid" region
only) and `downsample_d` keeps every `d`-th pixel. A 1D kernel such as `(1, 3, 3, 1)` means its
normalised outer product `k k^T / sum(k)^2`, so a constant image keeps its value (times `gain`).

NCSN++ (Song et al. 2021, App. H) resamples with this anti-aliasing filter instead of nearest
neighbours / average pooling; `Conv2d(up=True)` / `Conv2d(down=True)` fuse the resampling with a
3x3 convolution, padding only once, exactly as StyleGAN2 and score_sde do.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def setup_kernel(k) -> np.ndarray:
  """The 2D FIR kernel of `k` (a 1D kernel means its outer product), normalised to sum to 1."""
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  if k.ndim != 2 or k.shape[0] != k.shape[1]:
    raise ValueError(f"FIR kernel must be 1D or square 2D, got shape {k.shape}")
  return k / np.sum(k)


def upfirdn2d(x, k, up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0):
  """Pad, upsample, FIR-filter and downsample each channel of `x` of shape `(N, H, W, C)`.

  Output size per axis: `(H * up + pad0 + pad1 - len(k)) // down + 1`. The same padding and
  factors apply to both spatial axes.
  """
  k = np.asarray(k, dtype=np.float32)
  channels = x.shape[-1]
  # Zero insertion is interior padding; `up - 1` zeros also follow the last pixel.
  spatial = (pad0, pad1 + up - 1, up - 1)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), spatial, spatial, (0, 0, 0)])
  # A true convolution is a correlation with the flipped kernel; one filter per channel.
  w = jnp.asarray(np.tile(k[::-1, ::-1, None, None], (1, 1, 1, channels)), x.dtype)
  return jax.lax.conv_general_dilated(
    x,
    w,
    window_strides=(down, down),
    padding="VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
  )


def upsample_2d(x, k: Sequence[int] = (1, 1), factor: int = 2, gain: float = 1.0):
  """Upsample `(N, H, W, C)` by `factor` with FIR kernel `k`: output `(N, H*factor, W*factor, C)`.

  The kernel is scaled by `gain * factor**2` so that a constant image stays constant (times
  `gain`); the default `k = (1,) * factor` is nearest-neighbour upsampling.
  """
  k = setup_kernel(k) * (gain * factor**2)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x, k: Sequence[int] = (1, 1), factor: int = 2, gain: float = 1.0):
  """Downsample `(N, H, W, C)` by `factor` with FIR kernel `k`: output `(N, H//factor, W//factor, C)`.

  The default `k = (1,) * factor` is average pooling.
  """
  k = setup_kernel(k) * gain
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x, w, k: Sequence[int] = (1, 1), factor: int = 2, gain: float = 1.0):
  """Fused `upsample_2d` then convolution with `w` of shape `(kh, kw, C_in, C_out)`, padding once.

  A stride-`factor` transposed convolution (here: an input-dilated convolution) followed by the FIR
  filter; output `(N, H*factor, W*factor, C_out)`.
  """
  conv_size = w.shape[0]
  k = setup_kernel(k) * (gain * factor**2)
  p = (k.shape[0] - factor) - (conv_size - 1)
  x = jax.lax.conv_general_dilated(
    x,
    w.astype(x.dtype),
    window_strides=(1, 1),
    padding=[(conv_size - 1, conv_size - 1)] * 2,
    lhs_dilation=(factor, factor),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  return upfirdn2d(x, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x, w, k: Sequence[int] = (1, 1), factor: int = 2, gain: float = 1.0):
  """Fused convolution with `w` of shape `(kh, kw, C_in, C_out)` then `downsample_2d`, padding once."""
  conv_size = w.shape[0]
  k = setup_kernel(k) * gain
  p = (k.shape[0] - factor) + (conv_size - 1)
  x = upfirdn2d(x, k, pad0=(p + 1) // 2, pad1=p // 2)
  return jax.lax.conv_general_dilated(
    x, w.astype(x.dtype), window_strides=(factor, factor), padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def naive_upsample_2d(x, factor: int = 2):
  """Nearest-neighbour upsampling: each pixel becomes a `factor x factor` block."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x, factor: int = 2):
  """Average pooling over non-overlapping `factor x factor` blocks."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


class Conv2d(nn.Module):
  """Convolution with optional FIR upsampling before it or downsampling after it (StyleGAN2).

  Kernel `weight` of shape `(kernel, kernel, C_in, fmaps)` and `bias`; `up` / `down` resample by 2
  with `resample_kernel`. Parameters are float32; the computation runs in `dtype`.
  """

  fmaps: int
  kernel: int = 3
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Any | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ValueError("Conv2d resamples either up or down, not both")
    if self.kernel < 1 or self.kernel % 2 != 1:
      raise ValueError(f"kernel must be odd and positive, got {self.kernel}")
    kernel_init = self.kernel_init or nn.initializers.lecun_normal()
    w = self.param("weight", kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    x = x.astype(self.dtype)
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = jax.lax.conv_general_dilated(
        x, w.astype(self.dtype), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (self.fmaps,)).astype(self.dtype)
    return x
