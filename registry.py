"""Name -> object tables, so that a config string picks a model, sampler or dataset and a fork adds
one with a decorator instead of editing a dispatcher (as in score_sde's `register_model`)."""


class Registry:
  def __init__(self, field: str):
    self.field = field  # the config field that names an entry, for error messages
    self._entries = {}

  def register(self, name: str):
    def wrap(obj):
      if name in self._entries:
        raise ValueError(f"{self.field} {name!r} is registered twice")
      self._entries[name] = obj
      return obj

    return wrap

  def names(self):
    return sorted(self._entries)

  def get(self, name: str):
    if name not in self._entries:
      raise ValueError(f"unknown {self.field} {name!r}; valid choices: {', '.join(self.names())}")
    return self._entries[name]
