"""Batches as a function of the seed and the step, each epoch covered, each process reading its slice of the
global batch, labels carried with their examples."""

import numpy as np

from scorejax import datasets
from scorejax.datasets.loader import batch_indices


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch():
  n, bs = 100, 10
  epoch = np.concatenate([batch_indices(s, n, bs, seed=3) for s in range(10)])
  assert sorted(epoch.tolist()) == list(range(n))
  np.testing.assert_array_equal(batch_indices(7, n, bs, 3), batch_indices(7, n, bs, 3))
  assert not np.array_equal(batch_indices(10, n, bs, 3), batch_indices(0, n, bs, 3))  # new epoch, new order


def test_processes_read_disjoint_slices_of_the_same_global_batch():
  data = np.arange(40, dtype=np.float32)[:, None]
  full = datasets.BatchLoader(data, 8, seed=0, start_step=5, steps_per_call=2)
  parts = [
    datasets.BatchLoader(data, 8, seed=0, start_step=5, steps_per_call=2, process_index=p, process_count=2)
    for p in range(2)
  ]
  try:
    whole = next(full)
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
    np.testing.assert_array_equal(whole[1], data[batch_indices(6, 40, 8, 0)])
  finally:
    for loader in [full] + parts:
      loader.close()


def test_batches_carry_the_labels_of_their_examples():
  data = np.arange(100, dtype=np.float32)[:, None]
  loader = datasets.BatchLoader(data, 8, seed=0, start_step=3, steps_per_call=2, labels=10 * np.arange(100))
  try:
    images, labels = next(loader)
  finally:
    loader.close()
  assert images.shape == (2, 8, 1) and labels.shape == (2, 8)
  np.testing.assert_array_equal(labels, 10 * images[..., 0])
