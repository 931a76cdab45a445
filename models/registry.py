"""Models register themselves by name so that a config string picks them (`model.name`)."""

from scorejax.registry import Registry

_MODELS = Registry("model.name")
register_model = _MODELS.register  # `@register_model('mlp')` on a Flax module class
model_names = _MODELS.names
get_model_class = _MODELS.get


def get_model(name: str, **kwargs):
  """Build the registered network `name` with keyword hyperparameters."""
  return get_model_class(name)(**kwargs)
