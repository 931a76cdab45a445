"""Experiment set-up shared by every mode: config checks, data, network, SDE, loss, sampler, and the
training state that checkpoints hold.

Everything random derives from `config.seed` and the training step, and the batch of a step is a
pure function of the two (datasets/loader.py), so a run resumed from a checkpoint is bit-identical
to one that never stopped.
"""

import dataclasses
import functools
import inspect
import json
import os
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scorejax import control, datasets, losses, models, samplers, sde_lib
from scorejax.checkpointing import Checkpointer, CheckpointError, latest_record, step_dirs

# Tags folded into the seed key so that each use of randomness has its own stream.
INIT, TRAIN, SAMPLE, EVAL = 0, 1, 2, 3
CLASSIFIER_EPS = 1e-5  # the smallest time at which a classifier of noisy inputs is trained (as the continuous losses)


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


def seed_key(config, tag):
  return jax.random.fold_in(jax.random.key(config.seed), tag)


def as_user_error(lookup, *args, **kwargs):
  """Registry look-ups raise ValueError naming the valid choices; for the user that is a UserError."""
  try:
    return lookup(*args, **kwargs)
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
  """The dataset `data.dataset` with the config's options, checked against the config: its examples
  have the configured shape, and its splits are non-empty and hold at least one training batch.
  Every problem with the data (a missing or unreadable file, too few examples) is a `UserError`."""
  data = config.data
  options = {k: data[k] for k in ("num_train", "num_test", "root", "verify_checksum", "download") if k in data}
  expected = data_shape(config)
  ds = as_user_error(lambda: datasets.get_dataset(data.dataset, shape=expected, **options))
  if tuple(ds.shape) != expected:
    fields = "data.image_size and data.num_channels" if "image_size" in data else "data.shape"
    raise UserError(
      f"data.dataset={data.dataset!r} has examples of shape {tuple(ds.shape)}, but the config "
      f"says {expected}; set {fields} to match"
    )
  num_train, batch_size = len(ds.train), config.training.batch_size
  more = " or raise data.num_train" if "num_train" in data else ""
  if num_train == 0:
    raise UserError(f"the training split of data.dataset={data.dataset!r} is empty; lower data.num_test{more}")
  if len(ds.test) == 0:
    raise UserError(f"the test split of data.dataset={data.dataset!r} is empty; set data.num_test >= 1")
  if batch_size > num_train:
    raise UserError(
      f"training.batch_size={batch_size} is larger than the training set ({num_train} examples of "
      f"data.dataset={data.dataset!r}); choose training.batch_size <= {num_train}{more}"
    )
  return ds


