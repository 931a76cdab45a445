"""The default experiment: the 8x8 handwritten digits that ship with the repo (2-core CPU, ~10 min)."""

from scorejax.configs.default import get_default_config


def get_config():
  return get_default_config()
