"""The predictor-corrector sampler (Song et al. 2021, Alg. 1-3) where it differs from score_sde: its Langevin
corrector's step on a short grid. With every sampler it returns the mixture, and counts its score evaluations, in
test_samplers_registry.py."""

import jax
import numpy as np
import pytest

from scorejax.datasets.toy2d import sample_gmm

from helpers import NUM_SAMPLES, run_sampler, sde_table

SDES = sde_table(sigma_max=50.0)


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_langevin_corrector_on_a_short_vp_grid_stays_finite(sde_name):
  # At N = 10 score_sde's step size 2 (1 - beta(t) / N) (...)^2 is negative and the chain NaN; the
  # chain's own alpha on the grid is a fraction at every N.
  sde = SDES[sde_name](10)
  x, _ = run_sampler(
    "pc",
    sde,
    sde.prior_sample(jax.random.key(0), (NUM_SAMPLES, 2)),
    predictor="reverse_diffusion",
    corrector="langevin",
    n_steps_each=1,
  )
  assert np.all(np.isfinite(x))
  np.testing.assert_allclose(x.std(0), sample_gmm(np.random.default_rng(2), NUM_SAMPLES).std(0), rtol=0.25)
