"""Log-SNR schedules (schedules.py): every score SDE's schedule is `2 log sigma(t)`, and `GammaSDE` of a schedule is
the variance-preserving SDE with that log-SNR: VP's own kernel and drift from VP's schedule, VE's schedule linear."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import schedules

from helpers import sde_table

SDES = sde_table(sigma_max=50.0, N=1000)
U = jnp.linspace(0.0, 1.0, 11)


def test_alpha_and_sigma_of_the_log_snr():
  gamma = jnp.asarray([-13.3, -2.0, 0.0, 5.0])
  alpha, sigma = schedules.alpha_sigma(gamma)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-6)  # variance preserving
  np.testing.assert_allclose(schedules.snr(gamma), alpha**2 / sigma**2, rtol=1e-5)
  np.testing.assert_allclose(jnp.log(sigma**2 / alpha**2), gamma, atol=1e-4)


@pytest.mark.parametrize("name", SDES)
def test_an_sdes_schedule_is_its_log_noise_level_and_gamma_sde_has_its_snr(name):
  sde = SDES[name]()
  schedule = schedules.SDESchedule(sde, 1e-3, 1.0)
  t = schedule.time(U)
  np.testing.assert_allclose(t, 1e-3 + (1 - 1e-3) * U, rtol=1e-6)
  m, std = sde.marginal_coefficients(t)
  np.testing.assert_allclose(schedule(U), 2 * jnp.log(std / m), rtol=1e-5, atol=1e-5)
  gamma_sde = schedules.GammaSDE(schedule)
  np.testing.assert_allclose(gamma_sde.noise_level(U), std / m, rtol=1e-4)  # the same SNR: one model up to scale
  alpha, sigma = gamma_sde.marginal_coefficients(U)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-5)
  if name == "vp":  # VP is variance preserving already: the same kernel, and beta(t) = gamma' sigmoid(gamma)
    np.testing.assert_allclose(alpha, m, rtol=1e-4)
    _, g = gamma_sde.sde(jnp.ones((11, 1)), U)
    np.testing.assert_allclose(g**2 / (1 - 1e-3), sde.beta(t), rtol=1e-3)  # in u, beta scales by dt/du
  if name == "ve":  # VE's log-SNR is linear in t: VDM's fixed schedule
    linear = schedules.linear_gamma(2 * math.log(0.01), 2 * math.log(50.0))
    np.testing.assert_allclose(schedules.SDESchedule(sde, 0.0, 1.0)(U), linear(U), rtol=1e-5, atol=1e-5)
  # The time of a noise level, by bisection, inverts the schedule.
  np.testing.assert_allclose(gamma_sde.time_of_noise_level(gamma_sde.noise_level(U)), U, atol=1e-5)
  np.testing.assert_allclose(gamma_sde.time_of_noise_level(np.asarray(gamma_sde.noise_level(U)), xp=np), U, atol=1e-5)


def test_between_takes_the_stretch_of_the_schedule_with_the_given_endpoints():
  for name in ("vp", "subvp", "ve"):
    schedule = schedules.SDESchedule.between(SDES[name](), -10.0, 6.0)
    np.testing.assert_allclose(schedule(jnp.asarray([0.0, 1.0])), [-10.0, 6.0], atol=1e-3, err_msg=name)
    assert np.all(np.diff(np.asarray(schedule(U))) > 0), name


def test_gamma_sde_drift_is_the_derivative_of_its_kernel():
  # The kernel of dx = -(beta / 2) x dt + sqrt(beta) dw: d alpha/dt = -(beta / 2) alpha (the drift at x = alpha) and
  # d sigma^2/dt = beta (1 - sigma^2); by central differences (float32: 0.5%) on a curved schedule.
  gamma = lambda t: -8.0 + 12.0 * t**2 + 2.0 * t
  sde = schedules.GammaSDE(gamma)
  t, h = jnp.asarray([0.2, 0.5, 0.8]), 1e-3
  (a_lo, s_lo), (a_hi, s_hi) = sde.marginal_coefficients(t - h), sde.marginal_coefficients(t + h)
  drift, g = sde.sde(jnp.ones((3, 1)), t)
  alpha, sigma = sde.marginal_coefficients(t)
  np.testing.assert_allclose((a_hi - a_lo) / (2 * h), drift[:, 0] * alpha, rtol=5e-3)
  np.testing.assert_allclose((s_hi**2 - s_lo**2) / (2 * h), g**2 * (1 - sigma**2), rtol=5e-3)
  z = sde.prior_sample(jax.random.key(0), (4, 3))
  np.testing.assert_allclose(sde.prior_logp(z), -0.5 * jnp.sum(z**2, 1) - 1.5 * math.log(2 * math.pi), rtol=1e-6)
