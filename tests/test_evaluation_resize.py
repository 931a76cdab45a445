"""evaluation/resize.py: PyTorch's bilinear `F.interpolate(align_corners=False)` on hand-computed cases."""

import numpy as np

from scorejax.evaluation.resize import resize_bilinear


def test_enlarging_2x2_to_4x4_follows_torchs_formula():
  """in=2, out=4: src = max((d + 1/2) * 2/4 - 1/2, 0) = 0, 1/4, 3/4, 5/4; src 5/4 has i0 = 1 = i1 (clamped at the
  edge), so the weights on x[1] are u = 0, 1/4, 3/4, 1. Bilinear interpolation of x[i, j] = 2i + j, linear in each
  index, is then 2 u[a] + u[b]."""
  x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)[None, :, :, None]
  u = np.array([0, 0.25, 0.75, 1], np.float32)
  expected = 2 * u[:, None] + u[None, :]
  np.testing.assert_allclose(resize_bilinear(x, size=4)[0, :, :, 0], expected, rtol=0, atol=1e-7)


def test_shrinking_4x4_to_2x2_does_not_antialias():
  """in=4, out=2: src = (d + 1/2) * 2 - 1/2 = 1/2, 5/2: each output is the mean of two neighbours, x[i, j] = 4i + j
  giving 4 p[a] + p[b], p = (1/2, 5/2). An antialiased shrink (a triangle twice as wide) would mix in x[2] at a = 0."""
  x = (4 * np.arange(4)[:, None] + np.arange(4)[None, :]).astype(np.float32)[None, :, :, None]
  p = np.array([0.5, 2.5], np.float32)
  np.testing.assert_allclose(resize_bilinear(x, size=2)[0, :, :, 0], 4 * p[:, None] + p[None, :], atol=1e-6)
