"""The score wrapper asks the SDE: EDM's VP label `(M - 1) t(sigma)` is the time at which EDM's VP schedule, a
`VPSDE`, reaches `sigma`, and the preconditioned score's `sigma` is the SDE's `noise_level`. Both are the numbers
that the formulas written out here before gave, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import models, sde_lib
from scorejax.models import utils

SIGMAS = jnp.asarray(np.geomspace(2e-3, 80.0, 41), jnp.float32)  # EDM's range


def previous_edm_vp_label(sigma):
  """models/utils.py's `edm_vp_preconditioning` label before the change, with its own constants."""
  beta_min, beta_d, steps = 0.1, 19.9, 1000
  integral = jnp.log1p(jnp.square(sigma))
  t = 2.0 * integral / (beta_min + jnp.sqrt(beta_min**2 + 2.0 * beta_d * integral))
  return (steps - 1) * t


def test_edm_vp_label_is_the_time_of_the_noise_level_on_edm_s_vp_schedule():
  sde = utils.EDM_VP_SDE
  assert (sde.beta_0, sde.beta_1 - sde.beta_0, sde.N) == (0.1, 19.9, 1000)  # EDM's VPPrecond
  label = jax.jit(lambda s: utils.edm_vp_preconditioning(s).c_noise)(SIGMAS)
  np.testing.assert_array_equal(label, jax.jit(previous_edm_vp_label)(SIGMAS))
  # EDM's own `sigma_inv`, in float64: ((beta_min^2 + 2 beta_d ln(1 + sigma^2))^(1/2) - beta_min) / beta_d.
  s = np.asarray(SIGMAS, np.float64)
  np.testing.assert_allclose(label, 999 * (np.sqrt(0.01 + 2 * 19.9 * np.log1p(s**2)) - 0.1) / 19.9, rtol=2e-6)
  np.testing.assert_allclose(sde.noise_level(label / 999), SIGMAS, rtol=1e-4)  # and back


class _Echo:
  """A network whose output is its input: the score shows what the wrapper computed around it."""

  conditioning = "log_sigma"

  def apply(self, variables, x, c_noise, train=False, rngs=None):
    return x + c_noise[:, None]


def test_the_preconditioned_score_takes_sigma_from_the_sde():
  """EDM's preconditioning on a VP SDE: the same numbers as with `sigma = std / m` computed here, and a different
  score from an SDE that reports another noise level (so the wrapper does ask it)."""
  sde = sde_lib.VPSDE(0.1, 20.0, 1000)
  x, t = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32), jnp.linspace(1e-3, 1.0, 5)
  got = jax.jit(models.get_score_fn(_Echo(), None, sde, prediction="edm", sigma_data=0.5))(x, t)

  def previous(x, t):  # models/utils.py's `_preconditioned_score` before the change, around the echo
    scale, std = sde.marginal_coefficients(t)
    sigma = std / scale
    c = utils.edm_preconditioning(sigma, 0.5)
    x_hat = x / scale[:, None]
    raw = c.c_in[:, None] * x_hat + c.c_noise[:, None]
    return ((c.c_out / jnp.square(sigma))[:, None] * raw - c.skip_deficit[:, None] * x_hat) / scale[:, None]

  np.testing.assert_allclose(got, jax.jit(previous)(x, t), rtol=1e-6, atol=0)

  class Louder(sde_lib.VPSDE):
    def noise_level(self, t):
      return 2.0 * super().noise_level(t)

  other = jax.jit(models.get_score_fn(_Echo(), None, Louder(0.1, 20.0, 1000), prediction="edm", sigma_data=0.5))(x, t)
  assert np.max(np.abs(other - got)) > 0.1 * np.max(np.abs(got))
