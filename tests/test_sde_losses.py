"""SDE losses at the exact score of Gaussian data x_0 ~ N(MU, S^2 I) equal their closed-form minima."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import losses
from scorejax import sde_lib

MU, S, D, BATCH = 0.5, 0.3, 4, 200_000
SDES = {"ve": lambda: sde_lib.VESDE(0.01, 5.0, N=100), "vp": lambda: sde_lib.VPSDE(0.1, 20.0, N=100),
        "subvp": lambda: sde_lib.SubVPSDE(0.1, 20.0, N=100)}


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
    return -(x - m * MU) / (m ** 2 * S ** 2 + jnp.reshape(std, (-1, 1)) ** 2)
  return score


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_continuous_loss_of_the_exact_score(x0, name, likelihood_weighting):
  # Per element, E || s* + z/std ||^2 = m^2 S^2 / (std^2 (m^2 S^2 + std^2)) at time t, times lambda(t).
  sde, eps = SDES[name](), 0.05
  loss = losses.continuous_dsm_loss(exact_score(sde), x0, jax.random.key(1), sde, eps=eps,
                                    likelihood_weighting=likelihood_weighting)
  t = np.linspace(eps, 1.0, 20_001)
  m, std, g2 = coefficients(sde, t)
  per_t = m ** 2 * S ** 2 / (std ** 2 * (m ** 2 * S ** 2 + std ** 2))
  expected = np.mean(per_t * (g2 if likelihood_weighting else std ** 2))
  np.testing.assert_allclose(loss, expected, rtol=0.03)


@pytest.mark.parametrize("name", SDES)
def test_sum_over_dimensions_is_dim_times_mean(x0, name):
  sde = SDES[name]()
  args = (exact_score(sde), x0[:1000], jax.random.key(2), sde)
  np.testing.assert_allclose(losses.continuous_dsm_loss(*args, reduce_mean=False),
                             D * losses.continuous_dsm_loss(*args, reduce_mean=True), rtol=1e-5)


def test_smld_loss_of_the_exact_score(x0):
  sde = SDES["ve"]()
  score = lambda x, t: -(x - MU) / (S ** 2 + sde.marginal_prob(x, t)[1][:, None] ** 2)
  sigmas = np.asarray(sde.discrete_sigmas, np.float64)
  expected = np.mean(S ** 2 / (S ** 2 + sigmas ** 2))
  np.testing.assert_allclose(losses.smld_loss(score, x0, jax.random.key(3), sde), expected, rtol=0.02)


def test_ddpm_loss_of_the_exact_score(x0):
  sde = SDES["vp"]()
  alpha_bar = jnp.cumprod(sde.alphas)

  def score(x, t):
    ab = alpha_bar[jnp.round(t * (sde.N - 1)).astype(jnp.int32)][:, None]
    return -(x - jnp.sqrt(ab) * MU) / (ab * S ** 2 + 1 - ab)
  ab = np.asarray(alpha_bar, np.float64)
  expected = np.mean(ab * S ** 2 / (ab * S ** 2 + 1 - ab))
  np.testing.assert_allclose(losses.ddpm_loss(score, x0, jax.random.key(4), sde), expected, rtol=0.02)


def test_loss_selection_follows_the_score_sde_flags():
  ve, vp, subvp = SDES["ve"](), SDES["vp"](), SDES["subvp"]()
  x, rng = jnp.ones((8, D)), jax.random.key(5)
  zero = lambda x, t: jnp.zeros_like(x)
  # With a zero score each loss is E||z||^2 per element = 1: a check that every path runs.
  for sde, continuous in ((ve, True), (ve, False), (vp, False), (subvp, True)):
    loss = losses.get_sde_loss_fn(sde, continuous=continuous)(zero, x, rng)
    np.testing.assert_allclose(loss, np.mean(np.square(jax.random.normal(jax.random.split(rng)[1], x.shape))),
                               rtol=1e-5)
  with pytest.raises(ValueError, match="VE \\(SMLD\\) and VP \\(DDPM\\) SDEs, not SubVPSDE"):
    losses.get_sde_loss_fn(subvp, continuous=False)
  with pytest.raises(ValueError, match="needs training.continuous=True"):
    losses.get_sde_loss_fn(vp, continuous=False, likelihood_weighting=True)
