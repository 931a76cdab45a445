"""`--mode=train`: the training loop, its compiled step, signals and the NaN check."""

import collections
import os
import signal

import jax
import jax.numpy as jnp
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from scorejax import datasets, models
from scorejax.checkpointing import Checkpointer, CheckpointError
from scorejax.logging_utils import MetricsLogger, atomic_output
from scorejax.run.classifier import classifier_accuracy
from scorejax.run.data import check_training_batch
from scorejax.run.errors import TrainingDiverged, UserError, check_int
from scorejax.run.experiment import TRAIN, Experiment, seed_key
from scorejax.run.optim import TrainState
from scorejax.run.sample import write_samples
from scorejax.run.saved_config import checks_config, config_dict
from scorejax.run.workdir import workdir_lock

# ----------------------------------------------------------------------------- training


def make_train_step(exp):
  """One dispatch = `training.n_jitted_steps` optimizer steps over stacked batches `(k, batch, ...)`.

  The loss of step `k` uses the key `fold_in(fold_in(seed, TRAIN), k)`, so results do not depend
  on how steps are grouped into dispatches or how the batch is split over devices. The EMA decays by
  `model.ema_rate` per step, or with `model.ema_halflife_kimg > 0` by EDM's half-life in images (run/optim.py).
  """
  train_key = seed_key(exp.config, TRAIN)

  def one_step(state, batch):
    rng = jax.random.fold_in(train_key, state.step)
    loss, grads = jax.value_and_grad(exp.batch_loss)(state.params, batch, rng)
    updates, opt_state = exp.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = exp.ema_decay(state.step)
    ema = jax.tree_util.tree_map(lambda e, p: beta * e + (1.0 - beta) * p, state.ema_params, params)
    first_bad = (state.nan_step < 0) & ~jnp.isfinite(loss)
    nan_step = jnp.where(first_bad, state.step, state.nan_step)
    return TrainState(state.step + 1, params, ema, opt_state, nan_step), loss

  def train_step(state, batches):
    # Unrolled at trace time rather than a lax.scan: XLA:CPU (jax 0.10) runs the weight-gradient
    # convolution 25-40x slower inside a loop body, even a fully unrolled scan. The program grows
    # with n_jitted_steps, which stays small.
    step_losses = []
    for i in range(jax.tree_util.tree_leaves(batches)[0].shape[0]):
      state, loss = one_step(state, jax.tree_util.tree_map(lambda b: b[i], batches))
      step_losses.append(loss)
    return state, jnp.stack(step_losses)

  return jax.jit(train_step, donate_argnums=0, out_shardings=(exp.replicated, exp.replicated))


class _StopSignal:
  """SIGTERM/SIGINT set a flag; the loop checkpoints and exits at the next step boundary.

  With several processes all must stop at the same step, or one waits forever in a collective for
  another that is saving. There jax's preemption service owns SIGTERM (a Python handler would replace
  its own): a notice to any process reaches all, and `reached_preemption_sync_point` turns true at the
  same step in each. SIGINT is passed on to it as a SIGTERM.
  """

  def __init__(self):
    self.received = None

  def __enter__(self):
    self._multi_process = jax.process_count() > 1
    signals = (signal.SIGINT,) if self._multi_process else (signal.SIGTERM, signal.SIGINT)
    self._old = {sig: signal.signal(sig, self._handle) for sig in signals}
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name
    if self._multi_process:
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step, num_steps):
    """After a dispatch of the `num_steps` optimizer steps that end at `step`, in every process."""
    if not self._multi_process:
      return self.received is not None
    # Every step id in order, as orbax also passes step ids: the agreed sync point is one of them.
    reached = [multihost_utils.reached_preemption_sync_point(s) for s in range(step - num_steps + 1, step + 1)]
    if any(reached):
      self.received = self.received or "SIGTERM"
    return any(reached)

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _check_finite(state, checkpointer, workdir):
  nan_step = int(state.nan_step)
  if nan_step >= 0:
    checkpointer.wait()
    last = checkpointer.latest_step()
    kept = (
      f"the last good checkpoint (step {last}) is kept in {workdir}/checkpoints"
      if last is not None
      else "no checkpoint had been saved yet"
    )
    raise TrainingDiverged(
      f"training stopped: the loss became NaN/inf at step {nan_step}; {kept}; lower optim.lr or set optim.grad_clip"
    )


