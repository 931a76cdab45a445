"""Samplers over a `score_fn`; each is one compiled program (a `lax.scan` over its steps)."""
from samplers.langevin import langevin_dynamics, annealed_langevin_dynamics, langevin_step
from samplers.registry import register_sampler, get_sampler, get_sampling_fn, sampler_names

__all__ = ["langevin_dynamics", "annealed_langevin_dynamics", "langevin_step",
           "register_sampler", "get_sampler", "get_sampling_fn", "sampler_names"]
