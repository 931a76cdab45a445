"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models") and DPM-Solver (Lu et al. 2022,
"DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps").

Both need only the kernel `x_t = alpha_t x_0 + sigma_t eps` (`alpha_t = m(t)`, `sigma_t = std(t)`), its
half log-SNR `lambda_t = log(alpha_t / sigma_t) = -log noise_level(t)`, and the noise prediction
`eps(x, t) = -sigma_t s(x, t)`. So they serve VE (`alpha = 1`), VP and sub-VP alike: in `x_hat = x / alpha`
they are the same solvers of the VE probability flow (Karras et al. 2022, Sec. 3).
"""

import jax
import jax.numpy as jnp

from scorejax.samplers.registry import check_options, register_sampler
from scorejax.sde_lib import per_example

SKIP_TYPES = ("logSNR", "time_uniform")
# Intermediate points r_k of the singlestep solvers: s_k = t_lambda(lambda_s + r_k h) (Lu et al. Alg. 1-2).
_MIDPOINTS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def half_log_snr(sde, t):
  """`lambda_t = log(alpha_t / sigma_t)`, decreasing in `t`."""
  return -jnp.log(sde.noise_level(t))


def time_steps(sde, num_steps, eps, skip_type):
  """`num_steps + 1` times from `T` down to `eps`, equally spaced in `lambda` ('logSNR') or in `t`
  ('time_uniform') (Lu et al. 2022, Sec. 3.3 and App. D)."""
  if skip_type == "time_uniform":
    return jnp.linspace(sde.T, eps, num_steps + 1)
  if skip_type == "logSNR":
    ends = (half_log_snr(sde, jnp.asarray(sde.T)), half_log_snr(sde, jnp.asarray(eps)))
    lambdas = jnp.linspace(*ends, num_steps + 1)
    return sde.time_of_noise_level(jnp.exp(-lambdas))
  raise ValueError(f"unknown sampling.skip_type {skip_type!r}; valid choices: {', '.join(SKIP_TYPES)}")


def intermediate_times(sde, s, t, ratios):
  """`s_k = t_lambda(lambda_s + r_k (lambda_t - lambda_s))` for each `r_k` of `ratios`."""
  lambda_s, lambda_t = half_log_snr(sde, s), half_log_snr(sde, t)
  return tuple(sde.time_of_noise_level(jnp.exp(-(lambda_s + r * (lambda_t - lambda_s)))) for r in ratios)


def noise_prediction(sde, score_fn):
  """`eps(x, t) = -sigma_t s(x, t)` (the score / noise identity, Song et al. 2021, App. C)."""

  def eps_fn(x, t):
    return -per_example(sde.marginal_coefficients(t)[1], x) * score_fn(x, t)

  return eps_fn


def exponential_step(sde, x, s, t, eps_hat):
  """`x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_hat`, `h = lambda_t - lambda_s`: the exact
  solution of the probability-flow ODE from `s` to `t` with the noise prediction held at `eps_hat`
  (Lu et al. 2022, Eq. 3.4 and 3.7: DPM-Solver-1, which is DDIM with eta = 0)."""
  (alpha_s, _), (alpha_t, sigma_t) = sde.marginal_coefficients(s), sde.marginal_coefficients(t)
  h = half_log_snr(sde, t) - half_log_snr(sde, s)
  return per_example(alpha_t / alpha_s, x) * x - per_example(sigma_t * jnp.expm1(h), x) * eps_hat


def ddim_step(sde, eps_fn, x, s, t, z, eta):
  """DDIM (Song et al. 2021, Eq. 12) from `s` to `t < s` for any kernel `(alpha, sigma)`:

      x0_hat = (x - sigma_s eps(x, s)) / alpha_s,
      x_t = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps(x, s) + c z,   c = eta sigma_t sqrt(1 - e^{-2h}),

  `h = lambda_t - lambda_s`. For VP, `c^2 = eta^2 (1 - a_t) / (1 - a_s) (1 - a_s / a_t)` with `a = alpha^2`
  (Eq. 16); `eta = 1` is ancestral sampling, `eta = 0` the probability-flow solver `exponential_step`.
  """
  (alpha_s, sigma_s), (alpha_t, sigma_t) = sde.marginal_coefficients(s), sde.marginal_coefficients(t)
  h = half_log_snr(sde, t) - half_log_snr(sde, s)
  c = eta * sigma_t * jnp.sqrt(-jnp.expm1(-2.0 * h))
  eps_hat = eps_fn(x, s)
  x0_hat = (x - per_example(sigma_s, x) * eps_hat) / per_example(alpha_s, x)
  kept_noise = jnp.sqrt(jnp.square(sigma_t) - jnp.square(c))
  return per_example(alpha_t, x) * x0_hat + per_example(kept_noise, x) * eps_hat + per_example(c, x) * z


def dpm_solver_2_step(sde, eps_fn, x, s, t, s1):
  """DPM-Solver-2 (Lu et al. 2022, Algorithm 1, `r_1 = 1/2`), `s1` the midpoint in `lambda`:

  u = (alpha_s1 / alpha_s) x - sigma_s1 (e^{h/2} - 1) eps(x, s),
  x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps(u, s1).
  """
  u = exponential_step(sde, x, s, s1, eps_fn(x, s))
  return exponential_step(sde, x, s, t, eps_fn(u, s1))


def dpm_solver_3_step(sde, eps_fn, x, s, t, s1, s2, r1=1.0 / 3.0, r2=2.0 / 3.0):
  """DPM-Solver-3 (Lu et al. 2022, Algorithm 2, `r_1 = 1/3`, `r_2 = 2/3`):

  u1 = (alpha_s1 / alpha_s) x - sigma_s1 (e^{r1 h} - 1) eps_s,               D1 = eps(u1, s1) - eps_s,
  u2 = (alpha_s2 / alpha_s) x - sigma_s2 (e^{r2 h} - 1) eps_s
       - sigma_s2 (r2 / r1) ((e^{r2 h} - 1) / (r2 h) - 1) D1,                 D2 = eps(u2, s2) - eps_s,
  x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps_s - (sigma_t / r2) ((e^h - 1) / h - 1) D2.
  """
  lambda_s = half_log_snr(sde, s)
  h = half_log_snr(sde, t) - lambda_s

  def correction(time, r, scale):
    return per_example(sde.marginal_coefficients(time)[1] * scale * (jnp.expm1(r * h) / (r * h) - 1.0), x)

  eps_s = eps_fn(x, s)
  d1 = eps_fn(exponential_step(sde, x, s, s1, eps_s), s1) - eps_s
  u2 = exponential_step(sde, x, s, s2, eps_s) - correction(s2, r2, r2 / r1) * d1
  d2 = eps_fn(u2, s2) - eps_s
  return exponential_step(sde, x, s, t, eps_s) - correction(t, 1.0, 1.0 / r2) * d2


def _solve(step, x_init, times, intermediates):
  """One `lax.scan` of `step(x, i, s, t, *intermediates)` over the intervals of `times`, the times of
  shape `(batch,)`. The scan carries them as scalars and broadcasts them inside the step, so that XLA
  sees every example's time is the same and computes the kernel's coefficients once per step, not once
  per example (scanning over `(steps, batch)` arrays made DDIM and DPM-Solver chains 10% slower)."""
  batch = x_init.shape[0]
  scalars = (times[:-1], times[1:]) + tuple(intermediates)
  vec = lambda a: jnp.full((batch,), a, x_init.dtype)
  inputs = (jnp.arange(times.shape[0] - 1),) + tuple(jnp.asarray(a, x_init.dtype) for a in scalars)
  x, _ = jax.lax.scan(lambda x, a: (step(x, a[0], *map(vec, a[1:])), None), x_init, inputs)
  return x


def ddim(score_fn, x_init, rng, sde, num_steps, eta, eps, skip_type):
  """DDIM from `T` to `eps` in `num_steps` steps (one score evaluation each); `eta = 0` is deterministic.
  One `lax.scan`; call it inside `jax.jit`. Returns the final `x`."""
  eps_fn = noise_prediction(sde, score_fn)
  times = time_steps(sde, num_steps, eps, skip_type)

  def step(x, i, s, t):
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype) if eta > 0 else 0.0
    return ddim_step(sde, eps_fn, x, s, t, z, eta)

  return _solve(step, x_init, times, ())


def dpm_solver_times(sde, num_steps, order, eps, skip_type):
  """The step ends `times` (`num_steps + 1`) and, per step, the `order - 1` intermediate times."""
  if order not in _MIDPOINTS:
    raise ValueError(f"unknown sampling.dpm_solver_order {order!r}; valid choices: 1, 2, 3")
  times = time_steps(sde, num_steps, eps, skip_type)
  return times, intermediate_times(sde, times[:-1], times[1:], _MIDPOINTS[order])


def dpm_solver(score_fn, x_init, rng, sde, num_steps, order, eps, skip_type):
  """Singlestep DPM-Solver-`order` (1 = DDIM, 2 or 3; Lu et al. 2022, Algorithms 1-2) on the probability
  flow from `T` to `eps` in `num_steps` steps of `order` score evaluations each. `rng` is unused
  (the solver is deterministic). One `lax.scan`; call it inside `jax.jit`. Returns the final `x`."""
  del rng
  eps_fn = noise_prediction(sde, score_fn)
  times, intermediates = dpm_solver_times(sde, num_steps, order, eps, skip_type)
  steps = {
    1: lambda x, i, s, t: exponential_step(sde, x, s, t, eps_fn(x, s)),
    2: lambda x, i, s, t, s1: dpm_solver_2_step(sde, eps_fn, x, s, t, s1),
    3: lambda x, i, s, t, s1, s2: dpm_solver_3_step(sde, eps_fn, x, s, t, s1, s2),
  }
  return _solve(steps[order], x_init, times, intermediates)


@register_sampler("ddim")
def build_ddim(sde, *, num_steps, ddim_eta, eps, skip_type):
  """DDIM for VE, VP and sub-VP: `num_steps` (= nfe), `ddim_eta`, `skip_type`, `eps`."""
  check_options(sde, num_steps=(num_steps, "positive integer"), ddim_eta=(ddim_eta, "[0, 1]"), eps=eps)
  kwargs = dict(num_steps=num_steps, eta=ddim_eta, eps=eps, skip_type=skip_type)
  time_steps(sde, num_steps, eps, skip_type)  # invalid choices fail here

  def sample_fn(score_fn, x_init, rng):
    return ddim(score_fn, x_init, rng, sde, **kwargs), num_steps

  return sample_fn


@register_sampler("dpm_solver")
def build_dpm_solver(sde, *, num_steps, dpm_solver_order, eps, skip_type):
  """Singlestep DPM-Solver for VE, VP and sub-VP: `dpm_solver_order`, `num_steps` (nfe = order x
  num_steps), `skip_type`, `eps`."""
  check_options(sde, num_steps=(num_steps, "positive integer"), eps=eps)
  kwargs = dict(num_steps=num_steps, order=dpm_solver_order, eps=eps, skip_type=skip_type)
  dpm_solver_times(sde, **kwargs)  # invalid choices fail here

  def sample_fn(score_fn, x_init, rng):
    return dpm_solver(score_fn, x_init, rng, sde, **kwargs), dpm_solver_order * num_steps

  return sample_fn
