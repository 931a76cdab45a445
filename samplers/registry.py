"""Samplers register themselves by name so that `sampling.method` picks them."""
_SAMPLERS = {}


def register_sampler(name: str):
  def wrap(fn):
    if name in _SAMPLERS:
      raise ValueError(f"sampler {name!r} is registered twice")
    _SAMPLERS[name] = fn
    return fn
  return wrap


def sampler_names():
  return sorted(_SAMPLERS)


def get_sampler(name: str):
  if name not in _SAMPLERS:
    raise ValueError(f"unknown sampling.method {name!r}; valid choices: {', '.join(sampler_names())}")
  return _SAMPLERS[name]
