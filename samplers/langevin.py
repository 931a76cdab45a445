"""Langevin dynamics and annealed Langevin dynamics (Song & Ermon 2019)."""

import jax
import jax.numpy as jnp

from scorejax.samplers.registry import check_options, register_sampler


def langevin_step(score, x, z, step_size):
  """One step of unadjusted Langevin dynamics: `x + (step_size / 2) * score + sqrt(step_size) * z`.

  As `step_size -> 0` and the number of steps grows, `x` is distributed as the density
  whose score is `score` (Welling & Teh 2011; Song & Ermon 2019, Eq. 4).
  """
  return x + 0.5 * step_size * score + jnp.sqrt(step_size) * z


def langevin_dynamics(score_fn, x_init, rng, step_size, n_steps):
  """`n_steps` Langevin steps `x <- x + (step_size/2) score_fn(x) + sqrt(step_size) z`, `z ~ N(0, I)`.

  `score_fn(x)` takes the batch only. One `lax.scan`, whose program size does not depend on
  `n_steps`; call it inside `jax.jit` (with the parameters of a model as an argument of the jitted
  function, not closed over). Returns the final `x`.
  """

  def body(x, i):
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return langevin_step(score_fn(x), x, z, step_size), None

  x, _ = jax.lax.scan(body, x_init, jnp.arange(n_steps))
  return x


def annealed_langevin_dynamics(score_fn, x_init, rng, sigmas, n_steps_each, step_lr, denoise=False):
  """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

  For each level `sigma_i` of the decreasing `sigmas`, `n_steps_each` Langevin steps with
  `score_fn(x, sigma_i)` (`sigma_i` of shape `(batch,)`) and step size
  `alpha_i = step_lr * (sigma_i / sigma_L)^2`, so that the signal-to-noise ratio of each step is the
  same at every level. With `denoise` a final Tweedie step `x + sigma_L^2 score_fn(x, sigma_L)` returns
  the posterior mean `E[x_0 | x]` (Efron 2011; Jolicoeur-Martineau et al. 2021) instead of a sample
  still carrying noise `sigma_L`; it is off by default, as Algorithm 1 and the published signature
  `annealed_langevin_dynamics(score_fn, x_init, rng, sigmas, n_steps_each, step_lr)` have it (the
  registered sampler `'ald'` passes `sampling.noise_removal`).

  The chain is one `lax.scan` over all `L * n_steps_each` steps; call it inside `jax.jit`. Returns
  the final `x`.
  """
  sigmas = jnp.asarray(sigmas, x_init.dtype)
  per_step_sigma = jnp.repeat(sigmas, n_steps_each)
  per_step_size = step_lr * jnp.square(per_step_sigma / sigmas[-1])
  batch = x_init.shape[0]

  def body(x, inputs):
    i, sigma, step_size = inputs
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return langevin_step(score_fn(x, jnp.full((batch,), sigma)), x, z, step_size), None

  steps = jnp.arange(per_step_sigma.shape[0])
  x, _ = jax.lax.scan(body, x_init, (steps, per_step_sigma, per_step_size))
  if denoise:
    x = x + jnp.square(sigmas[-1]) * score_fn(x, jnp.full((batch,), sigmas[-1]))
  return x


@register_sampler("ald")
def build_ald(sde, *, n_steps_each, step_lr, noise_removal):
  """Annealed Langevin dynamics over the `N` levels of the SDE's discrete chain (SMLD's geometric levels
  for VE, DDPM's for VP), from the noisiest down, in `x / m(t)`: `n_steps_each`, `step_lr`,
  `noise_removal`."""
  check_options(n_steps_each=(n_steps_each, "positive integer"), step_lr=(step_lr, "> 0"))
  if not sde.has_discrete_chain:
    raise ValueError(
      f"sampling.method='ald' runs on the levels of a discrete chain, which "
      f"{type(sde).__name__} lacks; use training.sde 'vesde' or 'vpsde', or another sampler"
    )
  sigmas = sde.discrete_sigmas[::-1]
  nfe = sde.N * n_steps_each + int(noise_removal)

  def sample_fn(score_fn, x_init, rng):
    chain = lambda score, x_hat: annealed_langevin_dynamics(
      score, x_hat, rng, sigmas, n_steps_each, step_lr, noise_removal
    )
    return sde.run_in_noise_levels(chain, score_fn, x_init, sigmas[-1], noise_removal), nfe

  return sample_fn
