"""The checks of a whole config before anything runs: the fields that the run layer itself reads (counts,
frequencies, evaluation settings), and the ones that tie parts together (classes, augmentation, constraints).
Each part's own fields are checked by its builder (run/builders.py) as it is built; `validate_config`
builds the parts once and returns them."""

import dataclasses
import inspect
import os

from scorejax import datasets, models
from scorejax.run.builders import bpd_methods, build_parts, data_shape, likelihood_options, load_extensions
from scorejax.run.errors import UserError, _is_int, as_user_error, check_int, check_ints, check_real

# Integer fields that the run layer reads, and their least value; a config may lack some of them
# (data.num_train, data.image_size).
INT_FIELDS = {
  "training.batch_size": 1,
  "training.n_iters": 1,
  "training.log_freq": 1,
  "training.snapshot_freq": 1,
  "training.n_jitted_steps": 1,
  "training.max_to_keep": 1,
  "sampling.num_samples": 1,
  "sampling.batch_size": 1,
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
  "eval.num_draws": 1,
  "data.num_train": 1,
  "data.num_test": 1,
  "data.image_size": 1,
  "data.num_channels": 1,
  "published_params": 0,
}
REFERENCES = ("held_out", "train")  # eval.reference: what sample quality is measured against (run/quality.py)
REAL_FIELDS = {
  "data.augment_p": "in [0, 1]",
  "eval.eps": "in (0, 1)",
  "eval.rtol": "> 0",
  "eval.atol": "> 0",
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


def validate_config(config, num_devices):
  """Check `config` before any data is read or anything compiled, and return its `Parts` (run/builders.py):
  the run layer's own fields here, each part's fields by its builder, then what ties the parts together. A
  bad value is a `UserError` whose one line names the field and its valid range. What needs the data (its
  shape and classes, the batch against the size of the training set) is checked by run/data.py."""
  load_extensions(config)  # before any name is looked up in a registry
  t = config.training
  if not (_is_int(config.seed) and 0 <= config.seed < 2**63):
    raise UserError(f"seed must be a non-negative integer below 2**63, got {config.seed!r}")
  for name, value in _present(config, INT_FIELDS):
    if not (name == "data.num_test" and value is None):  # None: the dataset's own test split (folder: 1%)
      check_int(name, value, INT_FIELDS[name])
  for name, value in _present(config, REAL_FIELDS):
    check_real(name, value, REAL_FIELDS[name])
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
  reference = config.eval.get("reference", "train")
  if reference not in REFERENCES:
    raise UserError(f"eval.reference={reference!r} is none of {', '.join(REFERENCES)}")
  bpd_methods(config)  # the evaluation's fields too: eval refuses them before it trains or loads anything
  likelihood_options(config)
  check_conditioning(config)
  check_augment(config)
  parts = build_parts(config)
  check_constraint_fields(config, parts.sampling_fn)
  return parts


# sampling.class_label of a class-conditional model's samples over all its classes, each in turn: the balanced
# class distribution of CIFAR-10's training set, under which EDM's conditional FIDs are measured (its
# generate.py draws the classes uniformly).
ALL_CLASSES = -2


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


# sampling.inpaint_mask: the region to fill, named (for images), random with a fraction (any data), or a PNG file
# (white: fill) resized to the images.
NAMED_MASKS = ("center", "left", "right", "top", "bottom")


def check_constraint_fields(config, sample_fn):
  """`sampling.inpaint_mask` (one of `NAMED_MASKS`, `random:<fraction>` or a PNG file) and `sampling.colorize`:
  not both, on data they fit, with a sampler (`sample_fn`) that takes a constraint after each step."""
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
  if "constraint" not in inspect.signature(sample_fn).parameters:
    task = "sampling.colorize" if colorize else "sampling.inpaint_mask"
    raise UserError(f"{task} needs a sampler that takes a constraint after each step: sampling.method='pc'")
