"""Training, sampling and evaluation runs. The only module that knows every part.

Everything random derives from `config.seed` and the training step, and the batch of a step is a
pure function of the two (datasets/loader.py), so a run resumed from a checkpoint is bit-identical
to one that never stopped.
"""
import dataclasses
import json
import os
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import datasets
import losses
import metrics
import models
import plotting
import samplers
import sde_lib
from samplers import likelihood
from checkpointing import Checkpointer
from logging_utils import MetricsLogger

# Tags folded into the seed key so that each use of randomness has its own stream.
_INIT, _TRAIN, _SAMPLE, _EVAL = 0, 1, 2, 3


class UserError(Exception):
  """A problem with the user's input: reported as one line, without a traceback."""


class TrainingDiverged(UserError):
  pass


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  ema_params: Any
  opt_state: Any
  nan_step: jnp.ndarray  # first step whose loss was NaN/inf, -1 while none


# ----------------------------------------------------------------------------- set-up

def _seed_key(config, tag):
  return jax.random.fold_in(jax.random.key(config.seed), tag)


def _as_user_error(lookup, *args):
  """Registry look-ups raise ValueError naming the valid choices; for the user that is a UserError."""
  try:
    return lookup(*args)
  except ValueError as e:
    raise UserError(str(e)) from None


def data_shape(config):
  """The shape of one example: `(image_size, image_size, num_channels)` where the config names
  those (score_sde's image configs), otherwise `data.shape`."""
  data = config.data
  if "image_size" in data:
    return (data.image_size, data.image_size, data.num_channels)
  return tuple(data.shape)


def load_dataset(config):
  data = config.data
  options = {k: data[k] for k in ("num_train", "num_test", "root", "verify_checksum") if k in data}
  expected = data_shape(config)
  ds = _as_user_error(lambda: datasets.get_dataset(data.dataset, shape=expected, **options))
  if tuple(ds.shape) != expected:
    fields = "data.image_size and data.num_channels" if "image_size" in data else "data.shape"
    raise UserError(f"data.dataset={data.dataset!r} has examples of shape {tuple(ds.shape)}, but the config "
                    f"says {expected}; set {fields} to match")
  return ds


