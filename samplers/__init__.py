"""Samplers over a `score_fn`; each is one traceable program (a `lax.scan` over its steps)."""

# Importing the modules registers the samplers.
from scorejax.samplers import cas, dpm_solver, edm, ode, pc  # noqa: F401, E402
from scorejax.samplers.langevin import annealed_langevin_dynamics, langevin_dynamics, langevin_step
from scorejax.samplers.registry import get_sampler, get_sampling_fn, option_names, register_sampler, sampler_names

__all__ = [
  "langevin_dynamics",
  "annealed_langevin_dynamics",
  "langevin_step",
  "register_sampler",
  "get_sampler",
  "get_sampling_fn",
  "option_names",
  "sampler_names",
]