VECTOR_MODELS = ("mlp", "classifier_mlp")  # networks for data of shape (dim,); every other one takes (H, W, C) images
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _hashable(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


def build_model(config, data_shape):
  """The network `model.name` with every `config.model` field that the network declares (score_sde's
  names: `nf`, `ch_mult`, `attn_resolutions`, ...), computing in `training.dtype`."""
  m = config.model
  cls = as_user_error(models.get_model_class, m.name)
  is_image = len(data_shape) == 3
  if m.name in VECTOR_MODELS and is_image:
    raise UserError(
      f"model.name={m.name!r} needs vector data of shape (dim,), got {tuple(data_shape)}; "
      f"choose an image model: {', '.join(n for n in models.model_names() if n not in VECTOR_MODELS)}"
    )
  if m.name not in VECTOR_MODELS and not is_image:
    raise UserError(
      f"model.name={m.name!r} needs images of shape (H, W, C), got {tuple(data_shape)}; "
      f"use model.name={VECTOR_MODELS[0]!r} for vector data"
    )
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  kwargs = {k: _hashable(m[k]) for k in fields if k in m}
  if "dtype" in fields:
    kwargs["dtype"] = DTYPES[config.training.dtype]
  if is_image and "ch_mult" in kwargs:
    factor = 2 ** (len(kwargs["ch_mult"]) - 1)
    if data_shape[0] % factor or data_shape[1] % factor:
      raise UserError(f"image size {tuple(data_shape[:2])} is not divisible by 2**(len(model.ch_mult)-1)={factor}")
  return cls(**kwargs)


def build_sde(config):
  """The SDE `training.sde` with the noise range of `config.model` (score_sde's fields: `sigma_min`,
  `sigma_max` for VE; `beta_min`, `beta_max` for VP and sub-VP; `num_scales` = N)."""
  m = config.model
  return as_user_error(
    sde_lib.get_sde,
    config.training.sde,
    sigma_min=m.sigma_min,
    sigma_max=m.sigma_max,
    beta_min=m.beta_min,
    beta_max=m.beta_max,
    N=m.num_scales,
  )


def sampling_options(config):
  """The `config.sampling` fields as the sampler's builder takes them, with `time_grid='auto'` resolved:
  a network trained on the levels of a discrete chain samples on them."""
  options = dict(config.sampling)
  if options.get("time_grid") == "auto":
    options["time_grid"] = "uniform" if config.training.continuous else "discrete"
  return options


def build_sampler(config, sde):
  """`sample_fn(score_fn, x_init, rng) -> (x, nfe)` of `sampling.method` with its `config.sampling` fields."""
  return as_user_error(samplers.get_sampling_fn, sde, config.sampling.method, **sampling_options(config))


def lr_rampup(step, batch_size, rampup_kimg):
  """EDM's learning-rate ramp-up (Karras et al. 2022, App. F, Table 7; NVlabs/edm `training_loop.py`): the factor
  `min(n / (1000 rampup_kimg), 1)` on the learning rate, `n = step * batch_size` the training images seen before
  the step (`batch_size` the global batch). So the first step, with no image seen, has learning rate 0, as EDM's."""
  images_seen = jnp.asarray(step, jnp.float32) * batch_size  # float: the count outgrows int32 in long runs
  return jnp.minimum(images_seen / max(rampup_kimg * 1000.0, 1e-8), 1.0)


def learning_rate_schedule(config):
  """`lr(step)` (`step` counts the updates before this one): `optim.lr` times the linear warm-up
  `min((step + 1) / optim.warmup, 1)` and, where `optim.lr_rampup_kimg > 0`, EDM's ramp-up in images
  `lr_rampup(step, training.batch_size, optim.lr_rampup_kimg)`."""
  o = config.optim
  warmup = max(int(o.warmup), 1)
  rampup_kimg, batch_size = o.lr_rampup_kimg, config.training.batch_size

  def schedule(step):
    lr = o.lr * jnp.minimum((step + 1) / warmup, 1.0)
    return lr * lr_rampup(step, batch_size, rampup_kimg) if rampup_kimg > 0 else lr

  return schedule


def build_optimizer(config):
  """Adam at `learning_rate_schedule(config)` (the warm-up in steps, EDM's ramp-up in images) after
  global-norm clipping."""
  o = config.optim
  if o.optimizer.lower() != "adam":
    raise UserError(f"unknown optim.optimizer {o.optimizer!r}; valid choices: Adam")
  schedule = learning_rate_schedule(config)
  # The clip stays in the chain when off (an infinite norm) so that the optimizer state has the same
  # structure whatever `optim.grad_clip` is, and a run can resume with a different value.
  clip = optax.clip_by_global_norm(o.grad_clip if o.grad_clip > 0 else float("inf"))
  return optax.chain(clip, optax.adam(schedule, b1=o.beta1, eps=o.eps))


def _is_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name, value, low=1, high=None):
  """`value` is an integer in `[low, high]`; else a `UserError` naming the field `name` and its range."""
  if _is_int(value) and value >= low and (high is None or value <= high):
    return
  if high is not None:
    domain = f"an integer in [{low}, {high}]"
  else:
    domain = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
  raise UserError(f"{name} must be {domain}, got {value!r}")


# Domains of real fields: the text of the range, and the test of a finite value.
REAL_DOMAINS = {
  "> 0": lambda v: v > 0,
  ">= 0": lambda v: v >= 0,
  "in (0, 1)": lambda v: 0 < v < 1,
  "in [0, 1)": lambda v: 0 <= v < 1,
  "in [0, 1]": lambda v: 0 <= v <= 1,
  "(any sign)": lambda v: True,
}


def check_real(name, value, domain):
  """`value` is a finite real number in `domain` (a key of `REAL_DOMAINS`); else a `UserError` naming the
  field `name` and its range."""
  if _is_real(value) and np.isfinite(value) and REAL_DOMAINS[domain](value):
    return
  raise UserError(f"{name} must be a finite number {domain}, got {value!r}")


def check_ints(name, value, empty=False):
  """`value` is a tuple (or list) of positive integers, non-empty unless `empty`."""
  if isinstance(value, (tuple, list)) and (empty or len(value)) and all(_is_int(v) and v >= 1 for v in value):
    return
  kind = "a tuple of positive integers" if empty else "a non-empty tuple of positive integers"
  raise UserError(f"{name} must be {kind}, got {value!r}")


