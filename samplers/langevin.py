"""Langevin dynamics and annealed Langevin dynamics (Song & Ermon 2019)."""
import functools

import jax
import jax.numpy as jnp

from scorejax import sde_lib
from scorejax.samplers.registry import register_sampler


def langevin_step(score, x, z, step_size):
  """One step of unadjusted Langevin dynamics: `x + (step_size / 2) * score + sqrt(step_size) * z`.

  As `step_size -> 0` and the number of steps grows, `x` is distributed as the density
  whose score is `score` (Welling & Teh 2011; Song & Ermon 2019, Eq. 4).
  """
  return x + 0.5 * step_size * score + jnp.sqrt(step_size) * z


@functools.partial(jax.jit, static_argnames=("score_fn", "n_steps"))
def langevin_dynamics(score_fn, x_init, rng, step_size, n_steps):
  """`n_steps` Langevin steps `x <- x + (step_size/2) score_fn(x) + sqrt(step_size) z`, `z ~ N(0, I)`.

  `score_fn(x)` takes the batch only. One `lax.scan`: a single dispatch whose program size does
  not depend on `n_steps`. `score_fn` is a static argument, so pass a function that does not
  close over large arrays; to sample from a model, call this inside your own `jax.jit` that takes
  the parameters as an argument (it is then inlined). Returns the final `x`.
  """
  def body(x, i):
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return langevin_step(score_fn(x), x, z, step_size), None

  x, _ = jax.lax.scan(body, x_init, jnp.arange(n_steps))
  return x


@functools.partial(jax.jit, static_argnames=("score_fn", "n_steps_each", "denoise"))
def annealed_langevin_dynamics(score_fn, x_init, rng, sigmas, n_steps_each, step_lr, denoise=False,
                               conditions=None):
  """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

  For each level `sigma_i` of the decreasing `sigmas`, `n_steps_each` Langevin steps with
  `score_fn(x, sigma_i)` and step size `alpha_i = step_lr * (sigma_i / sigma_L)^2`, so that the
  signal-to-noise ratio of each step is the same at every level. With `denoise=True` a final
  Tweedie step `x + sigma_L^2 score_fn(x, sigma_L)` returns the posterior mean `E[x_0 | x]`
  (Efron 2011; Jolicoeur-Martineau et al. 2021) instead of a sample still carrying noise `sigma_L`.

  `score_fn` is called with `sigma_i`, or with `conditions[i]` where given (e.g. the SDE times of
  the levels). The chain is one `lax.scan` over all `L * n_steps_each` steps. Returns the final `x`.
  """
  sigmas = jnp.asarray(sigmas, x_init.dtype)
  conditions = sigmas if conditions is None else jnp.asarray(conditions, x_init.dtype)
  per_step_sigma = jnp.repeat(sigmas, n_steps_each)
  per_step_condition = jnp.repeat(conditions, n_steps_each)
  per_step_size = step_lr * jnp.square(per_step_sigma / sigmas[-1])
  batch = x_init.shape[0]

  def body(x, inputs):
    i, condition, step_size = inputs
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    score = score_fn(x, jnp.full((batch,), condition, x.dtype))
    return langevin_step(score, x, z, step_size), None

  steps = jnp.arange(per_step_sigma.shape[0])
  x, _ = jax.lax.scan(body, x_init, (steps, per_step_condition, per_step_size))
  if denoise:
    x = x + jnp.square(sigmas[-1]) * score_fn(x, jnp.full((batch,), conditions[-1], x.dtype))
  return x


@register_sampler("ald")
def build_ald(sde, sampling):
  """Annealed Langevin dynamics over the `N` levels of a VE SDE, from `sigma_max` down to
  `sigma_min` (level `i` is the time `t_i = i / (N - 1)`): `sampling.n_steps_each`,
  `sampling.step_lr`, `sampling.noise_removal`."""
  if not isinstance(sde, sde_lib.VESDE):
    raise ValueError("sampling.method='ald' needs training.sde='vesde' (the NCSN noise levels); "
                     "for VP and sub-VP SDEs use a predictor-corrector sampler")
  sigmas = sde.discrete_sigmas[::-1]
  times = jnp.linspace(sde.T, 0.0, sde.N) if sde.N > 1 else jnp.full((1,), sde.T)
  nfe = sde.N * sampling.n_steps_each + int(sampling.noise_removal)

  def sample_fn(score_fn, x_init, rng):
    x = annealed_langevin_dynamics(score_fn, x_init, rng, sigmas, sampling.n_steps_each,
                                   sampling.step_lr, sampling.noise_removal, conditions=times)
    return x, nfe
  return sample_fn
