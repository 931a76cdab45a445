"""How much of the machine the training loop and the samplers leave on the table.

  python bench/overhead.py [--steps=3000] [--snapshot_freq=1000] [--with_sampling]

Both ratios are measured in one run on this machine, on the default digits model and data:

  loop_efficiency  = (per-step time of the bare jitted train step, same batch, no host work)
                   / (per-step time inside train, which main.py runs: real batches from the
                      loader, logging to the terminal, metrics.jsonl and TensorBoard, and an orbax
                      checkpoint every `snapshot_freq` steps)
                   target >= 0.90
  sampler_overhead = (time of one N-step annealed Langevin chain)
                   / (N x time of one jitted score evaluation on the same batch)
                   target <= 1.05

The loop is timed from `metrics.jsonl` between the first log (after compilation) and the last.
Sample grids at snapshots are generation, not training, and are off for loop_efficiency; with
`--with_sampling` a second run at the default config's snapshot frequency, with its 64-sample grids,
is timed too (from the first log after the first snapshot, past the sampler's compilation).
"""
import argparse
import json
import os
import tempfile
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import logging  # noqa: E402

from scorejax.run.experiment import Experiment  # noqa: E402
from scorejax.run.train import make_train_step, train  # noqa: E402
from scorejax.configs import digits  # noqa: E402


def timed(fn, repeats):
  """Seconds per call of `fn` (which returns a jax value), after one warm-up call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def bare_step_time(config, repeats):
  exp = Experiment(config)
  state = exp.init_state()
  train_step = make_train_step(exp)
  batch = jnp.asarray(exp.dataset.train[:config.training.batch_size])[None]
  holder = [state]

  def step():
    holder[0], loss = train_step(holder[0], batch)
    return loss
  return timed(step, repeats)


def loop_step_time(config):
  with tempfile.TemporaryDirectory() as workdir:
    train(config, workdir, print_fn=lambda *a: None)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  start = config.training.snapshot_freq if config.training.snapshot_sampling else 0
  window = [r for r in records if r["step"] > start]
  a, b = window[0], window[-1]
  return (b["wall_time"] - a["wall_time"]) / (b["step"] - a["step"]), (a["step"], b["step"])


def sampler_times(config, repeats):
  exp = Experiment(config)
  params = exp.init_state().ema_params
  s = config.sampling
  num = s.batch_size
  x = exp.sde.prior_sample(jax.random.key(0), (num,) + exp.dataset.shape)
  t = jnp.ones((num,))
  score = jax.jit(lambda p, x, t: exp.score_fn(p)(x, t))
  chain = jax.jit(lambda p, x, rng: exp.sampling_fn(exp.score_fn(p), x, rng)[0])
  n = exp.sde.N * s.n_steps_each + int(s.noise_removal)
  t_score = timed(lambda: score(params, x, t), repeats * n)
  t_chain = timed(lambda: chain(params, x, jax.random.key(1)), repeats)
  return t_score, t_chain, n


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=3000, help="training steps of the timed main.py loop")
  parser.add_argument("--snapshot_freq", type=int, default=1000, help="checkpoint every this many steps")
  parser.add_argument("--with_sampling", action="store_true",
                      help="also time a run with sample grids at the default snapshot frequency")
  parser.add_argument("--repeats", type=int, default=3, help="sampler chains to time")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)

  config = digits.get_config()
  config.training.n_iters = args.steps
  config.training.snapshot_freq = args.snapshot_freq
  config.training.snapshot_sampling = False
  bare = bare_step_time(config, repeats=300)
  loop, (lo, hi) = loop_step_time(config)
  if args.with_sampling:
    sampling_config = digits.get_config()
    sampling_config.training.n_iters = 2 * sampling_config.training.snapshot_freq + 100
    loop_s, (lo_s, hi_s) = loop_step_time(sampling_config)
  t_score, t_chain, n = sampler_times(config, args.repeats)

  print(f"machine: {jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}, "
        f"{os.cpu_count()} CPU cores")
  print(f"model: {config.model.name} nf={config.model.nf}, batch {config.training.batch_size}")
  print(f"{'measurement':<44}{'value':>14}")
  print(f"{'bare jitted train step (ms/step)':<44}{bare * 1e3:>14.3f}")
  print(f"{f'main.py loop, steps {lo}-{hi} (ms/step)':<44}{loop * 1e3:>14.3f}")
  if args.with_sampling:
    print(f"{f'  + sample grids, steps {lo_s}-{hi_s} (ms/step)':<44}{loop_s * 1e3:>14.3f}")
    print(f"{'  loop efficiency with sample grids':<44}{bare / loop_s:>14.3f}")
  print(f"{'one jitted score evaluation (ms)':<44}{t_score * 1e3:>14.3f}")
  print(f"{f'annealed Langevin chain, N={n} (ms)':<44}{t_chain * 1e3:>14.3f}")
  print(f"loop_efficiency: {bare / loop:.3f}")
  print(f"sampler_overhead: {t_chain / (n * t_score):.3f}")


if __name__ == "__main__":
  main()