# Integer fields and their least value; a config may lack some of them (data.num_train, data.image_size).
INT_FIELDS = {
  "training.batch_size": 1,
  "training.n_iters": 1,
  "training.log_freq": 1,
  "training.snapshot_freq": 1,
  "training.n_jitted_steps": 1,
  "training.max_to_keep": 1,
  "model.num_scales": 1,
  "model.nf": 1,
  "model.num_res_blocks": 1,
  "model.num_layers": 1,
  "sampling.n_steps_each": 1,
  "sampling.num_samples": 1,
  "sampling.batch_size": 1,
  "sampling.num_steps": 1,
  "sampling.ode_steps": 1,
  "sampling.ode_max_steps": 1,
  "eval.batch_size": 1,
  "eval.num_levels": 1,
  "eval.bpd_num_repeats": 1,
  "eval.bpd_num_examples": 0,
  "eval.ode_steps": 1,
  "eval.ode_max_steps": 1,
  "eval.num_probes": 1,
  "eval.num_samples": 1,
  "eval.begin_step": -1,
  "eval.end_step": -1,
  "eval.feature_batch_size": 1,
  "eval.pr_max": 4,
  "data.num_train": 1,
  "data.num_test": 1,
  "data.image_size": 1,
  "data.num_channels": 1,
  "model.augment_dim": 0,
  "optim.warmup": 0,
}
REAL_FIELDS = {
  "model.ema_rate": "in [0, 1)",
  "model.ema_halflife_kimg": ">= 0",
  "model.dropout": "in [0, 1)",
  "model.sigma_data": "> 0",
  "training.p_mean": "(any sign)",
  "training.p_std": "> 0",
  "data.augment_p": "in [0, 1]",
  "sampling.step_lr": "> 0",
  "sampling.eps": "in (0, 1)",
  "sampling.snr": ">= 0",
  "sampling.rho": "> 0",
  "sampling.s_churn": ">= 0",
  "sampling.s_min": ">= 0",
  "sampling.s_noise": ">= 0",
  "sampling.ddim_eta": "in [0, 1]",
  "sampling.rtol": "> 0",
  "sampling.atol": "> 0",
  "eval.eps": "in (0, 1)",
  "eval.rtol": "> 0",
  "eval.atol": "> 0",
  "optim.lr": "> 0",
  "optim.beta1": "in [0, 1)",
  "optim.eps": "> 0",
  "optim.lr_rampup_kimg": ">= 0",
}


def _present(config, names):
  """`(name, value)` for each dotted field of `names` that `config` holds."""
  for name in names:
    node = config
    try:
      for part in name.split("."):
        node = node[part]
    except KeyError:
      continue
    yield name, node


# sampling.class_label of a class-conditional model's samples over all its classes, each in turn: the balanced
# class distribution of CIFAR-10's training set, under which EDM's conditional FIDs are measured (its
# generate.py draws the classes uniformly).
ALL_CLASSES = -2
LOSSES = ("sde", "edm")  # training.loss: score_sde's losses (get_sde_loss_fn) or EDM's (get_edm_loss_fn)


def validate_config(config, num_devices):
  """Every field with a domain is checked here, before any data is read or anything compiled: counts,
  seeds, noise ranges, tolerances, shapes, the registry names (SDE, sampler, prediction, dtype) and
  the network the model fields build. A bad value is a `UserError` whose one line names the field and
  its valid range. What needs the data (the batch against the size of the training set) is checked
  by `load_dataset`."""
  t, m, s = config.training, config.model, config.sampling
  if not (_is_int(config.seed) and 0 <= config.seed < 2**63):
    raise UserError(f"seed must be a non-negative integer below 2**63, got {config.seed!r}")
  for name, value in _present(config, INT_FIELDS):
    if not (name == "data.num_test" and value is None):  # None: the dataset's own test split (folder: 1%)
      check_int(name, value, INT_FIELDS[name])
  for name, value in _present(config, REAL_FIELDS):
    check_real(name, value, REAL_FIELDS[name])
  if m.get("ema_rampup_ratio") is not None:  # None: no ramp-up, as EDM's `ema_rampup_ratio=None`
    check_real("model.ema_rampup_ratio", m.ema_rampup_ratio, ">= 0")
  if "s_max" in s and not (_is_real(s.s_max) and _is_real(s.s_min) and s.s_max >= s.s_min):
    raise UserError(f"sampling.s_max must be a number >= sampling.s_min={s.s_min!r} (inf allowed), got {s.s_max!r}")
  if "dpm_solver_order" in s:
    check_int("sampling.dpm_solver_order", s.dpm_solver_order, 1, 3)
  for name in ("sigma_min", "sigma_max", "beta_min", "beta_max"):
    check_real(f"model.{name}", m[name], "> 0")
  if not m.sigma_min < m.sigma_max:
    raise UserError(f"need 0 < model.sigma_min < model.sigma_max, got {m.sigma_min} and {m.sigma_max}")
  if not m.beta_min < m.beta_max:
    raise UserError(f"need 0 < model.beta_min < model.beta_max, got {m.beta_min} and {m.beta_max}")
  if "ch_mult" in m:
    check_ints("model.ch_mult", m.ch_mult)
  if "attn_resolutions" in m:
    check_ints("model.attn_resolutions", m.attn_resolutions, empty=True)
  if "image_size" not in config.data:
    check_ints("data.shape", config.data.shape)
  if t.batch_size % num_devices:  # global devices: every process's included
    raise UserError(
      f"training.batch_size={t.batch_size} is not divisible by the number of devices "
      f"({num_devices}); choose a multiple of {num_devices}"
    )
  for name in ("n_iters", "log_freq", "snapshot_freq"):
    if t[name] % t.n_jitted_steps:
      raise UserError(f"training.{name}={t[name]} is not a multiple of training.n_jitted_steps={t.n_jitted_steps}")
  sde = build_sde(config)  # checks training.sde
  if t.dtype not in DTYPES:
    raise UserError(f"unknown training.dtype {t.dtype!r}; valid choices: {', '.join(DTYPES)}")
  # The names, and what prediction='edm' needs (sigma_data, the log-sigma conditioning), without a network.
  edm_fields = dict(conditioning=m.conditioning, sigma_data=m.sigma_data)
  as_user_error(models.get_score_fn, None, None, None, m.prediction, **edm_fields)
  if t.loss not in LOSSES:
    raise UserError(f"unknown training.loss {t.loss!r}; valid choices: {', '.join(LOSSES)}")
  if t.loss == "edm" and not t.continuous:
    raise UserError("training.loss='edm' trains at continuous noise levels: set training.continuous=True")
  build_sampler(config, sde)  # the name, its options and its SDE
  check_conditioning(config)
  check_augment(config)
  check_network(config)


