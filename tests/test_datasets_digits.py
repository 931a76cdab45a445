"""The 8x8 handwritten digits that ship with the repository: the real dataset, its splits and its model space."""

import numpy as np

from scorejax import datasets


def test_digits_are_the_real_dataset():
  raw, labels = datasets.digits.load_digits_raw()
  assert raw.shape == (1797, 8, 8) and raw.min() == 0 and raw.max() == 16
  assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
  ds = datasets.get_dataset("digits")
  assert ds.train.shape == (1397, 8, 8, 1) and ds.test.shape == (400, 8, 8, 1)
  assert ds.train.dtype == np.uint8 and ds.max_value == 16 and ds.train.max() == 16
  x = ds.model_space(ds.train)
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_allclose(ds.model_space(ds.train, centered=True), 2 * x - 1)


def test_the_held_out_digits_are_a_stratified_random_draw_from_the_whole_file():
  raw, labels = datasets.digits.load_digits_raw()
  train, test = datasets.digits.split_indices(labels)
  assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
  assert np.bincount(labels[test]).tolist() == [40] * 10
  # Every run of 10 held-out rows holds each class once: any prefix of 10k rows is stratified.
  assert all(sorted(labels[test[i : i + 10]]) == list(range(10)) for i in range(0, 400, 10))
  # Drawn from the whole file, not a block of it: each tenth of the file gives about a tenth of the held-out rows.
  per_tenth = np.bincount(test * 10 // len(labels), minlength=10)
  assert per_tenth.min() >= 25 and per_tenth.max() <= 55, per_tenth
  ds = datasets.get_dataset("digits")
  np.testing.assert_array_equal(ds.test[:, :, :, 0], raw[test])
  np.testing.assert_array_equal(ds.train_labels, labels[train])
