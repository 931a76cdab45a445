"""The default experiment: the 8x8 handwritten digits that ship with the repo, on a CPU.

  python main.py

How long it takes is measured in bench/README.md (fresh-clone times).
"""

from scorejax.configs.default import get_default_config


def get_config():
  return get_default_config()
