"""Sample-quality and score-accuracy metrics."""

import jax.numpy as jnp
import numpy as np


def sliced_wasserstein(a, b, num_projections=256, seed=0):
  """Sliced 2-Wasserstein distance between two equal-size samples (Rabin et al. 2011):

      SW_2(a, b) = ( E_theta W_2^2(theta^T a, theta^T b) )^(1/2),  theta uniform on the sphere,

  where each 1D W_2 compares sorted projections. Samples are flattened to vectors.
  """
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = np.asarray(b, np.float64).reshape(len(b), -1)
  n = min(len(a), len(b))
  a, b = a[:n], b[:n]
  theta = np.random.default_rng(seed).standard_normal((a.shape[1], num_projections))
  theta /= np.linalg.norm(theta, axis=0, keepdims=True)
  pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
  return float(np.sqrt(np.mean(np.square(pa - pb))))


def score_error(score, truth):
  """Mean squared error per element between a score and the true one, and the same relative to
  the mean squared norm of the true score."""
  mse = jnp.mean(jnp.square(score - truth))
  return mse, mse / jnp.mean(jnp.square(truth))
