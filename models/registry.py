"""Models register themselves by name so that a config string picks them (`model.name`)."""
_MODELS = {}


def register_model(name: str):
  """Class decorator: `@register_model('mlp')` makes the network available as `model.name='mlp'`."""
  def wrap(cls):
    if name in _MODELS:
      raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = cls
    return cls
  return wrap


def model_names():
  return sorted(_MODELS)


def get_model(name: str, **kwargs):
  """Build the registered network `name` with keyword hyperparameters."""
  if name not in _MODELS:
    raise ValueError(f"unknown model.name {name!r}; valid choices: {', '.join(model_names())}")
  return _MODELS[name](**kwargs)
