"""Samplers register themselves by name so that `sampling.method` picks them.

A registered entry is a builder `build(sde, sampling) -> sample_fn`: `sde` is an `sde_lib.SDE`,
`sampling` the `config.sampling` ConfigDict (the builder reads the fields it needs), and

    sample_fn(score_fn, x_init, rng) -> (x, nfe)

runs the whole chain as one traceable program (call it inside `jax.jit`): `score_fn(x, t)` is the
score at time `t` of shape `(batch,)`, `x_init` a draw from `sde.prior_sample`, and `nfe` the number
of score evaluations per sample (a Python int or a scalar array for adaptive solvers).
"""
from scorejax.registry import Registry

_SAMPLERS = Registry("sampling.method")
register_sampler = _SAMPLERS.register
sampler_names = _SAMPLERS.names
get_sampler = _SAMPLERS.get


def get_sampling_fn(sde, sampling):
  """`sample_fn(score_fn, x_init, rng) -> (x, nfe)` for `sampling.method`."""
  return get_sampler(sampling.method)(sde, sampling)
