"""Throughput of the FID Inception: features per second, and what an FID evaluation of CIFAR-10 costs.

  python bench/inception.py                                   # CPU-sized: batch 32, 2 timed batches
  python bench/inception.py --batch=500 --batches=10          # a GPU
  python bench/inception.py --weights=pt_inception-2015-12-05-6726825d.pth --precision=default

It times `FeatureNetwork.extract` (resize to 299, the network, pool3 and logits back on the host) on 32x32 RGB
images after one untimed batch that compiles, and extrapolates to an FID of CIFAR-10: features of 50k samples plus
50k real images (cached dataset statistics make the second half a one-off). Without `--weights` the network carries
`random_state_dict(0)`: the arithmetic, hence the time, is that of the real weights.
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from scorejax.evaluation import inception, torch_file


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--weights", default=None, help="pytorch-fid's .pth (default: random weights of its shapes)")
  parser.add_argument("--batch", type=int, default=None, help="images per batch (default 32 on CPU, 500 otherwise)")
  parser.add_argument("--batches", type=int, default=None, help="timed batches (default 2 on CPU, 10 otherwise)")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--precision", default="highest", choices=["highest", "high", "default"])
  args = parser.parse_args()
  backend = jax.default_backend()
  batch = args.batch or (32 if backend == "cpu" else 500)
  batches = args.batches or (2 if backend == "cpu" else 10)
  devices = jax.local_devices()
  print(
    f"machine: {os.cpu_count()} CPUs, jax {jax.__version__} backend {backend}, "
    f"{len(devices)} x {devices[0].device_kind}; batch {batch}, precision {args.precision}"
  )

  with tempfile.TemporaryDirectory() as tmp:
    path = args.weights
    if path is None:
      path = os.path.join(tmp, "random_state_dict_0.pth")
      torch_file.save_state_dict(path, inception.random_state_dict(0), legacy=True)
    t0 = time.perf_counter()
    net = inception.load_inception(path, precision=args.precision)
    load_s = time.perf_counter() - t0

  rng = np.random.default_rng(0)
  images = rng.uniform(size=(batch * batches, args.image_size, args.image_size, 3)).astype(np.float32)
  t0 = time.perf_counter()
  net.extract(images[:batch], batch_size=batch)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  features, logits = net.extract(images, batch_size=batch)
  run_s = time.perf_counter() - t0
  assert features.shape == (len(images), 2048) and np.isfinite(features).all() and np.isfinite(logits).all()

  per_s = len(images) / run_s
  fid_s = 100_000 / per_s
  print(f"load {load_s:.1f} s, first batch (compiles) {compile_s:.1f} s")
  print(f"{per_s:.1f} features/s ({len(images)} images of {args.image_size}x{args.image_size} in {run_s:.1f} s)")
  print(
    f"FID of CIFAR-10, 50k samples + 50k real images: {fid_s / 60:.1f} min "
    f"({fid_s / 3600:.2f} h; {fid_s / 120:.1f} min once the real images' statistics are cached)"
  )


if __name__ == "__main__":
  main()
