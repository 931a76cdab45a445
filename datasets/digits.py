"""The 8x8 handwritten digits shipped with the project (see datasets/data/README.md)."""

import gzip
import os

import numpy as np

from scorejax.datasets.registry import Dataset, register_dataset

DIGITS_PATH = os.path.join(os.path.dirname(__file__), "data", "digits.csv.gz")
NUM_TEST = 197  # the last 197 images are held out: 1600 train, 197 test


def load_digits_raw():
  """All 1,797 images as uint8 `(1797, 8, 8)` with values in 0..16, and their labels."""
  with gzip.open(DIGITS_PATH, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


@register_dataset("digits", levels=17)
def digits(**unused):
  """Images `(n, 8, 8, 1)` of pixel counts 0..16, and their labels 0..9."""
  images, labels = load_digits_raw()
  x = images[..., None]
  return Dataset(
    "digits",
    train=x[:-NUM_TEST],
    test=x[-NUM_TEST:],
    max_value=16,
    train_labels=labels[:-NUM_TEST],
    test_labels=labels[-NUM_TEST:],
    num_classes=10,
  )
