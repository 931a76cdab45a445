"""Training throughput of the CIFAR-10 variants, and the input pipeline's headroom.

  python bench/throughput.py                      # every variant, reduced width (CPU-sized)
  python bench/throughput.py --full --batch=128   # published widths (a GPU)
  python bench/throughput.py --variants=vp_ddpm,ve_ncsnpp --steps=20

For each variant of configs/cifar.py it prints the step time, images/s, compile time and peak
memory of the real train step (`make_train_step`, with EMA, clipping and the on-device
preprocessing), and the input-pipeline headroom: batches/s the loader delivers (gather, transfer
to the devices) over batches/s the step consumes; it should stay >= 3 so the accelerator never
waits. The data is a generated archive in the CIFAR-10 format (nothing is downloaded).
"""

import argparse
import os
import resource
import tempfile
import time

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from scorejax import (
  datasets,  # noqa: E402
  models,  # noqa: E402
)
from scorejax.configs import cifar  # noqa: E402
from scorejax.datasets import cifar10  # noqa: E402
from scorejax.run.builders import DTYPES  # noqa: E402
from scorejax.run.experiment import Experiment  # noqa: E402
from scorejax.run.train import make_train_step  # noqa: E402


def write_fake_cifar(root, per_batch):
  rng = np.random.default_rng(0)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  cifar10.write_archive(
    os.path.join(root, cifar10.ARCHIVE),
    {n: rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8) for n in names},
  )


def peak_memory_mib():
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "host RSS"


def measure(variant, args, root):
  config = cifar.get_config(variant)
  config.data.root, config.data.verify_checksum = root, False
  config.training.batch_size = args.batch
  if not args.full:
    config.model.nf = args.nf
    config.model.num_res_blocks = min(config.model.get("num_res_blocks", 1), args.num_res_blocks)
  config.training.dtype = args.dtype
  exp = Experiment(config)
  state = exp.init_state()
  train_step = make_train_step(exp)
  loader = datasets.BatchLoader(
    exp.dataset.train, args.batch, config.seed, 0, 1, sharding=NamedSharding(exp.mesh, P(None, "data"))
  )
  try:
    t0 = time.perf_counter()
    state, loss = train_step(state, next(loader))
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, loss = train_step(state, next(loader))
    jax.block_until_ready((state, loss))
    step_s = (time.perf_counter() - t0) / args.steps
    # The loader alone, consumed as fast as it can deliver placed batches.
    t0 = time.perf_counter()
    for _ in range(args.loader_batches):
      jax.block_until_ready(next(loader))
    loader_s = (time.perf_counter() - t0) / args.loader_batches
  finally:
    loader.close()
  memory, where = peak_memory_mib()
  return {
    "variant": variant,
    "params": models.utils.param_count(state.params),
    "step_ms": 1e3 * step_s,
    "images_per_s": args.batch / step_s,
    "compile_s": compile_s,
    "memory_mib": memory,
    "memory_kind": where,
    "headroom": step_s / loader_s,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variants", default=",".join(cifar.VARIANTS))
  parser.add_argument("--full", action="store_true", help="published widths instead of --nf/--num_res_blocks")
  parser.add_argument("--nf", type=int, default=16)
  parser.add_argument("--num_res_blocks", type=int, default=1)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--loader_batches", type=int, default=200)
  parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  parser.add_argument(
    "--images_per_batch_file", type=int, default=1000, help="size of each of the 6 generated archive batches"
  )
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  device = jax.devices()[0]
  width = "published width" if args.full else f"nf={args.nf}, num_res_blocks<={args.num_res_blocks}"
  print(
    f"# {device.platform}: {device.device_kind}, {jax.device_count()} device(s), jax {jax.__version__}; "
    f"batch {args.batch}, {width}, "
    f"{args.dtype}"
  )
  print("| variant | parameters | step (ms) | images/s | compile (s) | peak memory (MiB) | loader headroom |")
  print("|---|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as root:
    write_fake_cifar(root, args.images_per_batch_file)
    for variant in args.variants.split(","):
      r = measure(variant, args, root)
      print(
        f"| {r['variant']} | {r['params'] / 1e6:.2f}M | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | "
        f"{r['compile_s']:.1f} | {r['memory_mib']:.0f} ({r['memory_kind']}) | {r['headroom']:.1f}x |",
        flush=True,
      )


if __name__ == "__main__":
  main()
