"""The probability-flow ODE sampler (Song et al. 2021, Eq. 13) with the exact score of the 2D Gaussian mixture
returns the mixture, with fixed-step and adaptive solvers, and reports the score evaluations it runs."""

import math

import jax
import numpy as np
import pytest

from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, GMM_WEIGHTS, gmm_sde_score, sample_gmm
from scorejax.metrics import sliced_wasserstein
from scorejax.samplers.integrators import FIXED_STEP_STAGES
from scorejax.samplers.registry import get_sampling_fn

from helpers import Counter, sde_table

SDES = sde_table(sigma_max=50.0, N=1000)


def _gmm_checks(x, truth):
  nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=4) / len(x), GMM_WEIGHTS, atol=0.03)
  for k in range(4):
    np.testing.assert_allclose(
      x[nearest == k].mean(0), GMM_MEANS[k], atol=4 * GMM_STDS[k] / math.sqrt(GMM_WEIGHTS[k] * len(x)) + 0.02
    )
    np.testing.assert_allclose(x[nearest == k].std(0), GMM_STDS[k], rtol=0.2)
  return sliced_wasserstein(x, truth)


@pytest.mark.parametrize("name,solver", [("ve", "rk4"), ("vp", "heun"), ("ve", "tsit5"), ("vp", "rk45")])
def test_ode_sampler_returns_the_mixture(name, solver):
  sde, num = SDES[name](), 2_000
  sample_fn = get_sampling_fn(
    sde, "ode", ode_solver=solver, ode_steps=40, eps=1e-3, rtol=1e-5, atol=1e-5, ode_max_steps=4096, noise_removal=True
  )
  counted = Counter(gmm_sde_score(sde))
  x_init = sde.prior_sample(jax.random.key(4), (num, 2))
  x, nfe = jax.block_until_ready(jax.jit(lambda x, r: sample_fn(counted, x, r))(x_init, jax.random.key(5)))
  assert counted.calls == int(nfe)  # fixed: steps * stages + 1; adaptive: from diffrax's step count
  if solver in FIXED_STEP_STAGES:
    assert int(nfe) == 40 * FIXED_STEP_STAGES[solver] + 1
  rng = np.random.default_rng(6)
  truth = sample_gmm(rng, num)
  # Two true samples of 2000 lie 0.08-0.27 apart (mean ~0.17); equal weights instead lie ~0.9 away.
  bound = 2 * np.mean([sliced_wasserstein(sample_gmm(rng, num), sample_gmm(rng, num)) for _ in range(4)])
  assert _gmm_checks(np.asarray(x), truth) < bound
  assert sliced_wasserstein(sample_gmm(rng, num, weights=np.full(4, 0.25, np.float32)), truth) > bound
