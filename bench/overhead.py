"""How much of the machine the training loop and the samplers leave on the table, measured so that
the figures hold on a machine that other jobs share.

  python bench/overhead.py [--repeats=5] [--segment_steps=500] [--snapshot_freq=500] [--bare_steps=20]
                           [--warmup_steps=100] [--with_sampling]

Two ratios, on the digits model and data of `configs/digits.py:ncsn` (the default until issue 19, whose
annealed Langevin chain is the sampler measured):

  loop_efficiency  = (per-step time of the bare jitted train step: the same batch every step, already
                      on the device, no host work)
                   / (per-step time inside `scorejax.run.train.train`, what main.py runs: real batches
                      from the loader, metrics to metrics.jsonl and TensorBoard, the terminal line
                      (written to /dev/null), and an orbax checkpoint every `--snapshot_freq` steps)
                   target >= 0.90
  sampler_overhead = (time of one annealed Langevin chain of N score evaluations, one jitted program)
                   / (N x time of one jitted score evaluation on the same batch, N calls back to back)
                   target <= 1.05

Wall and CPU time. Every timed quantity is measured both in wall time (`time.perf_counter`) and in CPU
time of this process (`time.process_time`: user + system seconds of all its threads, XLA's, the loader's
and orbax's included), and each ratio is computed from both. Wall time is what a user waits for, but on
a shared machine it also counts the time this process waits for a core that another job holds, and that
wait changes from one second to the next. CPU time counts only the work this process does, so the
CPU-time ratio is the one that holds under load. It does not see time the loop spends blocked without
working (on a disk, say); the wall-time ratio on a quiet machine is the check on that.

Interleaving and spread. The two sides of each ratio are timed interleaved, A, B, A, B, ..., and repeat
`i` pairs the A's of its stretch with the B's that directly follow them, so that both sides of a repeat
see nearly the same load. Each ratio is printed as the median over `--repeats` repeats with the min-max
range, for wall and CPU time, next to the same spread of every timed quantity.

The loop side (A) is one real training run, timed from the inside. `train` calls its `print_fn` at every
log, every `training.log_freq` = 100 steps, after `float(loss)` has waited for the device, so every step
up to that log has finished. After `--warmup_steps` (compilation), this bench's `print_fn` ends a timed
100-step stretch of the loop at each log, then runs a burst of `--bare_steps` bare steps (B: a second,
separately compiled copy of the same train step, with its own state and batch) and hands control back.
A loop stretch runs from the return of one `print_fn` call to the start of the next, so the bursts are
not counted in the loop, and the loop is otherwise untouched: one compilation, the real loader, logger
and checkpointer. A repeat is `--segment_steps` loop steps (five stretches by default) and the bursts
after them. Pausing the loop changes little: the loader's prefetch queue (2 batches, ~10 us of host work
each) is full when a stretch starts, and background threads that outlive a stretch (an orbax save still
finishing) add their time to the next burst, which can only make the bare side look slower, i.e.
lower loop_efficiency. With `--snapshot_freq` = `--segment_steps` (the default) every repeat holds
exactly one checkpoint, so that the repeats do the same work. A checkpoint's CPU time goes mostly to
orbax's background thread, about 4% of a 500-step segment (measured: bench/README.md): the default
of 500 steps checkpoints twice as often as this bench used to (1000) and four times as often as the default
config (2000), so loop_efficiency errs low by 2-3%; `--segment_steps=2000` matches the config.

Where the loop's extra CPU time goes: on Linux both sides' CPU time is also split by thread (from
/proc/self/task, 10 ms ticks): the main thread (dispatch, batch placement, logging, waiting for the
device), XLA's compute threads (`tf_*`), and the rest (the loader's thread, orbax's, TensorBoard's).

`--with_sampling` also draws the config's sample grid at every checkpoint (training.snapshot_sampling,
a 251-evaluation chain): generation, not training, so off by default; the warm-up then runs past the
first grid, which compiles the sampler.

The sampler side calls `scorejax.samplers.langevin.annealed_langevin_dynamics(score_fn, x_init, rng,
sigmas, n_steps_each, step_lr, denoise)` inside this bench's own `jax.jit`, with the parameters and the
noise levels as arguments; `score_fn(x, sigma)` is `sde.noise_level_score` of the network's
`score_fn(x, t)` (for the digits' VE SDE, the score at the time `t` of the level). The reference
evaluates that same `score_fn(x, sigma)`,
jitted alone, N = `num_scales` x `n_steps_each` (+1 denoising step) times on the chain's batch. Each
repeat is one chain (A) and then its N reference evaluations (B).

A default run: two compilations of the train step, 100 + 5 x 500 training steps, 5 x 100 bare steps,
5 chains and 5 x 251 score evaluations; how long it took is in bench/README.md. More repeats narrow the
spread: `--repeats=10`.
"""