VECTOR_MODELS = ("mlp",)  # networks for data of shape (dim,); every other one takes (H, W, C) images
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _hashable(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


def build_model(config, data_shape):
  """The network `model.name` with every `config.model` field that the network declares (score_sde's
  names: `nf`, `ch_mult`, `attn_resolutions`, ...), computing in `training.dtype`."""
  m = config.model
  cls = _as_user_error(models.get_model_class, m.name)
  is_image = len(data_shape) == 3
  if m.name in VECTOR_MODELS and is_image:
    raise UserError(f"model.name={m.name!r} needs vector data of shape (dim,), got {tuple(data_shape)}; "
                    f"choose an image model: {', '.join(n for n in models.model_names() if n not in VECTOR_MODELS)}")
  if m.name not in VECTOR_MODELS and not is_image:
    raise UserError(f"model.name={m.name!r} needs images of shape (H, W, C), got {tuple(data_shape)}; "
                    f"use model.name={VECTOR_MODELS[0]!r} for vector data")
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  kwargs = {k: _hashable(m[k]) for k in fields if k in m}
  if "dtype" in fields:
    kwargs["dtype"] = DTYPES[config.training.dtype]
  if is_image and "ch_mult" in kwargs:
    factor = 2 ** (len(kwargs["ch_mult"]) - 1)
    if data_shape[0] % factor or data_shape[1] % factor:
      raise UserError(f"image size {tuple(data_shape[:2])} is not divisible by 2**(len(model.ch_mult)-1)={factor}")
  return cls(**kwargs)


def build_optimizer(config):
  """Adam with linear warm-up to `optim.lr` over `optim.warmup` steps and global-norm clipping."""
  o = config.optim
  if o.optimizer.lower() != "adam":
    raise UserError(f"unknown optim.optimizer {o.optimizer!r}; valid choices: Adam")
  warmup = max(int(o.warmup), 1)
  schedule = lambda step: o.lr * jnp.minimum((step + 1) / warmup, 1.0)
  # The clip stays in the chain when off (an infinite norm) so that the optimizer state has the same
  # structure whatever `optim.grad_clip` is, and a run can resume with a different value.
  clip = optax.clip_by_global_norm(o.grad_clip if o.grad_clip > 0 else float("inf"))
  return optax.chain(clip, optax.adam(schedule, b1=o.beta1, eps=o.eps))


def validate_config(config, num_devices):
  t, m, s = config.training, config.model, config.sampling
  positive = {"training.batch_size": t.batch_size, "training.n_iters": t.n_iters,
              "training.log_freq": t.log_freq, "training.snapshot_freq": t.snapshot_freq,
              "training.n_jitted_steps": t.n_jitted_steps, "model.num_scales": m.num_scales,
              "model.nf": m.nf, "sampling.n_steps_each": s.n_steps_each,
              "sampling.num_samples": s.num_samples, "sampling.batch_size": s.batch_size}
  for name, value in positive.items():
    if not isinstance(value, int) or value <= 0:
      raise UserError(f"{name} must be a positive integer, got {value!r}")
  if t.batch_size % num_devices:  # global devices: every process's included
    raise UserError(f"training.batch_size={t.batch_size} is not divisible by the number of devices "
                    f"({num_devices}); choose a multiple of {num_devices}")
  for name in ("n_iters", "log_freq", "snapshot_freq"):
    if t[name] % t.n_jitted_steps:
      raise UserError(f"training.{name}={t[name]} is not a multiple of training.n_jitted_steps={t.n_jitted_steps}")
  _as_user_error(sde_lib.get_sde, config)  # checks training.sde
  if t.sde == "vesde" and not 0 < m.sigma_min < m.sigma_max:
    raise UserError(f"need 0 < model.sigma_min < model.sigma_max, got {m.sigma_min} and {m.sigma_max}")
  if t.sde != "vesde" and not 0 < m.beta_min < m.beta_max:
    raise UserError(f"need 0 < model.beta_min < model.beta_max, got {m.beta_min} and {m.beta_max}")
  if t.dtype not in DTYPES:
    raise UserError(f"unknown training.dtype {t.dtype!r}; valid choices: {', '.join(DTYPES)}")
  if not 0 <= m.ema_rate < 1:
    raise UserError(f"model.ema_rate must lie in [0, 1), got {m.ema_rate}")
  _as_user_error(models.get_score_fn, None, None, None, m.prediction)  # checks the name only
  _as_user_error(samplers.get_sampling_fn, sde_lib.get_sde(config), s)  # the name and its SDE
  if s.step_lr <= 0 or config.optim.lr <= 0:
    raise UserError("sampling.step_lr and optim.lr must be positive")


class Experiment:
  """The parts of a run that every mode shares: data, model, mesh, score function, sampler."""

  def __init__(self, config, devices=None):
    self.config = config
    devices = list(jax.devices() if devices is None else devices)
    validate_config(config, len(devices))
    self.mesh = Mesh(np.array(devices), ("data",))
    self.replicated = NamedSharding(self.mesh, P())
    self.dataset = load_dataset(config)
    self.model = build_model(config, self.dataset.shape)
    self.sde = sde_lib.get_sde(config)
    t = config.training
    self.loss_fn = _as_user_error(losses.get_sde_loss_fn, self.sde, t.continuous, t.reduce_mean,
                                  t.likelihood_weighting)
    self.sampling_fn = _as_user_error(samplers.get_sampling_fn, self.sde, config.sampling)
    self.optimizer = build_optimizer(config)
    # `num` fixes the sample shape; replicated samples can be read on every host, not only their shard.
    self.sample = jax.jit(self._sample, static_argnums=2, out_shardings=self.replicated)

  def preprocess(self, batch, rng):
    """A stored training batch to model inputs (scaling, centering, flip, dequantization), on device."""
    d = self.config.data
    return datasets.preprocess_batch(batch, rng, self.dataset.max_value, d.centered,
                                     d.get("random_flip", False), d.get("uniform_dequantization", False))

  def model_space(self, x):
    """Stored examples as model inputs, without augmentation (for evaluation and plots)."""
    return self.dataset.model_space(x, self.config.data.centered)

  def score_fn(self, params, train=False, rng=None):
    """`score_fn(x, t)` of the network with `params` (dropout on with `train`, drawn from `rng`)."""
    m = self.config.model
    return models.get_score_fn(self.model, params, self.sde, prediction=m.prediction,
                               scale_by_sigma=m.scale_by_sigma, train=train, rng=rng)

  def init_state(self):
    params = models.init_params(self.model, _seed_key(self.config, _INIT), self.dataset.shape)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       ema_params=jax.tree_util.tree_map(jnp.copy, params),
                       opt_state=self.optimizer.init(params), nan_step=jnp.full((), -1, jnp.int32))
    return jax.device_put(state, self.replicated)

  def _sample(self, params, rng, num):
    """Draw `num` samples with `sampling.method` from `x_init ~ p_T` (the SDE's prior): one program.
    Returns the samples and the number of score evaluations per sample."""
    x_init = self.sde.prior_sample(jax.random.fold_in(rng, 0), (num,) + self.dataset.shape)
    if num % self.mesh.size == 0:
      x_init = jax.lax.with_sharding_constraint(x_init, NamedSharding(self.mesh, P("data")))
    return self.sampling_fn(self.score_fn(params), x_init, jax.random.fold_in(rng, 1))

  def generate(self, params, step, num=None, progress=None):
    """`sampling.num_samples` samples (in chunks of `sampling.batch_size`) with the key of `step`.
    `progress(done, total, nfe, seconds)` is called after each chunk."""
    s = self.config.sampling
    num = s.num_samples if num is None else num
    rng = jax.random.fold_in(_seed_key(self.config, _SAMPLE), step)
    chunks, t0 = [], time.perf_counter()
    for i, lo in enumerate(range(0, num, s.batch_size)):
      x, nfe = self.sample(params, jax.random.fold_in(rng, i), min(s.batch_size, num - lo))
      chunks.append(np.asarray(x))
      if progress is not None:
        progress(lo + len(x), num, float(np.mean(nfe)), time.perf_counter() - t0)
    return np.concatenate(chunks)


