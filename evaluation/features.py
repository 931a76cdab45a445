"""The interface shared by the feature networks: images in, (features, logits) out, in batches over devices."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
  """A fixed network whose activations measure sample quality.

  name: `inception_v3_fid` or `digits_classifier`.
  weights_hash: hex SHA-256 of the weights; cached dataset statistics are keyed by it.
  num_features, num_classes: widths of the two outputs.
  apply: jittable `(variables, images) -> (features, logits)`, images float32 `(n, H, W, C)` in [0, 1],
    C in {1, 3}. The weights are an argument, not a closure: closed-over arrays would be baked into
    every compiled program as constants (95 MB for Inception).
  variables: the network's weights.
  """

  name: str
  weights_hash: str
  num_features: int
  num_classes: int
  apply: Callable
  variables: Any

  def extract(self, images, batch_size=250, devices=None):
    """`(features, logits)` of `images` as float64 NumPy arrays, computed `batch_size` at a time with
    each batch split over `devices` (default: all local devices). One compiled program serves every
    batch: the last one is padded, and the padding dropped."""
    images = np.asarray(images, np.float32)
    devices = list(devices or jax.local_devices())
    n_dev = len(devices)
    batch_size = max(n_dev, -(-min(batch_size, max(len(images), 1)) // n_dev) * n_dev)
    fn = _sharded_apply(self.apply, tuple(devices))
    variables = jax.device_put(self.variables, NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec()))
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      f, lg = fn(variables, chunk)
      feats.append(np.asarray(f, np.float64)[: batch_size - pad])
      logits.append(np.asarray(lg, np.float64)[: batch_size - pad])
    if not feats:
      return np.zeros((0, self.num_features)), np.zeros((0, self.num_classes))
    return np.concatenate(feats), np.concatenate(logits)


@functools.cache  # one compiled program per network and device set
def _sharded_apply(apply, devices):
  mesh = Mesh(np.asarray(devices), ("data",))
  batch, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
  return jax.jit(lambda v, x: apply(v, jnp.asarray(x)), in_shardings=(replicated, batch), out_shardings=(batch, batch))
