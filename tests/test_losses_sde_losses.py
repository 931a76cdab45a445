"""SDE losses at the exact score of Gaussian data x_0 ~ N(MU, S^2 I) equal their closed-form minima."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import losses, models

from helpers import make_sde, sde_table

MU, S, D, BATCH = 0.5, 0.3, 4, 200_000
SDES = sde_table(sigma_max=5.0, N=100)


@pytest.fixture(scope="module")
def x0():
  return MU + S * jax.random.normal(jax.random.key(0), (BATCH, D))


def coefficients(sde, t):
  """m(t), std(t) and g(t)^2 as float64 numpy arrays."""
  t = jnp.asarray(t, jnp.float32)
  m, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
  _, g = sde.sde(jnp.zeros((t.shape[0], 1)), t)
  return (np.asarray(m[:, 0], np.float64), np.asarray(std, np.float64), np.asarray(g, np.float64) ** 2)


def exact_score(sde):
  def score(x, t):
    m, std = sde.marginal_prob(jnp.ones_like(x), t)
    return -(x - m * MU) / (m**2 * S**2 + jnp.reshape(std, (-1, 1)) ** 2)

  return score


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_continuous_loss_of_the_exact_score(x0, name, likelihood_weighting):
  # Per element, E || s* + z/std ||^2 = m^2 S^2 / (std^2 (m^2 S^2 + std^2)) at time t, times lambda(t).
  sde, eps = SDES[name](), 0.05
  loss = losses.continuous_dsm_loss(
    exact_score(sde), x0, jax.random.key(1), sde, eps=eps, reduce_mean=True, likelihood_weighting=likelihood_weighting
  )
  t = np.linspace(eps, 1.0, 20_001)
  m, std, g2 = coefficients(sde, t)
  per_t = m**2 * S**2 / (std**2 * (m**2 * S**2 + std**2))
  expected = np.mean(per_t * (g2 if likelihood_weighting else std**2))
  np.testing.assert_allclose(loss, expected, rtol=0.03)


@pytest.mark.parametrize("name", SDES)
def test_sum_over_dimensions_is_dim_times_mean(x0, name):
  sde = SDES[name]()
  args = (exact_score(sde), x0[:1000], jax.random.key(2), sde, 1e-5)
  np.testing.assert_allclose(
    losses.continuous_dsm_loss(*args, reduce_mean=False, likelihood_weighting=False),
    D * losses.continuous_dsm_loss(*args, reduce_mean=True, likelihood_weighting=False),
    rtol=1e-5,
  )


def test_smld_loss_of_the_exact_score(x0):
  # Level i carries noise sigma_i: per element the minimum is S^2 / (S^2 + sigma_i^2).
  sde = SDES["ve"]()
  sigmas = np.geomspace(0.01, 5.0, sde.N)
  expected = np.mean(S**2 / (S**2 + sigmas**2))
  loss = losses.discrete_dsm_loss(exact_score(sde), x0, jax.random.key(3), sde, reduce_mean=True)
  np.testing.assert_allclose(loss, expected, rtol=0.02)


def test_ddpm_loss_of_the_exact_score(x0):
  # x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) z: the minimum is ab S^2 / (ab S^2 + 1 - ab).
  sde = SDES["vp"]()
  betas = np.linspace(0.1 / sde.N, 20.0 / sde.N, sde.N)
  ab = np.cumprod(1.0 - betas)
  expected = np.mean(ab * S**2 / (ab * S**2 + 1 - ab))
  loss = losses.discrete_dsm_loss(exact_score(sde), x0, jax.random.key(4), sde, reduce_mean=True)
  np.testing.assert_allclose(loss, expected, rtol=0.02)


class EchoNoiseLevel(nn.Module):
  """A 'network' that outputs its conditioning input `c_noise`: what the score wrapper tells it."""

  @nn.compact
  def __call__(self, x, c_noise, train=False):
    bias = self.param("bias", nn.initializers.zeros, ())
    return jnp.broadcast_to(jnp.reshape(c_noise, (-1,) + (1,) * (x.ndim - 1)), x.shape) + bias


@pytest.mark.parametrize("name", ["ve", "vp"])
@pytest.mark.slow
def test_every_level_is_finite_and_conditioned_on_the_chains_own_noise(name):
  # N = 1000 as the published variants; every level drawn once (level 0 used to land on t = 0 for DDPM).
  sde = make_sde(name, 1000, sigma_max=50.0)
  if name == "ve":
    chain = np.geomspace(0.01, 50.0, 1000)
  else:
    ab = np.cumprod(1.0 - np.linspace(0.1 / 1000, 20.0 / 1000, 1000))
    chain = np.sqrt((1 - ab) / ab)
  levels = jnp.arange(1000)
  x = 0.5 * jnp.ones((1000, 3, 3, 1))
  echo = EchoNoiseLevel()
  told = models.get_score_fn(echo, {"bias": jnp.zeros(())}, sde, prediction="score")(x, sde.discrete_times[levels])
  np.testing.assert_allclose(np.exp(np.asarray(told[:, 0, 0, 0], np.float64)), chain, rtol=1e-5)
  # The real score wrapper around a real network (noise prediction, as DDPM), one loss term per level.
  net = models.get_model("ncsn_small", nf=4, ch_mult=(1,))
  params = models.init_params(net, jax.random.key(0), (3, 3, 1))
  score_fn = models.get_score_fn(net, params, sde, prediction="noise")
  per_level = jax.vmap(lambda i, key: losses.level_dsm_loss(score_fn, x[:1], key, sde, i[None], True))(
    levels, jax.random.split(jax.random.key(1), 1000)
  )
  assert np.all(np.isfinite(per_level)), np.flatnonzero(~np.isfinite(per_level))


def test_loss_selection_follows_the_score_sde_flags():
  ve, vp, subvp = SDES["ve"](), SDES["vp"](), SDES["subvp"]()
  x, rng = jnp.ones((8, D)), jax.random.key(5)
  zero = lambda x, t: jnp.zeros_like(x)
  # With a zero score each loss is E||z||^2 per element = 1: a check that every path runs.
  for sde, continuous in ((ve, True), (ve, False), (vp, False), (subvp, True)):
    loss = losses.get_sde_loss_fn(sde, continuous=continuous, reduce_mean=True, likelihood_weighting=False, eps=1e-5)(
      zero, x, rng
    )
    np.testing.assert_allclose(
      loss, np.mean(np.square(jax.random.normal(jax.random.split(rng)[1], x.shape))), rtol=1e-5
    )
  with pytest.raises(ValueError, match="VE \\(SMLD\\) or VP \\(DDPM\\), not SubVPSDE"):
    losses.get_sde_loss_fn(subvp, continuous=False, reduce_mean=True, likelihood_weighting=False, eps=1e-5)
  with pytest.raises(ValueError, match="needs training.continuous=True"):
    losses.get_sde_loss_fn(vp, continuous=False, reduce_mean=True, likelihood_weighting=True, eps=1e-5)