def check_augment(config):
  """EDM's augmentation (`data.augment_p`) of images, whose labels the network takes (`model.augment_dim`)."""
  p, dim, name = config.data.get("augment_p", 0.0), config.model.get("augment_dim", 0), config.model.name

  def takes_augment_labels(name):
    return "augment_dim" in {f.name for f in dataclasses.fields(as_user_error(models.get_model_class, name))}

  if dim and not takes_augment_labels(name):
    takers = ", ".join(n for n in models.model_names() if takes_augment_labels(n))
    raise UserError(
      f"model.name={name!r} takes no augmentation labels (model.augment_dim={dim}); networks that do: {takers}"
    )
  if p == 0:
    return
  shape = data_shape(config)
  if len(shape) != 3:
    raise UserError(f"data.augment_p={p} augments images, but the examples are vectors of shape {shape}; set it to 0")
  if dim != datasets.augment.LABEL_DIM:
    raise UserError(
      f"data.augment_p={p} feeds the network {datasets.augment.LABEL_DIM} augmentation labels: "
      f"set model.augment_dim={datasets.augment.LABEL_DIM} (got {dim})"
    )
  if config.data.get("random_flip"):
    raise UserError(
      f"data.augment_p={p} x-flips images and tells the network so; data.random_flip=True flips them unlabelled, "
      "which makes that label meaningless: set data.random_flip=False"
    )