def info(config, workdir=None, devices=None, print_fn=print):
  """`--mode=info`: the network, its parameter count and the method, without data or compilation
  (the parameters' shapes come from `jax.eval_shape`). Returns the parameter count."""
  del workdir
  validate_config(config, len(jax.devices() if devices is None else devices))
  shape = data_shape(config)
  model = build_model(config, shape)
  count = models.utils.param_count(models.utils.param_shapes(model, shape))
  t, m, s = config.training, config.model, config.sampling
  sde = sde_lib.get_sde(config)
  loss = ("continuous DSM" + (", likelihood weighting" if t.likelihood_weighting else "")) if t.continuous \
      else ("SMLD (discrete)" if t.sde == "vesde" else "DDPM (discrete)")
  print_fn(f"model       {m.name}: {count:,} parameters ({count / 1e6:.1f}M), "
           f"{4 * count / 2**20:.0f} MiB in float32, compute in {t.dtype}")
  print_fn(f"data        {config.data.dataset}, examples of shape {shape}")
  print_fn(f"sde         {type(sde).__name__}, N={sde.N}; loss: {loss}, prediction={m.prediction}")
  print_fn(f"sampling    method={s.method}; training: batch {t.batch_size}, {t.n_iters:,} steps")
  return count


# ----------------------------------------------------------------------------- training

