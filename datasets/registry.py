"""Dataset registry. A dataset is a pair of arrays plus what is known about its score."""

import dataclasses
from collections.abc import Callable

import numpy as np

from scorejax.datasets.preprocess import to_model_space
from scorejax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Dataset:
  """In-memory data.

  train, test: arrays `(n, *shape)`; `shape` is `(dim,)` for vectors, `(H, W, C)` for images.
    Images are integer pixel counts (uint8) in `0..max_value`, turned into model inputs on the
    device (datasets/preprocess.py); vector data is float32 in model space (`max_value=None`).
  score: the exact score `grad log p(x)` of the data scaled by `scale` and convolved with
    `N(0, sigma^2 I)`, as a JAX function `score(x, sigma, scale=1.0)`, when known in closed form
    (e.g. a Gaussian mixture). With `(scale, sigma) = sde.marginal_coefficients(t)` it is the exact
    score of the data carried by the SDE to time `t`.
  sample: draw `n` fresh examples from the true distribution, `sample(rng: np.random.Generator, n)`,
    when the dataset is synthetic.
  train_labels, test_labels: integer class labels `(n,)` of the two splits, when the data has classes.
  num_classes: how many classes the labels range over.
  """

  name: str
  train: np.ndarray
  test: np.ndarray
  score: Callable | None = None
  sample: Callable | None = None
  max_value: float | None = None
  log_prob: Callable | None = None  # exact `log p(x)` of the data, when known (JAX, `(batch, ...)` -> `(batch,)`)
  train_labels: np.ndarray | None = None
  test_labels: np.ndarray | None = None
  num_classes: int | None = None

  @property
  def shape(self):
    return self.train.shape[1:]

  @property
  def is_image(self):
    return self.train.ndim == 4

  def model_space(self, x, centered=False):
    """Stored examples (e.g. `self.test[:n]`) as float32 model inputs, without augmentation."""
    if self.max_value is None:
      return np.asarray(x, np.float32)
    return to_model_space(np.asarray(x), self.max_value, centered)


_DATASETS = Registry("data.dataset")
_LEVELS = {}
dataset_names = _DATASETS.names


def register_dataset(name: str, levels: int | None = None):
  """Register the loader `name` (`data.dataset`). `levels`: how many values each stored number takes, known without
  loading the data: `max_value + 1` for integer pixel counts (17 for the digits, 256 for 8-bit images), 0 for
  continuous data (vectors in model space), None where unknown. The discrete decoder of VDM's bound
  (losses/vdm.py) is over these levels."""

  def wrap(loader):
    _DATASETS.register(name)(loader)
    _LEVELS[name] = levels
    return loader

  return wrap


def dataset_levels(name: str) -> int | None:
  """The `levels` that the dataset `name` was registered with (`register_dataset`); a `ValueError` for an unknown
  name."""
  _DATASETS.get(name)
  return _LEVELS[name]


def get_dataset(name: str, **kwargs) -> Dataset:
  return _DATASETS.get(name)(**kwargs)
