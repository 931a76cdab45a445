"""Samplers register themselves by name so that `sampling.method` picks them."""
from registry import Registry

_SAMPLERS = Registry("sampling.method")
register_sampler = _SAMPLERS.register
sampler_names = _SAMPLERS.names
get_sampler = _SAMPLERS.get