def make_train_step(exp):
  """One dispatch = `training.n_jitted_steps` optimizer steps over stacked batches `(k, batch, ...)`.

  The loss of step `k` uses the key `fold_in(fold_in(seed, TRAIN), k)`, so results do not depend
  on how steps are grouped into dispatches or how the batch is split over devices.
  """
  config = exp.config
  rate = config.model.ema_rate
  train_key = _seed_key(config, _TRAIN)

  def loss_fn(params, batch, rng):
    x = exp.preprocess(batch, jax.random.fold_in(rng, 2))
    score_fn = exp.score_fn(params, train=True, rng=jax.random.fold_in(rng, 1))  # dropout
    return exp.loss_fn(score_fn, x, jax.random.fold_in(rng, 0))

  def one_step(state, batch):
    rng = jax.random.fold_in(train_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, rng)
    updates, opt_state = exp.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree_util.tree_map(lambda e, p: rate * e + (1.0 - rate) * p, state.ema_params, params)
    first_bad = (state.nan_step < 0) & ~jnp.isfinite(loss)
    nan_step = jnp.where(first_bad, state.step, state.nan_step)
    return TrainState(state.step + 1, params, ema, opt_state, nan_step), loss

  def train_step(state, batches):
    # Unrolled at trace time rather than a lax.scan: XLA:CPU (jax 0.10) runs the weight-gradient
    # convolution 25-40x slower inside a loop body, even a fully unrolled scan. The program grows
    # with n_jitted_steps, which stays small.
    step_losses = []
    for i in range(batches.shape[0]):
      state, loss = one_step(state, batches[i])
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
    kept = f"the last good checkpoint (step {last}) is kept in {workdir}/checkpoints" if last is not None \
        else "no checkpoint had been saved yet"
    raise TrainingDiverged(f"training stopped: the loss became NaN/inf at step {nan_step}; {kept}; "
                           "lower optim.lr or set optim.grad_clip")


def train(config, workdir, devices=None, print_fn=print):
  """Train (or resume) in `workdir`; returns the final `TrainState`.

  SIGTERM/SIGINT are caught from the start (set-up and compilation included): training stops at
  the next step boundary with a checkpoint of that step.
  """
  with _StopSignal() as stop:
    return _train(config, workdir, devices, print_fn, stop)


def _train(config, workdir, devices, print_fn, stop):
  exp = Experiment(config, devices)
  t = config.training
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=t.max_to_keep)
  state = exp.init_state()
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    print_fn(f"resumed from {workdir}/checkpoints at step {int(state.step)}")
  start = int(state.step)
  if start >= t.n_iters:
    print_fn(f"nothing to do: checkpoint step {start} >= training.n_iters={t.n_iters}")
    checkpointer.close()
    return state

  train_step = make_train_step(exp)
  loader = datasets.BatchLoader(exp.dataset.train, t.batch_size, config.seed, start, t.n_jitted_steps,
                                sharding=NamedSharding(exp.mesh, P(None, "data")),
                                process_index=jax.process_index(), process_count=jax.process_count())
  logger = MetricsLogger(workdir, t.n_iters, start, enabled=is_main, print_fn=print_fn)
  print_fn(f"training {config.model.name} ({models.utils.param_count(state.params):,} parameters) on "
           f"{config.data.dataset} with {exp.mesh.size} device(s), steps {start} -> {t.n_iters}")
  window = []
  step = start
  try:
    while step < t.n_iters:
      state, step_losses = train_step(state, next(loader))
      step += t.n_jitted_steps
      window.append(step_losses)
      if step % t.log_freq == 0 or step == t.n_iters:
        _check_finite(state, checkpointer, workdir)
        logger.log(step, {"loss": float(jnp.mean(jnp.concatenate(window)))})
        window = []
      if step % t.snapshot_freq == 0 or step == t.n_iters:
        _check_finite(state, checkpointer, workdir)
        checkpointer.save(step, state)
        if t.snapshot_sampling:
          write_samples(exp, state.ema_params, step, os.path.join(workdir, "samples"), logger)
      if stop.should_stop(step, t.n_jitted_steps) and step < t.n_iters:
        _check_finite(state, checkpointer, workdir)
        checkpointer.save(step, state)
        checkpointer.wait()
        print_fn(f"received {stop.received} at step {step}: checkpoint saved in {workdir}/checkpoints; "
                 "run the same command again to resume")
        return state
  finally:
    loader.close()
    logger.close()
    checkpointer.close()
  return state


# ----------------------------------------------------------------------------- sampling and evaluation

