"""The probability-flow ODE sampler (Song et al. 2021, Eq. 13, Sec. 4.3), on the integrators of
samplers/integrators.py."""

import jax.numpy as jnp

from scorejax.samplers.integrators import ODE_SOLVERS, integrate
from scorejax.samplers.registry import check_options, register_sampler


def ode_sampler(score_fn, sde, x_init, ode_solver, ode_steps, eps, rtol, atol, max_steps, noise_removal):
  """Samples by integrating the probability-flow ODE (Song et al. 2021, Eq. 13, Sec. 4.3) from
  `x_init ~ p_T` at `t = T` down to `t = eps` with `ode_solver` (see `integrators.integrate`). The ODE
  stops at `eps > 0` (score_sde's `sampling_eps = 1e-3`) because the score of the data diverges as
  `t -> 0`; with `noise_removal` a last Tweedie step at `eps` returns `E[x_0 | x_eps]` instead (one more
  score evaluation). Deterministic: the same `x_init` gives the same sample.

  Traceable: call it inside `jax.jit`. Returns `(x_0, nfe)`, nfe the score evaluations per sample.
  """
  x, nfe = integrate(
    sde.probability_flow_drift(score_fn), x_init, sde.T, eps, ode_solver, ode_steps, rtol, atol, max_steps
  )
  if noise_removal:
    x, nfe = sde.tweedie_denoise(score_fn, x, jnp.full((x.shape[0],), eps, x.dtype)), nfe + 1
  return x, nfe


@register_sampler("ode")
def build_ode(sde, *, ode_solver, ode_steps, eps, rtol, atol, ode_max_steps, noise_removal):
  """The probability-flow ODE sampler: `ode_solver` ('rk45', 'tsit5', 'euler', 'heun', 'rk4'),
  `ode_steps` (fixed-step solvers), `rtol`, `atol`, `ode_max_steps` (adaptive solvers), `eps` (end
  time), `noise_removal` (final Tweedie step)."""
  check_options(
    sde,
    ode_steps=(ode_steps, "positive integer"),
    rtol=(rtol, "> 0"),
    atol=(atol, "> 0"),
    ode_max_steps=(ode_max_steps, "positive integer"),
    eps=eps,
  )
  if ode_solver not in ODE_SOLVERS:
    raise ValueError(f"unknown sampling.ode_solver {ode_solver!r}; valid choices: {', '.join(ODE_SOLVERS)}")
  options = dict(
    ode_solver=ode_solver,
    ode_steps=int(ode_steps),
    eps=float(eps),
    rtol=float(rtol),
    atol=float(atol),
    max_steps=int(ode_max_steps),
    noise_removal=bool(noise_removal),
  )

  def sample_fn(score_fn, x_init, rng):
    del rng  # the probability-flow ODE is deterministic
    return ode_sampler(score_fn, sde, x_init, **options)

  return sample_fn
