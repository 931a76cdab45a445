"""Samplers over a `score_fn`; each is one compiled program (a `lax.scan` over its steps)."""
from scorejax.samplers.langevin import langevin_dynamics, annealed_langevin_dynamics, langevin_step
from scorejax.samplers.registry import register_sampler, get_sampler, get_sampling_fn, sampler_names
# Importing the modules registers the samplers.
from scorejax.samplers import cas, dpm_solver, edm, ode, pc  # noqa: F401

__all__ = ["langevin_dynamics", "annealed_langevin_dynamics", "langevin_step",
           "register_sampler", "get_sampler", "get_sampling_fn", "sampler_names"]
