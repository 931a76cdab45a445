"""The RefineNet layers of NCSN and NCSNv2 (models/refinenet_layers.py): instance norm++ and its
conditional form against NumPy, and the bilinear resize that aligns corners."""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.models.refinenet_layers import (
  ConditionalInstanceNormPlus,
  InstanceNormPlus,
  resize_bilinear_align_corners,
)


def _numpy_instance_norm_plus(x, gamma, alpha, beta):
  """z = gamma ((x - mu) / s + alpha (mu - mean_c mu) / std_c(mu)) + beta, std over channels unbiased."""
  mu = x.mean(axis=(1, 2))
  mu_tilde = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, ddof=1, keepdims=True) + 1e-5)
  h = (x - mu[:, None, None]) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
  expand = lambda p: np.reshape(p, (-1, 1, 1, p.shape[-1]))
  return expand(gamma) * (h + expand(alpha) * mu_tilde[:, None, None]) + expand(beta)


def test_instance_norm_plus_matches_numpy():
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((2, 5, 4, 6)) * rng.uniform(0.5, 3, 6) + rng.standard_normal(6)).astype(np.float32)
  norm = InstanceNormPlus()
  params = jax.jit(norm.init)(jax.random.key(0), x)["params"]
  np.testing.assert_array_equal(params["beta"], 0)
  assert np.all(np.abs(params["gamma"] - 1) < 0.1) and np.all(np.abs(params["alpha"] - 1) < 0.1)
  gamma, alpha, beta = (rng.standard_normal(6).astype(np.float32) for _ in range(3))
  out = jax.jit(norm.apply)({"params": {"gamma": gamma, "alpha": alpha, "beta": beta}}, x)
  np.testing.assert_allclose(out, _numpy_instance_norm_plus(x, gamma, alpha, beta), rtol=1e-4, atol=1e-4)


def test_conditional_instance_norm_plus_uses_the_row_of_each_level():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32) + 2
  y = jnp.array([3, 1])
  norm = ConditionalInstanceNormPlus(num_classes=4)
  table = jax.jit(norm.init)(jax.random.key(0), x, y)["params"]["embedding"]
  assert table.shape == (4, 18)
  assert np.all(np.abs(table[:, :12] - 1) < 0.1)
  np.testing.assert_array_equal(table[:, 12:], 0)
  table = rng.standard_normal((4, 18)).astype(np.float32)
  out = jax.jit(norm.apply)({"params": {"embedding": table}}, x, y)
  gamma, alpha, beta = np.split(table[np.asarray(y)], 3, axis=-1)
  np.testing.assert_allclose(out, _numpy_instance_norm_plus(x, gamma, alpha, beta), rtol=1e-4, atol=1e-4)


def test_bilinear_resize_aligns_corners_and_is_exact_on_linear_images():
  """Bilinear interpolation reproduces an affine image; output pixel j sits at j (n_in - 1) / (n_out - 1)."""
  i, j = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
  x = jnp.asarray((10 * i + j)[None, :, :, None], jnp.float32)
  out = jax.jit(resize_bilinear_align_corners, static_argnums=1)(x, (5, 7))
  p, q = np.meshgrid(np.arange(5) * 2 / 4, np.arange(7) * 3 / 6, indexing="ij")
  np.testing.assert_allclose(out[0, :, :, 0], 10 * p + q, rtol=1e-6, atol=1e-5)
