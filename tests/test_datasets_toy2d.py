"""The 2D toys' closed-form scores: the mixture's is the gradient of its log density, and the empirical score of one
point is a Gaussian's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.datasets.toy2d import empirical_score, gmm_log_prob, gmm_score


@pytest.mark.slow
def test_gmm_score_is_the_gradient_of_its_log_density():
  x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
  sigma = jnp.linspace(0.01, 3.0, 64)
  autodiff = jax.vmap(jax.grad(lambda xi, s: gmm_log_prob(xi[None], s)[0]))(x, sigma)
  np.testing.assert_allclose(gmm_score(x, sigma), autodiff, rtol=1e-4, atol=1e-4)


def test_empirical_score_of_one_point_is_the_gaussian_score():
  point = np.array([[1.0, -2.0]], np.float32)
  x = jax.random.normal(jax.random.key(1), (16, 2))
  sigma = jnp.full((16,), 0.7)
  np.testing.assert_allclose(empirical_score(point)(x, sigma), -(x - point) / 0.49, rtol=1e-5)
