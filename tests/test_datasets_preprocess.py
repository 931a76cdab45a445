"""Training batches on device: scaled to the model's range, flipped and dequantized."""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import datasets


def test_training_batches_are_scaled_flipped_and_dequantized_on_device():
  k = np.arange(2 * 2 * 3 * 1, dtype=np.uint8).reshape(2, 2, 3, 1) * 20  # pixel counts 0..220
  plain = datasets.preprocess_batch(jnp.asarray(k), jax.random.key(0), 255)
  np.testing.assert_allclose(plain, k / 255.0, rtol=1e-6)
  centered = datasets.preprocess_batch(jnp.asarray(k), jax.random.key(0), 255, centered=True)
  np.testing.assert_allclose(centered, 2 * (k / 255.0) - 1, rtol=1e-6, atol=1e-6)
  # Dequantized: each pixel lies in its own bin [k, k + 1) / 256, and the bins are filled uniformly.
  big = jnp.asarray(np.repeat(k, 2000, axis=0))
  deq = np.asarray(datasets.preprocess_batch(big, jax.random.key(1), 255, uniform_dequantization=True))
  u = deq * 256 - np.asarray(big, np.float64)
  assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
  # Flips: every image is either itself or its mirror, and about half are mirrored.
  flipped = np.asarray(datasets.preprocess_batch(big, jax.random.key(2), 255, random_flip=True))
  same = np.all(np.isclose(flipped, np.asarray(big) / 255.0), axis=(1, 2, 3))
  mirror = np.all(np.isclose(flipped, np.asarray(big)[:, :, ::-1] / 255.0), axis=(1, 2, 3))
  assert np.all(same | mirror) and 0.45 < mirror.mean() < 0.55
