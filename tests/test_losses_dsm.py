"""Denoising score matching against closed forms on Gaussian data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import losses, models, sde_lib

S = 0.7  # data standard deviation: x ~ N(MU, S^2 I)
MU = 0.3
DIM = 4
N = 400_000


def optimal_score(x, sigma):
  """Score of the noisy data N(MU, (S^2 + sigma^2) I)."""
  sigma = jnp.reshape(sigma, (-1, 1))
  return -(x - MU) / (S**2 + sigma**2)


@pytest.fixture(scope="module")
def data():
  return MU + S * jax.random.normal(jax.random.key(0), (N, DIM))


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_optimal_score_attains_the_closed_form_minimum(data, sigma):
  # E (s*(x~) + eps/sigma)^2 per element = S^2 / (sigma^2 (S^2 + sigma^2)).
  loss = losses.score_matching_loss(optimal_score, data, sigma, jax.random.key(1))
  expected = S**2 / (sigma**2 * (S**2 + sigma**2))
  np.testing.assert_allclose(loss, expected, rtol=0.01)


@pytest.mark.parametrize("c", [0.0, 0.5, 1.5])
def test_dsm_equals_explicit_score_matching_plus_a_constant(data, c):
  # For s = c s*, DSM - DSM(s*) = E||s - s*||^2 = (c - 1)^2 / (S^2 + sigma^2) per element (Vincent 2011).
  sigma, rng = 0.5, jax.random.key(2)
  scaled = lambda x, s: c * optimal_score(x, s)
  excess = losses.score_matching_loss(scaled, data, sigma, rng) - losses.score_matching_loss(
    optimal_score, data, sigma, rng
  )
  np.testing.assert_allclose(excess, (c - 1) ** 2 / (S**2 + sigma**2), rtol=0.02)


def test_loss_is_the_defined_formula():
  x = jax.random.normal(jax.random.key(3), (16, 3))
  sigma = jnp.linspace(0.1, 1.0, 16)
  score_fn = lambda y, s: jnp.sin(y) * s[:, None]
  rng = jax.random.key(4)
  noise = jax.random.normal(rng, x.shape)
  noisy = x + sigma[:, None] * noise
  manual = jnp.mean((score_fn(noisy, sigma) + noise / sigma[:, None]) ** 2)
  np.testing.assert_allclose(losses.score_matching_loss(score_fn, x, sigma, rng), manual, rtol=1e-6)


def test_scalar_sigma_equals_per_example_sigma():
  x = jax.random.normal(jax.random.key(5), (32, 2, 2, 1))
  score_fn = lambda y, s: -y * s.reshape(-1, 1, 1, 1)
  rng = jax.random.key(6)
  a = losses.score_matching_loss(score_fn, x, 0.3, rng)
  b = losses.score_matching_loss(score_fn, x, jnp.full((32,), 0.3), rng)
  np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_noise_prediction_and_score_forms_give_the_same_training_loss():
  """With s = -eps_hat / sigma, the sigma^2-weighted DSM loss is the DDPM loss ||eps_hat - eps||^2."""
  model = models.get_model("mlp", nf=32, num_layers=2)
  params = models.init_params(model, jax.random.key(7), (3,))
  # Make the network non-trivial: the last layer is zero-initialised.
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)
  sde = sde_lib.VESDE(0.01, 10.0, N=20)
  x = jax.random.normal(jax.random.key(8), (256, 3))
  rng = jax.random.key(9)

  score_fn = models.get_score_fn(model, params, sde, prediction="noise")
  dsm = losses.discrete_dsm_loss(score_fn, x, rng, sde, reduce_mean=True)

  # The DDPM objective written out independently, with the same random draws.
  rng_i, rng_noise = jax.random.split(rng)
  sigma = sde.discrete_sigmas[jax.random.randint(rng_i, (x.shape[0],), 0, sde.N)]
  eps = jax.random.normal(rng_noise, x.shape)
  eps_hat = model.apply({"params": params}, x + sigma[:, None] * eps, jnp.log(sigma))
  ddpm = jnp.mean(jnp.square(eps_hat - eps))
  np.testing.assert_allclose(dsm, ddpm, rtol=1e-5)
  assert ddpm > 0.01  # the comparison is not between two zeros


def test_the_ncsn_loss_weights_levels_equally_for_the_optimal_score(data):
  # NCSN's objective (Song & Ermon 2019, Eq. 5-6) is training's discrete loss over the VE chain's levels:
  # sigma^2 * S^2 / (sigma^2 (S^2 + sigma^2)) = S^2 / (S^2 + sigma^2), O(1) at every level.
  sde = sde_lib.VESDE(0.01, 5.0, 10)
  score_fn = lambda x, t: optimal_score(x, sde.noise_level(t))
  loss = losses.discrete_dsm_loss(score_fn, data, jax.random.key(10), sde, reduce_mean=True)
  expected = np.mean(S**2 / (S**2 + np.asarray(sde.discrete_sigmas) ** 2))
  np.testing.assert_allclose(loss, expected, rtol=0.02)


def test_geometric_sigmas():
  sigmas = np.asarray(sde_lib.get_sigmas(0.01, 50.0, 11))
  np.testing.assert_allclose(sigmas[[0, -1]], [50.0, 0.01], rtol=1e-5)
  ratios = sigmas[1:] / sigmas[:-1]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