import argparse
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import logging

from scorejax.configs import digits
from scorejax.run.experiment import Experiment
from scorejax.run.train import make_train_step, train
from scorejax.samplers.langevin import annealed_langevin_dynamics


def clocks():
  """(wall seconds, CPU seconds of this process, all threads)."""
  return time.perf_counter(), time.process_time()


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu():
  """CPU seconds so far of this process's main thread and of XLA's compute threads (`tf_*`, the
  intra-op pool), from /proc (Linux, 10 ms ticks); None elsewhere. The process's CPU time less these two
  is the other threads': the loader's, orbax's, TensorBoard's."""
  main = xla = 0.0
  try:
    tids = os.listdir("/proc/self/task")
  except OSError:
    return None
  for tid in tids:
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      with open(f"/proc/self/task/{tid}/comm") as f:
        name = f.read()
    except OSError:  # a thread that ended meanwhile
      continue
    seconds = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    if int(tid) == os.getpid():
      main += seconds
    elif name.startswith("tf_"):
      xla += seconds
  return main, xla


def timed(fn, calls):
  """Total (wall, CPU) seconds of `calls` calls of `fn` dispatched back to back; waits for the device
  after the last one only, as a loop that does not read its results would."""
  wall, cpu = clocks()
  for _ in range(calls):
    out = fn()
  jax.block_until_ready(out)
  wall_end, cpu_end = clocks()
  return wall_end - wall, cpu_end - cpu


# ----------------------------------------------------------------------------- loop_efficiency


def make_bare_steps(config):
  """`burst(n)`: the total (wall, CPU) seconds of `n` bare train steps on one fixed batch already on the
  device, the compiled step of the training loop (`make_train_step`) with nothing around it. The step
  is compiled here, before any timing."""
  exp = Experiment(config)
  train_step = make_train_step(exp)
  batch = jax.device_put(exp.dataset.train[: config.training.batch_size][None], exp.replicated)
  holder = [exp.init_state()]

  def step():
    holder[0], loss = train_step(holder[0], batch)
    return loss

  jax.block_until_ready(step())
  return lambda n: timed(step, n)


class InterleavedTimer:
  """The `print_fn` given to `train`. From step `start` on, at every log line it ends a stretch of the
  loop (A: steps, wall, CPU) and then runs a burst of `bare_steps` bare steps (B) before returning."""

  LOG_LINE = re.compile(r"step (\d+)/")

  def __init__(self, start, burst, bare_steps, sink):
    self.start, self.burst, self.bare_steps, self.sink = start, burst, bare_steps, sink
    self.mark = None  # (step, wall, cpu, threads) where the running stretch started
    self.loop, self.bare = [], []
    self.loop_threads, self.bare_threads = [], []  # (steps, CPU seconds of the main thread, of XLA's)

  def __call__(self, line):
    print(line, file=self.sink)
    wall, cpu = clocks()
    threads = thread_cpu()
    match = self.LOG_LINE.match(line)
    if match is None or int(match.group(1)) < self.start:
      return
    step = int(match.group(1))
    if self.mark is not None:
      mark_step, mark_wall, mark_cpu, mark_threads = self.mark
      self.loop.append((step - mark_step, wall - mark_wall, cpu - mark_cpu))
      before = thread_cpu()
      self.bare.append((self.bare_steps, *self.burst(self.bare_steps)))
      after = thread_cpu()
      if threads is not None:
        self.loop_threads.append((step - mark_step, *(b - a for a, b in zip(mark_threads, threads))))
        self.bare_threads.append((self.bare_steps, *(b - a for a, b in zip(before, after))))
    threads = thread_cpu()
    self.mark = (step, *clocks(), threads)


