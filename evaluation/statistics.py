"""Reference statistics of a dataset split in a feature network's space, computed once and cached.

A file holds the features and logits of every image of the split (KID and precision/recall need the
features themselves) and their mean and covariance (FID). Its name carries what the numbers depend on:
the dataset, the split, a hash of the images and the hash of the network's weights, so a changed file,
subset or weight file never reuses stale statistics.
"""

import hashlib
import os
import zipfile

import numpy as np

from scorejax.evaluation import metrics


def images_hash(images):
  """SHA-256 of the images' shape, dtype and bytes (the identity of a split)."""
  images = np.ascontiguousarray(images)
  h = hashlib.sha256(f"{images.shape}{images.dtype}".encode())
  h.update(memoryview(images).cast("B"))
  return h.hexdigest()


def cache_path(cache_dir, dataset, split, images, network):
  name = f"{dataset}_{split}_{len(images)}_{images_hash(images)[:12]}_{network.name}_{network.weights_hash[:12]}.npz"
  return os.path.join(cache_dir, name)


def reference_statistics(network, images, max_value, cache_dir, dataset, split, batch_size=250, print_fn=print):
  """`{features, logits, mu, sigma}` of the integer `images` (pixel counts in 0..max_value) in the
  space of `network`, read from `cache_dir` if computed before, otherwise computed and written there
  (under a temporary name, renamed when complete). An unreadable cache file is recomputed."""
  path = cache_path(cache_dir, dataset, split, images, network)
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        return {k: f[k] for k in ("features", "logits", "mu", "sigma")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
      print_fn(f"recomputing the statistics in {path}: the file cannot be read ({type(e).__name__})")
  print_fn(f"computing {network.name} statistics of the {dataset} {split} split ({len(images)} images) for {path}")
  features, logits = network.extract(np.asarray(images, np.float32) / max_value, batch_size=batch_size)
  mu, sigma = metrics.gaussian_statistics(features)
  stats = {"features": features.astype(np.float32), "logits": logits.astype(np.float32), "mu": mu, "sigma": sigma}
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  try:
    np.savez(tmp, **stats)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return stats
