"""The score SDEs against closed forms on Gaussian data x_0 ~ N(MU, S^2 I)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import sde_lib

MU, S, N = 0.5, 0.3, 20_000
SDES = {"ve": lambda: sde_lib.VESDE(0.01, 5.0, N=1000), "vp": lambda: sde_lib.VPSDE(0.1, 20.0, N=1000),
        "subvp": lambda: sde_lib.SubVPSDE(0.1, 20.0, N=1000)}


def gaussian_marginal(sde, t):
  """x_t = m(t) x_0 + std(t) z for Gaussian x_0: mean m MU, variance m^2 S^2 + std^2."""
  t = jnp.full((1,), t)
  m, std = sde.marginal_prob(jnp.ones((1, 1)), t)
  m = float(m[0, 0])
  return m * MU, m ** 2 * S ** 2 + float(std[0]) ** 2


def exact_score(sde):
  def score(x, t):
    m, std = sde.marginal_prob(jnp.ones_like(x), t)
    return -(x - m * MU) / (m ** 2 * S ** 2 + std.reshape(-1, 1) ** 2)
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
  entropy = 1.5 * np.log(2 * np.pi * np.e * prior_std ** 2)  # of N(0, prior_std^2 I_3)
  np.testing.assert_allclose(-np.mean(sde.prior_logp(z)), entropy, rtol=0.01)
  # The prior is the marginal at T but for the data's variance, which has all but vanished (VP,
  # sub-VP: m(1)^2 S^2 ~ 4e-6) or is small against sigma_max^2 (VE: S^2 / 25).
  np.testing.assert_allclose(prior_std ** 2, var_T, rtol=0.05)


def test_discrete_chains_match_the_continuous_marginals():
  ve = sde_lib.VESDE(0.01, 5.0, N=1000)
  t = jnp.linspace(0, 1, 1000)
  _, G = ve.discretize(jnp.zeros((1000, 1)), t)
  np.testing.assert_allclose(np.sum(np.square(G)), 5.0 ** 2, rtol=1e-4)  # sum of increments = sigma_N^2
  vp = sde_lib.VPSDE(0.1, 20.0, N=1000)
  # DDPM's alpha_bar_i = prod_{j<=i} (1 - beta_j) against m(t_i)^2 = exp(-int_0^t beta), in logs:
  # the two differ by the second-order terms sum beta_j^2 / 2, under 1% here.
  log_alpha_bar = np.cumsum(np.log(np.asarray(vp.alphas, np.float64)))
  t_i = (np.arange(1, 1001)) / 1000
  np.testing.assert_allclose(log_alpha_bar[99::100], 2 * vp.log_mean_coeff(t_i[99::100]), rtol=0.01)
