"""The seed API keeps its published signatures and defaults: `score_matching_loss`, `langevin_dynamics` and
`annealed_langevin_dynamics` called exactly as the README's first example showed them (commit daa774e):

    sigmas = sde_lib.get_sigmas(0.01, 8.0, 30)
    x = samplers.annealed_langevin_dynamics(gmm_score, 8 * jax.random.normal(jax.random.key(0), (1000, 2)),
                                            jax.random.key(1), sigmas, n_steps_each=50, step_lr=5e-6)
    loss = losses.score_matching_loss(gmm_score, x, 0.1, jax.random.key(2))

and `langevin_dynamics(score_fn, x_init, rng, step_size, n_steps)`, positionally, as the README's equation table
names it. The annealed sampler's Tweedie denoising step is off unless asked for. Each is checked on Gaussian
data with its exact score, where the law of the chain and the loss are known in closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import losses, samplers, sde_lib
from scorejax.datasets.toy2d import GMM_MEANS, GMM_WEIGHTS, gmm_score

MU, S = 0.5, 0.02  # data N(MU, S^2 I); S of the order of sigma_L, so that denoising changes the law visibly


def gaussian_score(x, sigma):
  """The exact score of the data convolved with N(0, sigma^2 I): `-(x - MU) / (S^2 + sigma^2)`."""
  return -(x - MU) / (S**2 + jnp.reshape(sigma, (-1, 1)) ** 2)


def linear_chain_moments(mean, var, steps):
  """Mean and variance of `y' = (1 - a / (2 v)) y + sqrt(a) z`, `y = x - MU`, over `steps = [(a, v), ...]`:
  Langevin on a Gaussian of variance `v` is this linear recursion, so its law is exact at every step."""
  for a, v in steps:
    shrink = 1.0 - a / (2.0 * v)
    mean, var = shrink * mean, shrink**2 * var + a
  return mean, var


def test_annealed_langevin_as_the_readme_calls_it_returns_the_mixture_undenoised():
  sigmas = sde_lib.get_sigmas(0.01, 8.0, 30)
  x = samplers.annealed_langevin_dynamics(
    gmm_score,
    8 * jax.random.normal(jax.random.key(0), (1000, 2)),
    jax.random.key(1),
    sigmas,
    n_steps_each=50,
    step_lr=5e-6,
  )
  nearest = np.argmin(((np.asarray(x)[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=4) / len(x), GMM_WEIGHTS, atol=0.05)  # 3.5 sd
  args = (gmm_score, 8 * jax.random.normal(jax.random.key(0), (1000, 2)), jax.random.key(1), sigmas)
  np.testing.assert_array_equal(x, samplers.annealed_langevin_dynamics(*args, 50, 5e-6, False))
  assert not np.array_equal(x, samplers.annealed_langevin_dynamics(*args, 50, 5e-6, True))


def test_annealed_langevin_on_gaussian_data_has_the_law_of_its_linear_chain():
  """x_init ~ N(0, 64 I): the chain's mean and variance at the end follow the linear recursion level by level,
  with step `step_lr (sigma_i / sigma_L)^2`; asked to, the Tweedie step then shrinks by `1 - sigma_L^2 / v_L`."""
  sigmas = sde_lib.get_sigmas(0.01, 8.0, 30)
  x_init = 8 * jax.random.normal(jax.random.key(0), (20_000, 2))
  x = samplers.annealed_langevin_dynamics(
    gaussian_score, x_init, jax.random.key(1), sigmas, n_steps_each=50, step_lr=5e-6
  )
  s = np.asarray(sigmas, np.float64)
  steps = [(5e-6 * (sigma / s[-1]) ** 2, S**2 + sigma**2) for sigma in s for _ in range(50)]
  mean, var = linear_chain_moments(-MU, 64.0, steps)
  x = np.asarray(x, np.float64)
  np.testing.assert_allclose(x.mean(), MU + mean, atol=4 * np.sqrt(var / x.size))
  np.testing.assert_allclose(x.var(), var, rtol=0.03)  # 0.7% standard error at 40,000 numbers
  shrink = 1.0 - s[-1] ** 2 / (S**2 + s[-1] ** 2)  # 0.8: the denoised law is visibly narrower
  assert abs(shrink**2 - 1.0) > 0.3
  denoised = samplers.annealed_langevin_dynamics(gaussian_score, x_init, jax.random.key(1), sigmas, 50, 5e-6, True)
  np.testing.assert_allclose(np.var(np.asarray(denoised, np.float64)), shrink**2 * var, rtol=0.03)


def test_langevin_dynamics_called_positionally_has_the_law_of_its_linear_chain():
  """100 steps from x = 0 at step 1e-5 on N(MU, S^2): not yet stationary, and exactly the recursion's law."""
  x = samplers.langevin_dynamics(lambda x: gaussian_score(x, 0.0), jnp.zeros((20_000, 2)), jax.random.key(3), 1e-5, 100)
  mean, var = linear_chain_moments(-MU, 0.0, [(1e-5, S**2)] * 100)
  x = np.asarray(x, np.float64)
  stationary = S**2 / (1 - 1e-5 / (4 * S**2))
  assert abs(mean) > 0.1 and abs(var / stationary - 1) > 0.05  # far from stationary: the number of steps matters
  np.testing.assert_allclose(x.mean(), MU + mean, atol=4 * np.sqrt(var / x.size))
  np.testing.assert_allclose(x.var(), var, rtol=0.03)


def test_score_matching_loss_as_the_readme_calls_it_is_the_closed_form_minimum():
  """With the exact score, `E (s(x~) + eps / sigma)^2 = S^2 / (sigma^2 (S^2 + sigma^2))` per element, unweighted
  by default (a weighting of sigma^2 would give a hundredth of it)."""
  x = MU + S * jax.random.normal(jax.random.key(4), (200_000, 2))
  loss = losses.score_matching_loss(gaussian_score, x, 0.1, jax.random.key(2))
  np.testing.assert_allclose(loss, S**2 / (0.1**2 * (S**2 + 0.1**2)), rtol=0.01)