def write_samples(exp, params, step, out_dir, logger=None, progress=None):
  """Samples to `out_dir/samples_<step>.npz` (key `samples`) and a picture next to it."""
  if jax.process_index() != 0:
    exp.generate(params, step)  # every process takes part in the computation
    return None
  os.makedirs(out_dir, exist_ok=True)
  samples = exp.generate(params, step, progress=progress)
  np.savez(os.path.join(out_dir, f"samples_{step}.npz"), samples=samples)
  png = os.path.join(out_dir, f"samples_{step}.png")
  if exp.dataset.is_image:
    lo = -1.0 if exp.config.data.centered else 0.0
    grid = plotting.save_image_grid((samples - lo) / (1.0 - lo), png)
    if logger is not None:
      logger.image("samples", step, grid)
  else:
    t = 0.5 * exp.sde.T  # a middle time: the field is smooth and visible
    params = jax.tree_util.tree_map(np.asarray, params)  # a host copy: only this process plots
    learned = jax.jit(lambda x: exp.score_fn(params)(x, jnp.full((x.shape[0],), t)))
    scale, std = (float(v) for v in exp.sde.marginal_coefficients(jnp.asarray(t)))
    true = exp.dataset.score
    label = "true score"
    if true is None:  # the exact score of the noisy empirical distribution of 5,000 training points
      true, label = empirical_score(exp.dataset.train[:5000]), "score of noisy training data"
    plotting.plot_2d(png, samples, scale * exp.dataset.train[:5000], learned,
                     jax.jit(lambda x: true(x, jnp.full((x.shape[0],), std), scale=scale)), std, label)
  return samples


def empirical_score(points):
  """Score of `(1/n) sum_j N(x; scale x_j, sigma^2 I)`, the scaled training data convolved with the noise."""
  points = jnp.asarray(points)

  def score(x, sigma, scale=1.0):
    sigma = jnp.reshape(sigma, (-1, 1))
    diff = scale * points[None] - x[:, None, :]
    w = jax.nn.softmax(-0.5 * jnp.sum(jnp.square(diff), -1) / jnp.square(sigma), axis=-1)
    return jnp.sum(w[..., None] * diff, axis=1) / jnp.square(sigma)
  return score


