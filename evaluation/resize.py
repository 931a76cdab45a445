"""Bilinear resizing with the arithmetic of PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`, which
pytorch-fid applies before its Inception (evaluation/inception.py: preprocess). Without PyTorch; on NumPy or JAX
arrays."""

import numpy as np


def _bilinear_taps(in_size, out_size):
  """Source indices (i0, i1) and weights (w0, w1) of `F.interpolate(mode="bilinear", align_corners=False)` along one
  axis, in torch's float32 arithmetic: src = max((dst + 1/2) * in/out - 1/2, 0), i0 = floor(src),
  i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1. The same formula shrinks and enlarges: torch does not
  antialias (`jax.image.resize` would, when shrinking)."""
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
  i0 = np.floor(src).astype(np.int32)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = (src - i0.astype(np.float32)).astype(np.float32)
  return i0, i1, np.float32(1) - w1, w1


def resize_bilinear(images, size):
  """(n, H, W, C) -> (n, size, size, C) as torch's `F.interpolate(x, (size, size), mode="bilinear",
  align_corners=False)`: out = h0 (w0 x[i0, j0] + w1 x[i0, j1]) + h1 (w0 x[i1, j0] + w1 x[i1, j1]), summed in torch's
  order."""
  h_i0, h_i1, h0, h1 = _bilinear_taps(images.shape[1], size)
  w_i0, w_i1, w0, w1 = _bilinear_taps(images.shape[2], size)
  rows0, rows1 = images[:, h_i0], images[:, h_i1]
  w0, w1 = w0[None, None, :, None], w1[None, None, :, None]
  top = w0 * rows0[:, :, w_i0] + w1 * rows0[:, :, w_i1]
  bottom = w0 * rows1[:, :, w_i0] + w1 * rows1[:, :, w_i1]
  return h0[None, :, None, None] * top + h1[None, :, None, None] * bottom
