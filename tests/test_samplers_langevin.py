"""Langevin samplers checked against distributions with known scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import samplers, sde_lib
from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, GMM_WEIGHTS, gmm_score, sample_gmm
from scorejax.metrics import sliced_wasserstein

ald = jax.jit(samplers.annealed_langevin_dynamics, static_argnums=(0, 4, 6))  # jitted by its callers


def gaussian_score(x, mean=1.0, std=0.5):
  return -(x - mean) / std**2


def test_langevin_reaches_the_exact_stationary_law_of_the_discretised_chain():
  # For a Gaussian target N(m, s^2), x' = x + (eps/2)(-(x-m)/s^2) + sqrt(eps) z is an AR(1) chain
  # with stationary variance s^2 / (1 - eps / (4 s^2)): the step-size bias is known exactly.
  mean, std, eps = 1.0, 0.5, 0.4 * 0.25
  x0 = jnp.zeros((20_000, 2))
  x = jax.jit(samplers.langevin_dynamics, static_argnums=(0, 4))(gaussian_score, x0, jax.random.key(0), eps, 300)
  x = np.asarray(x)
  np.testing.assert_allclose(x.mean(), mean, atol=4 * std / np.sqrt(x.size))
  exact_var = std**2 / (1 - eps / (4 * std**2))
  np.testing.assert_allclose(x.var(), exact_var, rtol=0.02)
  assert abs(x.var() - std**2) > 0.05 * std**2  # the test can tell the biased law from the target


@pytest.mark.slow
def test_annealed_langevin_returns_the_unequal_gaussian_mixture():
  sigmas = sde_lib.get_sigmas(0.01, 8.0, 30)
  x0 = 8.0 * jax.random.normal(jax.random.key(1), (10_000, 2))
  x = ald(gmm_score, x0, jax.random.key(2), sigmas, 30, 5e-5, False)
  x = np.asarray(x)
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  weights = np.bincount(nearest, minlength=4) / len(x)
  np.testing.assert_allclose(weights, GMM_WEIGHTS, atol=0.03)
  for k in range(4):
    mode = x[nearest == k]
    np.testing.assert_allclose(mode.mean(0), GMM_MEANS[k], atol=0.05)
    np.testing.assert_allclose(mode.var(0), GMM_STDS[k] ** 2 + sigmas[-1] ** 2, rtol=0.1)
  rng = np.random.default_rng(0)
  truth = sample_gmm(rng, len(x))
  # Two true samples of this size lie 0.03-0.07 apart; equal weights instead of (.1, .2, .3, .4) ~0.3.
  assert sliced_wasserstein(x, truth) < 0.15
  assert sliced_wasserstein(sample_gmm(rng, len(x), weights=np.full(4, 0.25, np.float32)), truth) > 0.15


def test_annealed_step_sizes_follow_sigma_squared():
  # With a zero score the chain is x_init + sum_t sqrt(alpha_t) z_t, so Var = sum_t alpha_t with
  # alpha = step_lr (sigma_i / sigma_L)^2, n_steps_each times per level.
  sigmas = sde_lib.get_sigmas(0.1, 1.0, 5)
  zero = lambda x, s: jnp.zeros_like(x)
  x = ald(zero, jnp.zeros((20_000, 2)), jax.random.key(3), sigmas, 3, 0.01, False)
  expected = 3 * 0.01 * np.sum((np.asarray(sigmas) / sigmas[-1]) ** 2)
  np.testing.assert_allclose(np.var(np.asarray(x)), expected, rtol=0.03)


def test_final_denoising_is_one_tweedie_step():
  sigmas = sde_lib.get_sigmas(0.1, 1.0, 4)
  score = lambda x, s: -x / (0.25 + s[:, None] ** 2)
  args = (score, jnp.ones((64, 2)), jax.random.key(4), sigmas, 2, 0.01)
  plain = ald(*args, False)
  denoised = ald(*args, True)
  sigma_last = jnp.full((64,), sigmas[-1])
  np.testing.assert_allclose(denoised, plain + sigmas[-1] ** 2 * score(plain, sigma_last), rtol=1e-5)


def _program_lines(lowered):
  return len(lowered.as_text().splitlines())


def test_chains_compile_to_one_program_whose_size_does_not_grow_with_steps():
  x0, rng = jnp.zeros((8, 2)), jax.random.key(5)
  langevin = jax.jit(samplers.langevin_dynamics, static_argnums=(0, 4))
  short = langevin.lower(gaussian_score, x0, rng, 0.1, 10)
  long = langevin.lower(gaussian_score, x0, rng, 0.1, 10_000)
  assert _program_lines(short) == _program_lines(long)
  zero = lambda x, s: -x
  short = ald.lower(zero, x0, rng, sde_lib.get_sigmas(0.1, 1, 3), 2, 0.1, False)
  long = ald.lower(zero, x0, rng, sde_lib.get_sigmas(0.1, 1, 300), 200, 0.1, False)
  assert _program_lines(short) == _program_lines(long)


def test_registered_ald_runs_the_ve_levels_in_time():
  """`sampling.method='ald'` on a VE SDE is annealed Langevin over its N levels, score_fn taking t."""
  from scorejax.datasets.toy2d import gmm_sde_score

  sde = sde_lib.VESDE(0.05, 8.0, N=6)
  options = {"n_steps_each": 3, "step_lr": 1e-3, "noise_removal": True}
  x0 = 8.0 * jax.random.normal(jax.random.key(5), (256, 2))
  x, nfe = samplers.get_sampling_fn(sde, "ald", **options)(gmm_sde_score(sde), x0, jax.random.key(6))
  direct = ald(gmm_score, x0, jax.random.key(6), sde.discrete_sigmas[::-1], 3, 1e-3, True)
  np.testing.assert_allclose(x, direct, rtol=1e-4, atol=1e-4)
  assert nfe == 6 * 3 + 1
  with pytest.raises(ValueError, match="'ald' runs on the levels of a discrete chain, which SubVPSDE lacks"):
    samplers.get_sampling_fn(sde_lib.SubVPSDE(0.1, 20.0, N=6), "ald", **options)
  with pytest.raises(ValueError, match="unknown sampling.method 'nope'; valid choices: .*ald"):
    samplers.get_sampler("nope")