def check_conditioning(config):
  """The class fields: `model.num_classes` (a network that takes labels), `training.label_dropout`,
  `sampling.class_label` (one of the model's classes, -1, or for a class-conditional model -2) and
  `sampling.guidance_scale`."""
  m, s = config.model, config.sampling
  num_classes = m.get("num_classes", 0)
  check_int("model.num_classes", num_classes, 0)
  if "label_dropout" in config.training:
    check_real("training.label_dropout", config.training.label_dropout, "in [0, 1)")
  if s.get("guidance_scale") is not None:
    check_real("sampling.guidance_scale", s.guidance_scale, ">= 0")
  label = s.get("class_label", -1)
  check_int("sampling.class_label", label, ALL_CLASSES if num_classes else -1, num_classes - 1 if num_classes else None)
  if models.classifier.is_classifier(as_user_error(models.get_model_class, m.name)):
    if not num_classes:
      raise UserError(f"model.name={m.name!r} is a classifier: set model.num_classes to the number of classes")
    return

  def takes_labels(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    return "num_classes" in fields and not models.classifier.is_classifier(cls)

  if num_classes and not takes_labels(models.get_model_class(m.name)):
    conditional = [n for n in models.model_names() if takes_labels(models.get_model_class(n))]
    raise UserError(
      f"model.name={m.name!r} takes no class labels (model.num_classes={num_classes}); "
      f"class-conditional networks: {', '.join(conditional)}"
    )
  if label >= 0 and not num_classes and not s.get("classifier_workdir"):
    raise UserError(
      f"sampling.class_label={label} needs a class-conditional model (train one with model.num_classes > 0) "
      "or a classifier of noisy inputs (sampling.classifier_workdir)"
    )
  check_constraint_fields(config)


# sampling.inpaint_mask: the region to fill, named (for images), random with a fraction (any data), or a PNG file
# (white: fill) resized to the images.
NAMED_MASKS = ("center", "left", "right", "top", "bottom")


def check_constraint_fields(config):
  """`sampling.inpaint_mask` (one of `NAMED_MASKS`, `random:<fraction>` or a PNG file) and `sampling.colorize`:
  not both, on data they fit, with a sampler that takes a constraint after each step."""
  s = config.sampling
  spec, colorize = s.get("inpaint_mask", ""), s.get("colorize", False)
  if not spec and not colorize:
    return
  shape = data_shape(config)
  if spec and colorize:
    raise UserError("sampling.inpaint_mask and sampling.colorize are two tasks: set one of them")
  if colorize and (len(shape) != 3 or shape[-1] != 3):
    raise UserError(f"sampling.colorize needs colour images (H, W, 3), got examples of shape {shape}")
  if spec:
    fraction = spec[len("random:") :] if spec.startswith("random:") else None
    if fraction is not None:
      try:
        fraction = float(fraction)
      except ValueError:
        fraction = None
      if fraction is None or not 0 < fraction <= 1:
        raise UserError(f"sampling.inpaint_mask={spec!r}: random:<fraction> needs a fraction in (0, 1]")
    elif len(shape) != 3:
      raise UserError(f"sampling.inpaint_mask={spec!r} names a region of an image; for vectors use random:<fraction>")
    elif spec not in NAMED_MASKS and not (spec.lower().endswith(".png") and os.path.isfile(spec)):
      raise UserError(
        f"sampling.inpaint_mask={spec!r} is none of {', '.join(NAMED_MASKS)}, random:<fraction> or an existing .png"
      )
  sample_fn = build_sampler(config, build_sde(config))
  if "constraint" not in inspect.signature(sample_fn).parameters:
    task = "sampling.colorize" if colorize else "sampling.inpaint_mask"
    raise UserError(f"{task} needs a sampler that takes a constraint after each step: sampling.method='pc'")


def check_dataset_classes(config, dataset):
  """A class-conditional model's `model.num_classes` is the number of classes of its data's labels."""
  num_classes = config.model.get("num_classes", 0)
  if num_classes and (dataset.train_labels is None or dataset.num_classes != num_classes):
    labelled = dataset.train_labels is not None
    has = f"{dataset.num_classes} classes" if labelled else "no class labels"
    fix = f"set model.num_classes={dataset.num_classes if labelled else 0}"
    raise UserError(f"model.num_classes={num_classes}, but data.dataset={config.data.dataset!r} has {has}; {fix}")


def check_network(config):
  """The network of `config.model` builds for the config's example shape (the divisibility of the
  image size, the channel counts that its normalisation layers need): an abstract trace of its
  initialisation (`jax.eval_shape`, no compilation). Any failure is a `UserError` in one line."""
  shape = data_shape(config)
  model = build_model(config, shape)
  m = config.model
  as_user_error(models.utils.check_conditioning, model, m.conditioning, m.input_transform)
  try:
    models.utils.param_shapes(model, shape)
  except Exception as e:  # the network's own checks: shapes, group counts
    reason = " ".join(str(e).split()) or type(e).__name__
    raise UserError(
      f"model.name={config.model.name!r} cannot be built from the model fields (model.nf, model.ch_mult, ...) "
      f"for examples of shape {shape}: {reason}"
    ) from None


class Experiment:
  """The parts of a run that every mode shares: data, model, mesh, score function, sampler."""

  def __init__(self, config, devices=None):
    self.config = config
    devices = list(jax.devices() if devices is None else devices)
    validate_config(config, len(devices))
    self.mesh = Mesh(np.array(devices), ("data",))
    self.replicated = NamedSharding(self.mesh, P())
    self.dataset = load_dataset(config)
    check_dataset_classes(config, self.dataset)
    self.num_classes = config.model.get("num_classes", 0)  # > 0: the network takes class labels
    self.model = build_model(config, self.dataset.shape)
    # A classifier of noisy inputs (models/classifier.py) learns p(y | x_t) for classifier guidance.
    self.is_classifier = models.classifier.is_classifier(self.model)
    self.sde = build_sde(config)
    t = config.training
    if self.is_classifier:
      self.loss_fn = functools.partial(losses.noisy_classifier_loss, sde=self.sde, eps=CLASSIFIER_EPS)
    elif t.loss == "edm":
      self.loss_fn = losses.get_edm_loss_fn(self.sde, t.p_mean, t.p_std, config.model.sigma_data, t.reduce_mean)
    else:
      self.loss_fn = as_user_error(
        losses.get_sde_loss_fn, self.sde, t.continuous, t.reduce_mean, t.likelihood_weighting
      )
    self.sampling_fn = build_sampler(config, self.sde)
    self.optimizer = build_optimizer(config)
    self.guiding_classifier, self.classifier_params = None, None  # set by `use_classifier`
    self.classifier_guidance_scale = None
    # `num` fixes the sample shape; replicated samples can be read on every host, not only their shard.
    self.sample = jax.jit(self._sample, static_argnums=2, out_shardings=self.replicated)

  def preprocess(self, batch, rng):
    """A stored training batch to model inputs (scaling, centering, flip, dequantization), on device."""
    d = self.config.data
    return datasets.preprocess_batch(
      batch, rng, self.dataset.max_value, d.centered, d.random_flip, d.uniform_dequantization
    )

  def model_space(self, x):
    """Stored examples as model inputs, without augmentation (for evaluation and plots)."""
    return self.dataset.model_space(x, self.config.data.centered)

  def score_fn(self, params, train=False, rng=None):
    """`score_fn(x, t)` of the network with `params` (dropout on with `train`, drawn from `rng`)."""
    m = self.config.model
    if self.is_classifier:
      raise UserError(
        f"model.name={m.name!r} is a classifier of noisy inputs, not a score model; it guides the samples of "
        "a score model: --mode=sample --workdir=<its run> --config.sampling.classifier_workdir=<this run>"
      )
    return models.get_score_fn(
      self.model,
      params,
      self.sde,
      prediction=m.prediction,
      scale_by_sigma=m.scale_by_sigma,
      train=train,
      rng=rng,
      conditioning=m.conditioning,
      input_transform=m.input_transform,
      continuous=self.config.training.continuous,
      sigma_data=m.sigma_data,
    )

  def init_state(self):
    params = models.init_params(self.model, seed_key(self.config, INIT), self.dataset.shape)
    state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree_util.tree_map(jnp.copy, params),
      opt_state=self.optimizer.init(params),
      nan_step=jnp.full((), -1, jnp.int32),
    )
    return jax.device_put(state, self.replicated)

  def logits_fn(self, params, train=False, rng=None):
    """`logits_fn(x, t) -> (batch, num_classes)` of a classifier of noisy inputs with `params`."""
    return models.classifier.get_logits_fn(self.model, params, self.sde, train=train, rng=rng)

  def batch_loss(self, params, batch, rng):
    """The training loss of one stored batch (with its labels, `(batch, labels)`, where the model has classes):
    the score matching loss, with label dropout for a class-conditional network and EDM's augmentation with
    `data.augment_p > 0`, or a classifier's cross-entropy over noisy inputs. `rng` draws the augmentation,
    dropout, label dropout and the loss's noise."""
    images, labels = batch if self.num_classes else (batch, None)
    x = self.preprocess(images, jax.random.fold_in(rng, 2))
    if self.is_classifier:
      return self.loss_fn(
        self.logits_fn(params, True, jax.random.fold_in(rng, 1)), x, labels, jax.random.fold_in(rng, 0)
      )
    score_fn = self.score_fn(params, train=True, rng=jax.random.fold_in(rng, 1))  # dropout
    if labels is not None:
      # Label dropout (Ho & Salimans 2022): one network learns s(x, t, y) and, on the null label, s(x, t).
      dropped = jax.random.uniform(jax.random.fold_in(rng, 3), labels.shape) < self.config.training.label_dropout
      score_fn = functools.partial(score_fn, labels=jnp.where(dropped, self.num_classes, labels).astype(jnp.int32))
    augment_p = self.config.data.get("augment_p", 0.0)
    if augment_p > 0:
      # EDM's non-leaking augmentation (Karras et al. 2022, App. F.2): the network learns s(x, t, a) for the
      # labels a of the augmentation drawn; sampling asks for a = 0, the data as it is.
      x, augment_labels = datasets.augment.augment(jax.random.fold_in(rng, 4), x, augment_p)
      score_fn = functools.partial(score_fn, augment_labels=augment_labels)
    return self.loss_fn(score_fn, x, jax.random.fold_in(rng, 0))

  def use_classifier(self, logits_fn_of, params, num_classes, guidance_scale=None):
    """Guide class-conditional sampling with a classifier of noisy inputs: `logits_fn_of(params)` its
    `logits_fn(x, t)` (run/classifier.py loads one from its run), with `guidance_scale` where
    `sampling.guidance_scale` is None: the scale that suits that classifier, saved with its run."""
    label = self.config.sampling.get("class_label", -1)
    check_int("sampling.class_label", label, ALL_CLASSES if self.num_classes else -1, num_classes - 1)
    self.guiding_classifier, self.classifier_params = logits_fn_of, jax.device_put(params, self.replicated)
    self.classifier_guidance_scale = guidance_scale

  @property
  def guidance_scale(self):
    """`w`: `sampling.guidance_scale`, or where it is None, the guiding classifier's own scale (classifier
    guidance) or 1 (classifier-free guidance; Ho & Salimans 2022 sample at w in [0.1, 4])."""
    scale = self.config.sampling.get("guidance_scale")
    if scale is None and self.guiding_classifier is not None:
      scale = self.classifier_guidance_scale
    return 1.0 if scale is None else float(scale)

  def sampling_score_fn(self, params, labels=None, classifier_params=None):
    """The score the sampler follows: the network's, or with class `labels` `(batch,)` a guided one,
    `w = sampling.guidance_scale` (control/guidance.py): with a classifier (`use_classifier`),
    `s(x, t) + w grad log p_phi(y | x, t)`; else the classifier-free `(1 + w) s(x, t, y) - w s(x, t, null)`."""
    score_fn = self.score_fn(params)
    if labels is None:
      return score_fn
    scale = self.guidance_scale
    if self.guiding_classifier is not None:
      log_prob_fn = control.class_log_prob(self.guiding_classifier(classifier_params))
      return control.classifier_guidance(score_fn, log_prob_fn, labels, scale)
    return control.classifier_free_guidance(score_fn, labels, scale, self.num_classes)

  def sample_labels(self, num):
    """The class label of each of `num` samples: `sampling.class_label`; with `ALL_CLASSES` every class of
    the model in turn, `0, 1, ..., num_classes - 1, 0, ...`; or None (-1): unconditional."""
    label = self.config.sampling.get("class_label", -1)
    if label == ALL_CLASSES:
      return (np.arange(num) % self.num_classes).astype(np.int32)
    return None if label < 0 else np.full((num,), label, np.int32)

  def _sample(self, params, rng, num, labels=None, classifier_params=None):
    """Draw `num` samples with `sampling.method` from `x_init ~ p_T` (the SDE's prior): one program.
    Returns the samples and the number of score evaluations per sample."""
    x_init = self.sde.prior_sample(jax.random.fold_in(rng, 0), (num,) + self.dataset.shape)
    if num % self.mesh.size == 0:
      x_init = jax.lax.with_sharding_constraint(x_init, NamedSharding(self.mesh, P("data")))
    score_fn = self.sampling_score_fn(params, labels, classifier_params)
    return self.sampling_fn(score_fn, x_init, jax.random.fold_in(rng, 1))

  def generate(self, params, step, num=None, progress=None, labels=None):
    """`sampling.num_samples` samples (in chunks of `sampling.batch_size`) with the key of `step`, of the
    classes `labels` (`(num,)`; by default `sample_labels`). `progress(done, total, nfe, seconds)` is called
    after each chunk."""
    s = self.config.sampling
    num = s.num_samples if num is None else num
    labels = self.sample_labels(num) if labels is None else np.asarray(labels, np.int32)
    rng = jax.random.fold_in(seed_key(self.config, SAMPLE), step)
    chunks, t0 = [], time.perf_counter()
    for i, lo in enumerate(range(0, num, s.batch_size)):
      size = min(s.batch_size, num - lo)
      chunk_labels = None if labels is None else labels[lo : lo + size]
      x, nfe = self.sample(params, jax.random.fold_in(rng, i), size, chunk_labels, self.classifier_params)
      chunks.append(np.asarray(x))
      if progress is not None:
        progress(lo + len(x), num, float(np.mean(nfe)), time.perf_counter() - t0)
    return np.concatenate(chunks)


