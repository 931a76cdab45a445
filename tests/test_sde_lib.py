"""The score SDEs against closed forms on Gaussian data x_0 ~ N(MU, S^2 I)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import sde_lib

from helpers import sde_table

MU, S, N = 0.5, 0.3, 20_000
SDES = sde_table(sigma_max=5.0, N=1000)


def gaussian_marginal(sde, t):
  """x_t = m(t) x_0 + std(t) z for Gaussian x_0: mean m MU, variance m^2 S^2 + std^2."""
  t = jnp.full((1,), t)
  m, std = sde.marginal_prob(jnp.ones((1, 1)), t)
  m = float(m[0, 0])
  return m * MU, m**2 * S**2 + float(std[0]) ** 2


def exact_score(sde):
  def score(x, t):
    m, std = sde.marginal_prob(jnp.ones_like(x), t)
    return -(x - m * MU) / (m**2 * S**2 + std.reshape(-1, 1) ** 2)

  return score


def euler_maruyama(sde_obj, x, rng, t0, t1, steps):
  """Integrate dx = f dt + g dw from t0 to t1 (t1 < t0 runs backward in time, as for reverse SDEs)."""
  dt = (t1 - t0) / steps

  def body(x, i):
    t = jnp.full((x.shape[0],), t0 + i * dt)
    drift, diffusion = sde_obj.sde(x, t)
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
    return x + drift * dt + diffusion[:, None] * jnp.sqrt(abs(dt)) * z, None

  return jax.lax.scan(body, x, jnp.arange(steps))[0]


def data(rng):
  return MU + S * jax.random.normal(rng, (N, 2))


@pytest.mark.parametrize("name", SDES)
def test_forward_sde_has_the_stated_marginals(name):
  sde = SDES[name]()
  t = 0.6
  x = euler_maruyama(sde, data(jax.random.key(0)), jax.random.key(1), 0.0, t, 1000)
  mean, var = gaussian_marginal(sde, t)
  np.testing.assert_allclose(np.mean(x), mean, atol=4 * np.sqrt(var / x.size) + 0.01 * abs(mean))
  np.testing.assert_allclose(np.var(x), var, rtol=0.03)


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_sde_and_probability_flow_return_the_data(name, probability_flow):
  sde = SDES[name]()
  mean_T, var_T = gaussian_marginal(sde, 1.0)
  x_T = mean_T + np.sqrt(var_T) * jax.random.normal(jax.random.key(2), (N, 2))
  reverse = sde.reverse(exact_score(sde), probability_flow=probability_flow)
  x = euler_maruyama(reverse, x_T, jax.random.key(3), 1.0, 1e-3, 2000)
  mean_0, var_0 = gaussian_marginal(sde, 1e-3)
  np.testing.assert_allclose(np.mean(x), mean_0, atol=0.01)
  np.testing.assert_allclose(np.var(x), var_0, rtol=0.05)


@pytest.mark.parametrize("name", SDES)
def test_score_is_minus_noise_over_std(name):
  # x_t = m x_0 + std eps is jointly Gaussian with eps, so E[eps | x_t] is linear in x_t; its slope
  # must be -std times the slope of the exact score (score = -E[eps | x_t] / std).
  sde = SDES[name]()
  t = jnp.full((N,), 0.4)
  x0 = data(jax.random.key(4))[:, :1]
  eps = jax.random.normal(jax.random.key(5), x0.shape)
  mean, std = sde.marginal_prob(x0, t)
  xt = mean + std[:, None] * eps
  slope = np.cov(np.ravel(eps), np.ravel(xt))[0, 1] / np.var(np.ravel(xt))
  score_slope = float(jax.grad(lambda x: exact_score(sde)(x.reshape(1, 1), t[:1]).sum())(jnp.zeros(())))
  np.testing.assert_allclose(slope, -float(std[0]) * score_slope, rtol=0.03)


@pytest.mark.parametrize("name", SDES)
def test_prior_entropy(name):
  sde = SDES[name]()
  z = sde.prior_sample(jax.random.key(6), (N, 3))
  _, var_T = gaussian_marginal(sde, 1.0)
  prior_std = float(jnp.std(z))
  entropy = 1.5 * np.log(2 * np.pi * np.e * prior_std**2)  # of N(0, prior_std^2 I_3)
  np.testing.assert_allclose(-np.mean(sde.prior_logp(z)), entropy, rtol=0.01)
  # The prior is the marginal at T but for the data's variance, which has all but vanished (VP,
  # sub-VP: m(1)^2 S^2 ~ 4e-6) or is small against sigma_max^2 (VE: S^2 / 25).
  np.testing.assert_allclose(prior_std**2, var_T, rtol=0.05)


def ddpm_chain(beta_min, beta_max, N):
  """DDPM's table in float64 (Ho et al. 2020): beta_i, alpha_bar_i = prod_{j<=i} (1 - beta_j)."""
  betas = np.linspace(beta_min / N, beta_max / N, N)
  return betas, np.cumprod(1.0 - betas)


