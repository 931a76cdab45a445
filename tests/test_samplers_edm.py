"""EDM's Heun sampler (Karras et al. 2022, Alg. 2) with the exact score of the mixture returns it in 35 score
evaluations, on any SDE (run in its noise levels)."""

import jax
import pytest

from helpers import NUM_SAMPLES, assert_is_the_mixture, make_sde, run_sampler


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_the_edm_sampler_with_the_exact_score_returns_the_mixture_in_35_evaluations(sde_name):
  sde = make_sde(sde_name, 200, sigma_max=50.0)
  x, nfe = run_sampler("edm", sde, sde.prior_sample(jax.random.key(0), (NUM_SAMPLES, 2)), num_steps=18)
  assert nfe == 35
  assert_is_the_mixture(x)