# ----------------------------------------------------------------------------- the config of a checkpoint

# Fields that give a checkpoint its meaning: the network (its parameter tree and what its output means),
# the SDE and its noise levels, the loss's discretisation and the data. Resume, sample and eval refuse a
# config that changes one of them; every other field (sampler, evaluation, number of steps, batch size,
# learning rate, frequencies, seed, compute dtype) may change. An entry ending in "." covers a section.
CHECKPOINT_FIELDS = ("model.", "data.", "training.sde", "training.continuous")
FREE_FIELDS = (
  "model.ema_rate",
  "model.ema_halflife_kimg",
  "model.ema_rampup_ratio",
  "model.dropout",
  "data.root",
  "data.verify_checksum",
  "data.download",
  "data.num_test",
  "data.augment_p",  # how often to augment: the network's augmentation input is model.augment_dim
)


def config_dict(config):
  """The config as plain JSON data (tuples become lists), as it is saved with each checkpoint."""
  return json.loads(config.to_json_best_effort())


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _is_checkpoint_field(name):
  return name not in FREE_FIELDS and any(
    name == f or (f.endswith(".") and name.startswith(f)) for f in CHECKPOINT_FIELDS
  )


def config_conflicts(saved, given):
  """`field=<given> (checkpoint: <saved>)` for each checkpoint field that both configs (JSON data) have
  and that differs. A field only one of them has (added or removed by a later version) is no conflict."""
  s, g = _flatten(saved), _flatten(given)
  return [
    f"{k}={g[k]!r} (checkpoint: {s[k]!r})" for k in sorted(s) if k in g and _is_checkpoint_field(k) and s[k] != g[k]
  ]


