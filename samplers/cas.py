"""Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, "Adversarial score matching and
improved sampling for image generation", Sec. 4 and Algorithm 2)."""
import jax
import jax.numpy as jnp
import numpy as np

from scorejax import sde_lib
from scorejax.samplers.edm import time_of_noise_level
from scorejax.samplers.registry import register_sampler


def consistent_step_bounds(sigmas):
  """CAS needs `|1 - eta| gamma <= 1` at every level, `gamma = sigma_i / sigma_{i+1}`, so that the
  added noise has a real scale: `step_lr` in `[(1 - 1/gamma) sigma_L^2, (1 + 1/gamma) sigma_L^2]` for
  the largest ratio `gamma`."""
  sigmas = np.asarray(sigmas, np.float64)
  inverse_gamma = np.min(sigmas[1:] / sigmas[:-1]) if len(sigmas) > 1 else 1.0
  return sigmas[-1] ** 2 * (1 - inverse_gamma), sigmas[-1] ** 2 * (1 + inverse_gamma)


def consistent_annealed_sampling(score_fn, x_init, rng, sigmas, step_lr, denoise=False, conditions=None):
  """Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, Algorithm 2).

  One step per level of the decreasing `sigmas` (`sigma_{L+1} = 0`), with `eta = step_lr / sigma_L^2`:

      x <- x + eta sigma_i^2 s(x, sigma_i) + beta sigma_{i+1} z,   beta^2 = 1 - (gamma (1 - eta))^2,

  `gamma = sigma_i / sigma_{i+1}`. If `x = x_0 + sigma_i n` and `s = -(x - x_0) / sigma_i^2` (the paper's
  idealisation), the step keeps `(1 - eta) sigma_i n` and adds independent noise `beta sigma_{i+1} z`, so
  `x` carries noise exactly `sigma_{i+1}` at the next level (the "consistency" that annealed Langevin
  dynamics lacks). Needs
  `step_lr` within `consistent_step_bounds(sigmas)`. With `denoise`, a final Tweedie step
  `x + sigma_L^2 s(x, sigma_L)`. `score_fn` is called with `sigma_i`, or `conditions[i]` where given
  (e.g. the SDE times of the levels). One `lax.scan`; returns the final `x`.
  """
  sigmas = jnp.asarray(sigmas, x_init.dtype)
  conditions = sigmas if conditions is None else jnp.asarray(conditions, x_init.dtype)
  eta = step_lr / jnp.square(sigmas[-1])
  next_sigmas = jnp.append(sigmas[1:], 0.0)
  # beta sigma_{i+1} = sqrt(sigma_{i+1}^2 - (1 - eta)^2 sigma_i^2); 0 at the last level.
  noise_scales = jnp.sqrt(jnp.maximum(jnp.square(next_sigmas) - jnp.square((1 - eta) * sigmas), 0.0))
  noise_scales = noise_scales.at[-1].set(0.0)
  batch = x_init.shape[0]

  def body(x, inputs):
    i, sigma, condition, noise_scale = inputs
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return x + eta * jnp.square(sigma) * score_fn(x, jnp.full((batch,), condition)) + noise_scale * z, None

  steps = jnp.arange(sigmas.shape[0])
  x, _ = jax.lax.scan(body, x_init, (steps, sigmas, conditions, noise_scales))
  if denoise:
    x = x + jnp.square(sigmas[-1]) * score_fn(x, jnp.full((batch,), conditions[-1]))
  return x


@register_sampler("cas")
def build_cas(sde, sampling):
  """CAS on a VE SDE over `(N - 1) n_steps_each + 1` geometric levels from `sigma_max` to `sigma_min`
  (the score budget of annealed Langevin with `n_steps_each` steps on each of the `N` levels; the
  authors' code interpolates the levels the same way): `sampling.step_lr` (the step `epsilon`, 1e-5 where
  `eta = step_lr / sigma_min^2`), `sampling.n_steps_each` (5), `sampling.noise_removal` (True)."""
  if not isinstance(sde, sde_lib.VESDE):
    raise ValueError("sampling.method='cas' needs training.sde='vesde' (a geometric ladder of noise "
                     "levels); for VP and sub-VP SDEs use 'pc', 'edm', 'ddim' or 'dpm_solver'")
  step_lr = sampling.get("step_lr", 1e-5)
  n_steps_each = sampling.get("n_steps_each", 5)
  denoise = sampling.get("noise_removal", True)
  num_levels = (sde.N - 1) * n_steps_each + 1
  sigmas = np.geomspace(sde.sigma_max, sde.sigma_min, num_levels)
  low, high = consistent_step_bounds(sigmas)
  if not low <= step_lr <= high:
    raise ValueError(f"sampling.step_lr={step_lr} breaks the consistency of CAS on {num_levels} levels: "
                     f"it must lie in [{low:.3g}, {high:.3g}] = [(1 - 1/gamma), (1 + 1/gamma)] sigma_min^2")
  times = time_of_noise_level(sde, jnp.asarray(sigmas, jnp.float32))
  nfe = num_levels + int(denoise)

  def sample_fn(score_fn, x_init, rng):
    return consistent_annealed_sampling(score_fn, x_init, rng, sigmas, step_lr, denoise, times), nfe
  return sample_fn