def per_step(stretches):
  """(wall, CPU) seconds per step over `(steps, wall, cpu)` stretches."""
  steps = sum(s[0] for s in stretches)
  return sum(s[1] for s in stretches) / steps, sum(s[2] for s in stretches) / steps


def measure_loop(config, repeats, segment_steps, bare_steps, warmup_steps):
  """Per repeat: the loop's and the bare step's (wall, CPU) seconds per step; and the timed step range."""
  burst = make_bare_steps(config)
  config.training.n_iters = warmup_steps + repeats * segment_steps
  with tempfile.TemporaryDirectory() as workdir, open(os.devnull, "w") as sink:
    timer = InterleavedTimer(warmup_steps, burst, bare_steps, sink)
    train(config, workdir, print_fn=timer)
  per_repeat = segment_steps // config.training.log_freq
  if len(timer.loop) != repeats * per_repeat:
    raise RuntimeError(
      f"timed {len(timer.loop)} stretches of the loop, expected {repeats * per_repeat}: "
      "has the log line of train (logging_utils.MetricsLogger) changed?"
    )
  chunks = [slice(i * per_repeat, (i + 1) * per_repeat) for i in range(repeats)]
  threads = None
  if timer.loop_threads:  # per repeat: (main, XLA's, other) CPU seconds per step, of the loop and the bare step
    threads = [
      [thread_split(stretches[c], cpus[c]) for c in chunks]
      for stretches, cpus in ((timer.loop_threads, timer.loop), (timer.bare_threads, timer.bare))
    ]
  return (
    [per_step(timer.loop[c]) for c in chunks],
    [per_step(timer.bare[c]) for c in chunks],
    (warmup_steps, config.training.n_iters),
    threads,
  )


def thread_split(stretches, timed_stretches):
  """(main, XLA's, other threads') CPU seconds per step over `(steps, main, xla)` stretches; the other
  threads' is the process's CPU time (`timed_stretches`, `(steps, wall, cpu)`) less the first two."""
  steps = sum(s[0] for s in stretches)
  main, xla = (sum(s[k] for s in stretches) / steps for k in (1, 2))
  return main, xla, per_step(timed_stretches)[1] - main - xla


# ----------------------------------------------------------------------------- sampler_overhead


def measure_sampler(config, repeats):
  """Per repeat: the (wall, CPU) seconds of one chain and of one score evaluation (the mean of N run
  right after that chain); and N."""
  exp = Experiment(config)
  params = exp.init_state().ema_params
  s = config.sampling
  sigmas = exp.sde.discrete_sigmas[::-1]  # sigma_max -> sigma_min
  n = sigmas.shape[0] * s.n_steps_each + int(s.noise_removal)
  x = exp.sde.prior_sample(jax.random.key(0), (s.batch_size,) + exp.dataset.shape)

  def score_of(params):
    return exp.sde.noise_level_score(exp.score_fn(params))

  score = jax.jit(lambda params, x, sigma: score_of(params)(x, sigma))
  chain = jax.jit(
    lambda params, x, rng, sigmas: annealed_langevin_dynamics(
      score_of(params), x, rng, sigmas, s.n_steps_each, s.step_lr, s.noise_removal
    )
  )
  sigma = jnp.full((s.batch_size,), sigmas[0])
  rng = jax.random.key(1)
  jax.block_until_ready(score(params, x, sigma))  # compile both
  jax.block_until_ready(chain(params, x, rng, sigmas))
  chains, scores = [], []
  for _ in range(repeats):
    chains.append(timed(lambda: chain(params, x, rng, sigmas), 1))
    scores.append(tuple(total / n for total in timed(lambda: score(params, x, sigma), n)))
  return chains, scores, n