def test_discrete_chains_are_smld_and_ddpm_at_their_own_times():
  # SMLD: geometric levels from sigma_min to sigma_max, at t_i = i / (N - 1).
  ve = sde_lib.VESDE(0.01, 5.0, N=1000)
  np.testing.assert_allclose(ve.discrete_sigmas, np.geomspace(0.01, 5.0, 1000), rtol=1e-6)
  np.testing.assert_allclose(ve.discrete_times, np.arange(1000) / 999, atol=1e-6)
  # DDPM: at t_i the continuous kernel is the chain's, m(t_i)^2 = alpha_bar_i, and the noise level is
  # the chain's own sqrt((1 - alpha_bar_i) / alpha_bar_i), at every level (level 0 included: t_0 > 0).
  vp = sde_lib.VPSDE(0.1, 20.0, N=1000)
  _, alpha_bar = ddpm_chain(0.1, 20.0, 1000)
  t = vp.discrete_times
  assert float(t[0]) > 0 and np.all(np.diff(np.asarray(t)) > 0)
  m, std = vp.marginal_coefficients(t)
  np.testing.assert_allclose(np.square(np.asarray(m, np.float64)), alpha_bar, rtol=1e-5)
  np.testing.assert_allclose(np.square(np.asarray(std, np.float64)), 1 - alpha_bar, rtol=1e-5)
  np.testing.assert_allclose(vp.noise_level(t), np.sqrt((1 - alpha_bar) / alpha_bar), rtol=1e-5)
  # The continuous times that score_sde used, i / (N - 1), are off: at level 1 the noise is 0.71 of the chain's.
  assert abs(float(vp.noise_level(jnp.asarray(1 / 999))) / np.sqrt((1 - alpha_bar[1]) / alpha_bar[1]) - 0.71) < 0.01
  assert not sde_lib.SubVPSDE(0.1, 20.0, N=1000).has_discrete_chain
  with pytest.raises(ValueError, match="SubVPSDE has no discrete chain"):
    _ = sde_lib.SubVPSDE(0.1, 20.0, N=1000).discrete_times


@pytest.mark.parametrize("name", SDES)
def test_time_of_noise_level_inverts_noise_level(name):
  sde = SDES[name]()
  t = jnp.linspace(1e-3, 1.0, 101)
  np.testing.assert_allclose(sde.time_of_noise_level(sde.noise_level(t)), t, rtol=2e-5, atol=1e-7)


def test_transitions_between_levels_are_the_chains_steps():
  vp = sde_lib.VPSDE(0.1, 20.0, N=1000)
  betas, _ = ddpm_chain(0.1, 20.0, 1000)
  t = vp.discrete_times
  a, var = vp.transition(t[1:], t[:-1])  # level i - 1 up to level i: sqrt(1 - beta_i), beta_i
  np.testing.assert_allclose(np.square(np.asarray(a, np.float64)), 1 - betas[1:], rtol=1e-5)
  np.testing.assert_allclose(var, betas[1:], rtol=2e-3)
  np.testing.assert_allclose(vp.langevin_alpha(t[:-1], t[1:]), 1 - betas[1:], rtol=1e-5)  # score_sde's alpha_i
  ve = sde_lib.VESDE(0.01, 5.0, N=1000)
  sigmas = np.geomspace(0.01, 5.0, 1000)
  a, var = ve.transition(ve.discrete_times[1:], ve.discrete_times[:-1])
  np.testing.assert_allclose(a, 1.0)
  np.testing.assert_allclose(var, np.diff(sigmas**2), rtol=2e-3)
  np.testing.assert_allclose(np.sum(var), 5.0**2 - 0.01**2, rtol=1e-4)  # the increments add up
  np.testing.assert_allclose(ve.langevin_alpha(ve.discrete_times[:-1], ve.discrete_times[1:]), 1.0)


@pytest.mark.parametrize("num_steps", [2, 10, 1000])
def test_langevin_alpha_is_a_fraction_at_every_grid(num_steps):
  # score_sde's 1 - beta(t) / N is negative for N <= 18 (beta_max = 20); the chain's own is not.
  for sde in (SDES["vp"](), SDES["subvp"]()):
    t = jnp.linspace(1.0, 1e-3, num_steps + 1)
    alpha = np.asarray(sde.langevin_alpha(t[1:], t[:-1]))
    assert np.all((alpha > 0) & (alpha <= 1)), alpha


@pytest.mark.parametrize("name", SDES)
def test_ancestral_and_tweedie_steps_have_the_exact_conditional_mean(name):
  # Gaussian data: x_s and x_t are jointly Gaussian, E[x_s | x_t] and E[x_0 | x_t] are linear in x_t.
  sde = SDES[name]()
  s, t = 0.3, 0.35
  (m_s, std_s), (m_t, std_t) = (sde.marginal_coefficients(jnp.asarray(v)) for v in (s, t))
  x_t = jnp.linspace(-2.0, 2.0, 9)[:, None]
  tt, ss = jnp.full((9,), t), jnp.full((9,), s)
  var_t = m_t**2 * S**2 + std_t**2
  cov_st = m_s * m_t * S**2 + (m_t / m_s) * std_s**2  # x_t = (m_t/m_s) x_s + independent noise
  expected = m_s * MU + cov_st / var_t * (x_t - m_t * MU)
  mean = sde.ancestral_step(x_t, exact_score(sde)(x_t, tt), tt, ss, jnp.zeros_like(x_t))
  np.testing.assert_allclose(mean, expected, rtol=1e-4, atol=1e-5)
  expected_x0 = MU + m_t * S**2 / var_t * (x_t - m_t * MU)
  np.testing.assert_allclose(sde.tweedie_denoise(exact_score(sde), x_t, tt), expected_x0, rtol=1e-4, atol=1e-5)
