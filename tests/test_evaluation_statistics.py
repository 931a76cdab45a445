"""The reference statistics of real data (features, their mean and covariance) are computed once, cached under a
name that says what they are of, and recomputed when the cache is unreadable."""

import numpy as np

from scorejax.evaluation import statistics
from scorejax.evaluation.features import FeatureNetwork


def test_real_data_statistics_are_computed_once_and_recomputed_when_unreadable(tmp_path):
  def apply(variables, images):
    flat = images.reshape(images.shape[0], -1)
    return flat * variables, flat[:, :2]

  network = FeatureNetwork("toy", "ab" * 32, 4, 2, apply, np.float32(2.0))
  images = np.random.default_rng(0).integers(0, 5, (12, 2, 2, 1), dtype=np.uint8)
  lines = []
  first = statistics.reference_statistics(network, images, 4, str(tmp_path), "toyset", "train", print_fn=lines.append)
  np.testing.assert_allclose(first["features"], 2 * images.reshape(12, -1) / 4, rtol=1e-6)
  np.testing.assert_allclose(first["mu"], first["features"].mean(0), rtol=1e-6)
  np.testing.assert_allclose(first["sigma"], np.cov(first["features"], rowvar=False), rtol=1e-5, atol=1e-7)
  assert sum("computing" in line for line in lines) == 1
  (path,) = tmp_path.iterdir()
  assert path.name.startswith("toyset_train_12_") and path.name.endswith(f"_toy_{'ab' * 6}.npz")
  lines.clear()
  again = statistics.reference_statistics(network, images, 4, str(tmp_path), "toyset", "train", print_fn=lines.append)
  assert lines == [] and np.array_equal(again["sigma"], first["sigma"])  # read back, not recomputed
  path.write_bytes(path.read_bytes()[:100])  # truncated
  statistics.reference_statistics(network, images, 4, str(tmp_path), "toyset", "train", print_fn=lines.append)
  assert lines[0].startswith(f"recomputing the statistics in {path}") and "computing" in lines[1]
  other = images.copy()
  other[0, 0, 0, 0] ^= 1  # one pixel differs: another image set, another file
  statistics.reference_statistics(network, other, 4, str(tmp_path), "toyset", "train", print_fn=lines.append)
  assert len(list(tmp_path.iterdir())) == 2