def with_defaults(saved):
  """A saved config (JSON data) with the fields it lacks, added by a later version, at their defaults
  (configs/default.py): what a checkpoint written before a field existed was written with."""
  from scorejax.configs.default import get_default_config

  return _deep_update(config_dict(get_default_config()), saved)


def check_config_matches(saved, config, workdir, step):
  """Raise UserError naming every checkpoint field where `config` differs from `saved` (JSON data), a field
  that `saved` lacks counting as its default (`with_defaults`)."""
  conflicts = config_conflicts(with_defaults(saved), config_dict(config))
  if conflicts:
    raise UserError(
      f"the config conflicts with checkpoint step {step} in {workdir}: {', '.join(conflicts)}; the network, "
      "SDE and data must stay as trained: drop these overrides (without --config the saved config is used) or "
      "choose another --workdir"
    )


def checks_config(config, workdir):
  """`check(step, record)` for `Checkpointer.restore_latest`: the checkpoint's config must match."""

  def check(step, record):
    if record.get("config"):
      check_config_matches(record["config"], config, workdir, step)

  return check


def _overridden_fields(argv):
  """The fields that `--config.<field>=<value>` (or `--config.<field> <value>`) arguments set."""
  return [a[len("--config.") :].split("=")[0] for a in argv[1:] if a.startswith("--config.")]