# ----------------------------------------------------------------------------- report


def spread(values, fmt=".3f"):
  """`median [min-max]` of `values`."""
  return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=5, help="repeats (A, B pairs) of each ratio")
  parser.add_argument(
    "--segment_steps",
    type=int,
    default=500,
    help="training steps of each repeat of the loop (a multiple of training.log_freq)",
  )
  parser.add_argument(
    "--snapshot_freq",
    type=int,
    default=None,
    help="checkpoint every this many steps (default: segment_steps, one per repeat)",
  )
  parser.add_argument("--bare_steps", type=int, default=20, help="bare steps timed after every loop log")
  parser.add_argument(
    "--warmup_steps",
    type=int,
    default=None,
    help="untimed first training steps, a multiple of training.log_freq (default: log_freq, "
    "past compilation; with --with_sampling snapshot_freq + log_freq, past the first grid)",
  )
  parser.add_argument(
    "--with_sampling",
    action="store_true",
    help="draw the config's sample grid at every checkpoint (training.snapshot_sampling)",
  )
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  load_start = os.getloadavg()[0]

  config = digits.get_config("ncsn")
  t = config.training
  t.snapshot_freq = args.snapshot_freq or args.segment_steps
  t.snapshot_sampling = args.with_sampling
  warmup = args.warmup_steps
  if warmup is None:
    warmup = t.snapshot_freq + t.log_freq if args.with_sampling else t.log_freq
  for name, value in (("--segment_steps", args.segment_steps), ("--warmup_steps", warmup)):
    if value <= 0 or value % t.log_freq:
      parser.error(f"{name}={value} must be a positive multiple of training.log_freq={t.log_freq}")
  if args.repeats < 1 or args.bare_steps < 1:
    parser.error("--repeats and --bare_steps must be positive")

  loop, bare, (lo, hi), threads = measure_loop(config, args.repeats, args.segment_steps, args.bare_steps, warmup)
  chains, scores, n = measure_sampler(digits.get_config("ncsn"), args.repeats)

  print(
    f"machine: {jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}, {os.cpu_count()} "
    f"CPU cores; 1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end"
  )
  print(
    f"model: {config.model.name} nf={config.model.nf}, batch {t.batch_size}; loop: one train() run, steps "
    f"{lo}-{hi}, checkpoint every {t.snapshot_freq}{', sample grids' if args.with_sampling else ''}, "
    f"{args.bare_steps} bare steps after every log"
  )
  print(f"{args.repeats} repeats, median [min-max]:")
  print(f"{'':<38}{'wall':>27}{'CPU':>27}")
  rows = [
    ("train() loop (ms/step)", loop),
    ("bare jitted train step (ms/step)", bare),
    (f"annealed Langevin chain, N={n} (ms)", chains),
    ("one jitted score evaluation (ms)", scores),
  ]
  for label, pairs in rows:
    print(f"{label:<38}" + "".join(f"{spread([p[k] * 1e3 for p in pairs], '.2f'):>27}" for k in (0, 1)))
  loop_efficiency = [[b[k] / a[k] for a, b in zip(loop, bare)] for k in (0, 1)]
  sampler_overhead = [[c[k] / (n * e[k]) for c, e in zip(chains, scores)] for k in (0, 1)]
  print(f"{'loop_efficiency (target >= 0.90)':<38}" + "".join(f"{spread(r):>27}" for r in loop_efficiency))
  print(f"{'sampler_overhead (target <= 1.05)':<38}" + "".join(f"{spread(r):>27}" for r in sampler_overhead))
  if threads is not None:
    print(f"CPU time by thread (ms/step), median [min-max]:{'train() loop':>18}{'bare step':>27}")
    labels = ("main thread (dispatch, batches, logs)", "XLA's compute threads", "other threads (loader, orbax)")
    for k, label in enumerate(labels):
      print(f"  {label:<36}" + "".join(f"{spread([r[k] * 1e3 for r in side], '.2f'):>27}" for side in threads))
  print(f"bench time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
