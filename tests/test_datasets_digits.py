"""The 8x8 handwritten digits that ship with the repository: the real dataset, its splits and its model space."""

import numpy as np

from scorejax import datasets


def test_digits_are_the_real_dataset():
  raw, labels = datasets.digits.load_digits_raw()
  assert raw.shape == (1797, 8, 8) and raw.min() == 0 and raw.max() == 16
  assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
  ds = datasets.get_dataset("digits")
  assert ds.train.shape == (1600, 8, 8, 1) and ds.test.shape == (197, 8, 8, 1)
  assert ds.train.dtype == np.uint8 and ds.max_value == 16 and ds.train.max() == 16
  x = ds.model_space(ds.train)
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_allclose(ds.model_space(ds.train, centered=True), 2 * x - 1)
