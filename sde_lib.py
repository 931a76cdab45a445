"""Noise schedules for score-based models.

Issue 3 needs only the geometric sequence of noise levels used by NCSN; the
continuous-time SDEs (VE, VP, sub-VP) will live here too.
"""
import jax.numpy as jnp


def get_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> jnp.ndarray:
  """Geometric noise levels `sigma_1 = sigma_max > ... > sigma_L = sigma_min`.

  `sigma_i = sigma_max * (sigma_min / sigma_max) ** ((i - 1) / (L - 1))`
  (Song & Ermon 2019, Sec. 4.2): a constant ratio between neighbouring levels
  keeps the noisy distributions of adjacent levels overlapping.
  """
  if num_scales == 1:
    return jnp.asarray([sigma_max], jnp.float32)
  return jnp.exp(jnp.linspace(jnp.log(sigma_max), jnp.log(sigma_min), num_scales)).astype(jnp.float32)