def _deep_update(base, other):
  for key, value in other.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _deep_update(base[key], value)
    else:
      base[key] = value
  return base


def resolve_config(given, workdir, config_was_given, mode="train", argv=None, print_fn=print):
  """The config a mode runs with in `workdir`.

  With `--config` given (`config_was_given`), `given` itself, refused with one line (UserError) if a
  checkpoint field conflicts with the config saved with the newest checkpoint. Without it, and where
  `workdir` holds a saved config (the newest checkpoint's, or `config.json` of a run without records),
  that config: its fields missing from this version take their defaults (configs/default.py), and the
  fields named by `--config.<field>=` overrides in `argv` take their values from `given` (checked
  the same way). Otherwise `given`. `info` and `import` never look at the workdir.
  """
  if mode in ("info", "import") or workdir is None:  # import refuses a workdir with a checkpoint itself
    return given
  step, record = latest_record(os.path.join(workdir, "checkpoints"))
  saved = record.get("config") if record else None
  if config_was_given:
    if saved:
      check_config_matches(saved, given, workdir, step)
    return given
  where = f"checkpoint step {step}"
  if not saved and step_dirs(os.path.join(workdir, "checkpoints")):
    try:
      with open(os.path.join(workdir, "config.json")) as f:
        saved, where = json.load(f), "config.json"
    except (OSError, ValueError):
      saved = None
  if not isinstance(saved, dict) or not saved:
    return given
  merged = with_defaults(saved)
  given_fields = _flatten(config_dict(given))
  for field in _overridden_fields(sys.argv if argv is None else argv):
    if field in given_fields:
      node, (*parents, leaf) = merged, field.split(".")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = given_fields[field]
  config = ml_collections.ConfigDict(merged)
  if record:
    check_config_matches(saved, config, workdir, step)
  print_fn(f"using the config saved with {where} in {workdir} (no --config given)")
  return config


def checkpoint_steps(workdir):
  """The steps of the complete checkpoints in `workdir`, oldest first."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return sorted(step_dirs(ckpt_dir)) if os.path.isdir(ckpt_dir) else []


def restore_for_inference(exp, workdir, step=None):
  """The training state of the newest checkpoint in `workdir` that proves itself (sample and eval
  modes), or of checkpoint `step`; a corrupt newer one is reported and skipped, not moved: a training
  run may own the workdir (the training run moves it aside when it resumes). Raises UserError if there
  is none, none is usable, or the checkpoint's config conflicts with `exp.config`."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not step_dirs(ckpt_dir):
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  try:
    checkpointer = Checkpointer(ckpt_dir)
    try:
      state = checkpointer.restore_latest(
        exp.init_state(),
        check=checks_config(exp.config, workdir),
        move_aside=False,
        steps=None if step is None else [step],
      )
    finally:
      checkpointer.close(quiet=True)
  except CheckpointError as e:
    raise UserError(str(e)) from None
  if state is None:
    raise UserError(f"no checkpoint in {ckpt_dir}; train first with --mode=train --workdir={workdir}")
  return state
