"""Training losses register themselves by name so that `training.loss` picks them.

A registered entry is a builder `build(sde, **options) -> loss_fn`: `sde` is an `sde_lib.SDE`, and the options
are keyword-only arguments without defaults, named as the `config.training` fields that hold their defaults
(configs/default.py; `sigma_data` is `model.sigma_data`). The builder checks them and raises `ValueError`
naming the field. Then

    loss_fn(score_fn, x, rng) -> scalar

is the loss of a batch `x` of model inputs, traceable, over a `score_fn(x, t)` only (a loss never sees a
network).
"""

import inspect

from scorejax.registry import Registry

_LOSSES = Registry("training.loss")
register_loss = _LOSSES.register
loss_names = _LOSSES.names
get_loss = _LOSSES.get


def option_names(name):
  """The options that the builder of the loss `name` takes (its keyword-only arguments)."""
  parameters = inspect.signature(get_loss(name)).parameters.values()
  return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def get_loss_fn(sde, name, /, **options):
  """`loss_fn(score_fn, x, rng)` of the loss `name`, given the options its builder names (others are ignored,
  so a whole `config.training` can be passed as `**training`)."""
  names = option_names(name)
  return get_loss(name)(sde, **{k: v for k, v in options.items() if k in names})