def _write_config(config, workdir):
  """`workdir/config.json`, replaced atomically (never a torn or half-written file)."""
  path = os.path.join(workdir, "config.json")
  try:
    with atomic_output(path) as tmp, open(tmp, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  except OSError as e:
    raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def train(config, workdir, devices=None, print_fn=print):
  """Train (or resume) in `workdir`; returns the final `TrainState`.

  The workdir is locked for the run (run/workdir.py). It resumes from the newest checkpoint that
  proves itself (a corrupt newer one is reported and moved to `checkpoints/corrupt/`), refusing a
  config whose network, SDE or data differ from the checkpoint's; `config.json` is written after that.
  SIGTERM/SIGINT are caught from the start (set-up and compilation included): training stops at the
  next step boundary with a checkpoint of that step. A checkpoint that cannot be written ends the run
  with a UserError (one line).
  """
  # validate_config checks every field once the workdir is locked; this one first, as orbax would
  # delete every checkpoint of the workdir at 0.
  check_int("training.max_to_keep", config.training.max_to_keep)
  try:
    with _StopSignal() as stop, workdir_lock(workdir, "train"):
      return _train(config, workdir, devices, print_fn, stop)
  except CheckpointError as e:
    raise UserError(str(e)) from None


def _train(config, workdir, devices, print_fn, stop):
  exp = Experiment(config, devices)
  check_training_batch(config, exp.dataset)
  t = config.training
  is_main = jax.process_index() == 0
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t.max_to_keep)
  state = exp.init_state()
  try:
    restored = checkpointer.restore_latest(state, check=checks_config(config, workdir))
  except BaseException:
    checkpointer.close(quiet=True)
    raise
  if restored is not None:
    state = restored
    print_fn(f"resumed from {workdir}/checkpoints at step {int(state.step)}")
  if is_main:
    _write_config(config, workdir)
  start = int(state.step)
  if start >= t.n_iters:
    print_fn(f"nothing to do: checkpoint step {start} >= training.n_iters={t.n_iters}")
    checkpointer.close()
    return state

  train_step = make_train_step(exp)
  loader = datasets.BatchLoader(
    exp.dataset.train,
    t.batch_size,
    config.seed,
    start,
    t.n_jitted_steps,
    sharding=NamedSharding(exp.mesh, P(None, "data")),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    labels=exp.dataset.train_labels if exp.num_classes else None,
  )
  logger = MetricsLogger(workdir, t.n_iters, start, enabled=is_main, print_fn=print_fn)
  print_fn(
    f"training {config.model.name} ({models.utils.param_count(state.params):,} parameters) on "
    f"{config.data.dataset} with {exp.mesh.size} device(s), steps {start} -> {t.n_iters}"
  )
  try:
    state = _loop(exp, state, start, train_step, loader, logger, checkpointer, workdir, print_fn, stop)
  except BaseException:
    checkpointer.close(quiet=True)  # the error on its way out is the one to report
    raise
  finally:
    loader.close()
    logger.close()
  checkpointer.close()  # the last save is on disk, or its failure is reported
  return state


def max_steps_in_flight(mesh):
  """How many dispatched train steps may run ahead of the host; when that many are pending, the loop
  waits for the older half of them at once.

  Twenty on one device or on accelerators, waited for ten at a time: the device never waits for the host,
  the host never queues without bound, and it wakes once every ten steps. Waking once per step (two in
  flight, waiting for one) cost the host thread a few percent of a digits step on a 2-core CPU machine
  (bench/overhead.py splits the CPU time by thread).
  One on XLA:CPU with several devices: there each device's share of a step runs on one shared thread
  pool, and an all-reduce holds a thread per device until every device has arrived; with several steps
  in flight the pool can fill with participants of different steps, none of which can complete (seen
  with 4 virtual devices on 2 cores: "Termination timeout for all reduce" after 40 s, then an abort).
  """
  return 1 if mesh.devices.flat[0].platform == "cpu" and mesh.size > 1 else 20


def _loop(exp, state, start, train_step, loader, logger, checkpointer, workdir, print_fn, stop):
  config, t = exp.config, exp.config.training
  saved = config_dict(config)
  window = []
  step = start
  pending, in_flight = collections.deque(), max_steps_in_flight(exp.mesh)
  while step < t.n_iters:
    state, step_losses = train_step(state, next(loader))
    step += t.n_jitted_steps
    window.append(step_losses)
    pending.append(step_losses)
    if len(pending) >= in_flight:
      # Each step consumes the state of the one before: once the newest of the older half is done, all of it is.
      older = [pending.popleft() for _ in range(max(in_flight // 2, 1))]
      jax.block_until_ready(older[-1])
    if step % t.log_freq == 0 or step == t.n_iters:
      _check_finite(state, checkpointer, workdir)
      logger.log(step, {"loss": float(jnp.mean(jnp.concatenate(window)))})
      window = []
    if step % t.snapshot_freq == 0 or step == t.n_iters:
      _check_finite(state, checkpointer, workdir)
      checkpointer.save(step, state, saved)
      if exp.is_classifier:  # nothing to sample: how well it tells the classes apart under noise
        accuracy = classifier_accuracy(exp, state.ema_params)
        if jax.process_index() == 0:
          print_fn(f"step {step}: held-out accuracy " + ", ".join(f"{k[9:]} {v:.3f}" for k, v in accuracy.items()))
      elif t.snapshot_sampling:
        write_samples(exp, state.ema_params, step, os.path.join(workdir, "samples"), logger)
    if stop.should_stop(step, t.n_jitted_steps) and step < t.n_iters:
      _check_finite(state, checkpointer, workdir)
      checkpointer.save(step, state, saved)
      checkpointer.wait()
      print_fn(
        f"received {stop.received} at step {step}: checkpoint saved in {workdir}/checkpoints; "
        "run the same command again to resume"
      )
      return state
  return state
