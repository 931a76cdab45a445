"""Samplers register themselves by name so that `sampling.method` picks them.

A registered entry is a builder `build(sde, **options) -> sample_fn`: `sde` is an `sde_lib.SDE`, and the
options are keyword-only arguments without defaults, named as the `config.sampling` fields that hold
their defaults (configs/default.py; run/builders.py passes the fields a builder names). Then

    sample_fn(score_fn, x_init, rng) -> (x, nfe)

runs the whole chain as one traceable program (call it inside `jax.jit`): `score_fn(x, t)` is the
score at time `t` of shape `(batch,)`, `x_init` a draw from `sde.prior_sample`, and `nfe` the number
of score evaluations per sample (a Python int or a scalar array for adaptive solvers).
"""

import inspect
import math
import numbers

from scorejax.registry import Registry

_SAMPLERS = Registry("sampling.method")
register_sampler = _SAMPLERS.register
sampler_names = _SAMPLERS.names
get_sampler = _SAMPLERS.get


def option_names(method):
  """The options that the builder of `method` takes (its keyword-only arguments)."""
  parameters = inspect.signature(get_sampler(method)).parameters.values()
  return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def get_sampling_fn(sde, method, /, **options):
  """`sample_fn(score_fn, x_init, rng) -> (x, nfe)` for `method`, given the options its builder names
  (others are ignored, so a whole `config.sampling` can be passed as `**sampling`)."""
  names = option_names(method)
  return get_sampler(method)(sde, **{k: v for k, v in options.items() if k in names})


def _integer(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# A builder's options as `config.sampling` names them, and their domains: the test, and its text.
DOMAINS = {
  "positive integer": (lambda v: _integer(v) and v >= 1, "a positive integer"),
  "non-negative integer": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
  "> 0": (lambda v: _real(v) and v > 0, "a finite number > 0"),
  ">= 0": (lambda v: _real(v) and v >= 0, "a finite number >= 0"),
  "[0, 1]": (lambda v: _real(v) and 0 <= v <= 1, "a finite number in [0, 1]"),
}


def check_options(sde=None, **options):
  """A builder's check of its arguments, each `name=(value, domain)` with `domain` a key of `DOMAINS`,
  or `eps=value` for an end time in `(0, sde.T)`: a `ValueError` that names the first bad one as the
  `config.sampling` field and gives its range."""
  for name, value in options.items():
    if name == "eps":
      if not (_real(value) and 0 < value < sde.T):
        raise ValueError(f"sampling.eps must be a finite number in (0, {sde.T:g}), got {value!r}")
      continue
    value, domain = value
    ok, text = DOMAINS[domain]
    if not ok(value):
      raise ValueError(f"sampling.{name} must be {text}, got {value!r}")