def _restore_for_inference(exp, workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  checkpointer = Checkpointer(ckpt_dir)
  if checkpointer.latest_step() is None:
    checkpointer.close()
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  state = checkpointer.restore(exp.init_state())
  checkpointer.close()
  return state


def sample(config, workdir, devices=None, print_fn=print):
  """`--mode=sample`: samples from the EMA parameters of the latest checkpoint into `workdir/samples`."""
  exp = Experiment(config, devices)
  state = _restore_for_inference(exp, workdir)
  step = int(state.step)
  s = config.sampling

  def progress(done, total, nfe, seconds):
    print_fn(f"sampling ({s.method}): {done}/{total} samples, {nfe:g} score evaluations each, {seconds:.1f}s")

  samples = write_samples(exp, state.ema_params, step, os.path.join(workdir, "samples"), progress=progress)
  print_fn(f"wrote {s.num_samples} samples of checkpoint step {step} to {workdir}/samples")
  return samples


def evaluate(config, workdir, devices=None, print_fn=print):
  """`--mode=eval`: JSON in `workdir/eval/` with, per noise level, the weighted DSM loss on the test
  split and (where the data's score is known) the score error; and the sliced Wasserstein distance
  between samples and fresh data."""
  exp = Experiment(config, devices)
  state = _restore_for_inference(exp, workdir)
  step = int(state.step)
  rng = jax.random.fold_in(_seed_key(config, _EVAL), step)
  test = jnp.asarray(exp.model_space(exp.dataset.test[:config.eval.batch_size]))

  @jax.jit
  def at_time(params, t, key):
    score_fn = exp.score_fn(params)
    out = {"dsm_loss": losses.denoising_loss_at_time(score_fn, test, key, exp.sde, t)}
    if exp.dataset.score is not None:
      ts = jnp.full((test.shape[0],), t)
      mean, std = exp.sde.marginal_prob(test, ts)
      x_t = mean + sde_lib.per_example(std, test) * jax.random.normal(key, test.shape)
      scale, std = exp.sde.marginal_coefficients(ts)
      truth = exp.dataset.score(x_t, std, scale=scale)
      out["score_mse"], out["score_relative_mse"] = metrics.score_error(score_fn(x_t, ts), truth)
    return out

  # Up to `eval.num_levels` times, keyed by their noise level sigma(t) = std / m: evenly spaced in
  # [1e-3, T], or for discrete training a subset of the trained levels t_i = i / (N - 1).
  num, N = min(exp.sde.N, config.eval.num_levels), exp.sde.N
  if config.training.continuous or N == 1:
    times = np.linspace(exp.sde.T, 1e-3, num)
  else:
    times = np.round(np.linspace(N - 1, 0, num)) / (N - 1) * exp.sde.T
  per_sigma = {f"{float(exp.sde.noise_level(jnp.asarray(t))):.6g}":
               {k: float(v) for k, v in at_time(state.ema_params, t, jax.random.fold_in(rng, i)).items()}
               for i, t in enumerate(times)}
  samples = exp.generate(state.ema_params, step)
  if exp.dataset.sample is not None:
    reference = exp.dataset.sample(np.random.default_rng([config.seed, step]), len(samples))
  else:
    reference = exp.model_space(exp.dataset.test)
  n = min(len(samples), len(reference))
  result = {"step": step, "dataset": config.data.dataset, "per_sigma": per_sigma,
            "sliced_wasserstein": metrics.sliced_wasserstein(samples[:n], reference[:n]),
            "sliced_wasserstein_data_to_data": metrics.sliced_wasserstein(exp.model_space(exp.dataset.train[:n]),
                                                                          reference[:n]),
            "num_samples": n}
  if config.eval.enable_bpd:
    result.update(evaluate_likelihood(exp, state.ema_params, jax.random.fold_in(rng, 1 << 20)))
  if jax.process_index() == 0:
    out = os.path.join(workdir, "eval")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"eval_{step}.json"), "w") as f:
      json.dump(result, f, indent=2)
    print_fn(f"wrote {out}/eval_{step}.json: sliced Wasserstein {result['sliced_wasserstein']:.4f} "
             f"(training data vs the same reference: {result['sliced_wasserstein_data_to_data']:.4f})"
             + (f", bits/dim {result['bpd']:.4f}" if "bpd" in result else "")
             + (f", NLL {result['nll_nats_per_dim']:.4f} nats/dim" if "nll_nats_per_dim" in result else ""))
  return result


def evaluate_likelihood(exp, params, rng):
  """`eval.enable_bpd`: the probability-flow ODE likelihood of the test split (Song et al. 2021,
  App. D.2). Images: bits/dim of the integer pixels with uniform dequantization (samplers/likelihood.py
  states the offset). Vector data: the negative log-likelihood in nats/dim, and the true one where the
  data's density is known."""
  e = exp.config.eval
  options = _as_user_error(likelihood.likelihood_options, e)
  test = exp.dataset.test[:e.get("bpd_num_examples", len(exp.dataset.test))]
  if exp.dataset.max_value is not None:
    res = likelihood.evaluate_bpd(exp.score_fn, exp.sde, test, rng, params=params, batch_size=e.batch_size,
                                  num_repeats=e.bpd_num_repeats, centered=exp.config.data.centered,
                                  max_value=exp.dataset.max_value, **options)
    return {"bpd": float(res.mean), "bpd_nfe": float(np.mean(res.nfe)), "bpd_num_examples": len(test)}
  x = jnp.asarray(exp.model_space(test))
  logp, nfe = jax.jit(lambda p, x, r: likelihood.log_likelihood(exp.score_fn(p), exp.sde, x, r, **options))(
      params, x, rng)
  dim = int(np.prod(x.shape[1:]))
  out = {"nll_nats_per_dim": float(-jnp.mean(logp) / dim), "nll_nfe": float(np.mean(nfe)),
         "nll_num_examples": len(test)}
  if exp.dataset.log_prob is not None:
    out["true_nll_nats_per_dim"] = float(-jnp.mean(exp.dataset.log_prob(x)) / dim)
  return out
