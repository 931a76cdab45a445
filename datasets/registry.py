"""Dataset registry. A dataset is a pair of arrays plus what is known about its score."""
import dataclasses
from typing import Callable, Optional

import numpy as np

from registry import Registry


@dataclasses.dataclass(frozen=True)
class Dataset:
  """In-memory data in model space.

  train, test: float32 arrays `(n, *shape)`; `shape` is `(dim,)` for vectors, `(H, W, C)` for images.
  score: the exact score `grad log p_sigma(x)` of the data convolved with `N(0, sigma^2 I)`,
    as a JAX function `score(x, sigma)`, when known in closed form (e.g. a Gaussian mixture).
  sample: draw `n` fresh examples from the true distribution, `sample(rng: np.random.Generator, n)`,
    when the dataset is synthetic.
  """
  name: str
  train: np.ndarray
  test: np.ndarray
  score: Optional[Callable] = None
  sample: Optional[Callable] = None

  @property
  def shape(self):
    return self.train.shape[1:]

  @property
  def is_image(self):
    return self.train.ndim == 4


def scale_images(images, max_value, centered=False):
  """Pixel counts in 0..max_value to float32 in [0, 1], or [-1, 1] if `centered` (`data.centered`)."""
  x = np.asarray(images, np.float32) / max_value
  return 2.0 * x - 1.0 if centered else x


_DATASETS = Registry("data.dataset")
register_dataset = _DATASETS.register
dataset_names = _DATASETS.names


def get_dataset(name: str, **kwargs) -> Dataset:
  return _DATASETS.get(name)(**kwargs)
