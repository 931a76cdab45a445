"""What a user did wrong, as one line: the error types of the run layer, and the one place where a builder's
`ValueError` becomes that line.

The SDEs, networks, losses, samplers and the optimizer check their own arguments and raise `ValueError` naming
the config field and its valid range (`sampling.snr must be a finite number >= 0, got -0.1`); `as_user_error`
turns that into a `UserError`, which `main.py` prints as `error: <line>` with exit status 2. The range checks
below are for the fields that the run layer itself reads (counts, frequencies, evaluation settings)."""

import numpy as np


class UserError(Exception):
  """A problem with the user's input: reported as one line, without a traceback."""


class TrainingDiverged(UserError):
  pass


def as_user_error(build, *args, **kwargs):
  """`build(*args, **kwargs)`, with the `ValueError` by which a builder or a registry refuses its arguments
  re-raised as a `UserError` of the same line."""
  try:
    return build(*args, **kwargs)
  except ValueError as e:
    raise UserError(" ".join(str(e).split())) from None


def _is_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name, value, low=1, high=None):
  """`value` is an integer in `[low, high]`; else a `UserError` naming the field `name` and its range."""
  if _is_int(value) and value >= low and (high is None or value <= high):
    return
  if high is not None:
    domain = f"an integer in [{low}, {high}]"
  else:
    domain = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
  raise UserError(f"{name} must be {domain}, got {value!r}")


# Domains of real fields: the text of the range, and the test of a finite value.
REAL_DOMAINS = {
  "> 0": lambda v: v > 0,
  ">= 0": lambda v: v >= 0,
  "in (0, 1)": lambda v: 0 < v < 1,
  "in [0, 1)": lambda v: 0 <= v < 1,
  "in [0, 1]": lambda v: 0 <= v <= 1,
  "(any sign)": lambda v: True,
}


def check_real(name, value, domain):
  """`value` is a finite real number in `domain` (a key of `REAL_DOMAINS`); else a `UserError` naming the
  field `name` and its range."""
  if _is_real(value) and np.isfinite(value) and REAL_DOMAINS[domain](value):
    return
  raise UserError(f"{name} must be a finite number {domain}, got {value!r}")


def check_ints(name, value, empty=False):
  """`value` is a tuple (or list) of positive integers, non-empty unless `empty`."""
  if isinstance(value, (tuple, list)) and (empty or len(value)) and all(_is_int(v) and v >= 1 for v in value):
    return
  kind = "a tuple of positive integers" if empty else "a non-empty tuple of positive integers"
  raise UserError(f"{name} must be {kind}, got {value!r}")
