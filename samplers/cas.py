"""Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, "Adversarial score matching and
improved sampling for image generation", Sec. 4 and Algorithm 2)."""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.samplers.registry import check_options, register_sampler


def consistent_step_bounds(sigmas):
  """CAS needs `|1 - eta| gamma <= 1` at every level, `gamma = sigma_i / sigma_{i+1}`, so that the
  added noise has a real scale: `step_lr` in `[(1 - 1/gamma) sigma_L^2, (1 + 1/gamma) sigma_L^2]` for
  the largest ratio `gamma`."""
  sigmas = np.asarray(sigmas, np.float64)
  inverse_gamma = np.min(sigmas[1:] / sigmas[:-1]) if len(sigmas) > 1 else 1.0
  return sigmas[-1] ** 2 * (1 - inverse_gamma), sigmas[-1] ** 2 * (1 + inverse_gamma)


def consistent_annealed_sampling(score_fn, x_init, rng, sigmas, step_lr, denoise):
  """Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, Algorithm 2).

  One step per level of the decreasing `sigmas` (`sigma_{L+1} = 0`), with `eta = step_lr / sigma_L^2`:

      x <- x + eta sigma_i^2 s(x, sigma_i) + beta sigma_{i+1} z,   beta^2 = 1 - (gamma (1 - eta))^2,

  `gamma = sigma_i / sigma_{i+1}`. If `x = x_0 + sigma_i n` and `s = -(x - x_0) / sigma_i^2` (the paper's
  idealisation), the step keeps `(1 - eta) sigma_i n` and adds independent noise `beta sigma_{i+1} z`, so
  `x` carries noise exactly `sigma_{i+1}` at the next level (the "consistency" that annealed Langevin
  dynamics lacks). Needs
  `step_lr` within `consistent_step_bounds(sigmas)`. With `denoise`, a final Tweedie step
  `x + sigma_L^2 s(x, sigma_L)`. `score_fn(x, sigma)` takes `sigma` of shape `(batch,)`. One `lax.scan`;
  call it inside `jax.jit`. Returns the final `x`.
  """
  sigmas = jnp.asarray(sigmas, x_init.dtype)
  eta = step_lr / jnp.square(sigmas[-1])
  next_sigmas = jnp.append(sigmas[1:], 0.0)
  # beta sigma_{i+1} = sqrt(sigma_{i+1}^2 - (1 - eta)^2 sigma_i^2); 0 at the last level.
  noise_scales = jnp.sqrt(jnp.maximum(jnp.square(next_sigmas) - jnp.square((1 - eta) * sigmas), 0.0))
  noise_scales = noise_scales.at[-1].set(0.0)
  batch = x_init.shape[0]

  def body(x, inputs):
    i, sigma, noise_scale = inputs
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return x + eta * jnp.square(sigma) * score_fn(x, jnp.full((batch,), sigma)) + noise_scale * z, None

  steps = jnp.arange(sigmas.shape[0])
  x, _ = jax.lax.scan(body, x_init, (steps, sigmas, noise_scales))
  if denoise:
    x = x + jnp.square(sigmas[-1]) * score_fn(x, jnp.full((batch,), sigmas[-1]))
  return x


@register_sampler("cas")
def build_cas(sde, *, step_lr, n_steps_each, noise_removal):
  """CAS on `(N - 1) n_steps_each + 1` geometric levels between the extreme levels of the SDE's discrete
  chain (the score budget of annealed Langevin with `n_steps_each` steps on each of the `N` levels; the
  authors' code interpolates the levels the same way; for VE these are the chain's own levels with
  `n_steps_each - 1` more between neighbours), in `x / m(t)`: `step_lr` (the step `epsilon`, where
  `eta = step_lr / sigma_min^2`), `noise_removal`."""
  check_options(n_steps_each=(n_steps_each, "positive integer"), step_lr=(step_lr, "> 0"))
  if not sde.has_discrete_chain:
    raise ValueError(
      f"sampling.method='cas' runs on the levels of a discrete chain, which {type(sde).__name__} "
      f"lacks; use training.sde 'vesde' or 'vpsde', or 'pc', 'edm', 'ddim' or 'dpm_solver'"
    )
  chain = np.asarray(sde.discrete_sigmas, np.float64)
  sigmas = np.geomspace(chain[-1], chain[0], (sde.N - 1) * n_steps_each + 1)
  low, high = consistent_step_bounds(sigmas)
  if not low <= step_lr <= high:
    raise ValueError(
      f"sampling.step_lr={step_lr} breaks the consistency of CAS on {len(sigmas)} levels: "
      f"it must lie in [{low:.3g}, {high:.3g}] = [(1 - 1/gamma), (1 + 1/gamma)] sigma_min^2"
    )
  nfe = len(sigmas) + int(noise_removal)

  def sample_fn(score_fn, x_init, rng):
    chain = lambda score, x_hat: consistent_annealed_sampling(score, x_hat, rng, sigmas, step_lr, noise_removal)
    return sde.run_in_noise_levels(chain, score_fn, x_init, sigmas[-1], noise_removal), nfe

  return sample_fn
