"""Config sections to objects: the network, the SDE, the score function, the loss and the sampler (the
optimizer and the EMA: run/optim.py).

Each builder reads the fields of its part once and passes them as plain arguments to the library, whose
functions check their own ranges and raise `ValueError` naming the field; `as_user_error` (run/errors.py)
turns that into the one-line error. `build_parts` builds every part of a config once, without data and
without compiling: it is both what a mode runs with and the check of the config."""

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp

from scorejax import datasets, losses, models, samplers, sde_lib
from scorejax.models.vdm import LearnedSchedule, WithSchedule, schedule_fn
from scorejax.run.errors import UserError, as_user_error, check_int, check_ints, check_real
from scorejax.run.optim import build_optimizer, ema_schedule
from scorejax.samplers import likelihood
from scorejax.samplers.integrators import ODE_SOLVERS
from scorejax.schedules import GammaSDE, linear_gamma

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_extensions(config):
  """Import the modules of `config.extensions` (comma-separated `.py` files, or names of importable modules),
  whose decorators (`register_sde`, `register_sampler`, `register_loss`, `register_model`) add their entries to
  the registries: how a fork extends the project without editing it. A file is imported once per process
  (under a name made from its absolute path), so a run's saved config re-imports it when it resumes."""
  for item in (s.strip() for s in config.get("extensions", "").split(",")):
    if not item:
      continue
    if not item.endswith(".py"):
      try:
        importlib.import_module(item)
      except ModuleNotFoundError as e:
        if e.name != item.split(".")[0] and e.name != item:
          raise  # a module that `item` itself imports is missing: its traceback says where
        raise UserError(f"extensions: no module named {item!r}; name a .py file or an installed module") from None
      continue
    path = os.path.abspath(os.path.expanduser(item))
    if not os.path.isfile(path):
      raise UserError(f"extensions: {item!r} is not a file; name a .py file (absolute, or relative to {os.getcwd()})")
    name = (
      f"scorejax_extension_{os.path.splitext(os.path.basename(path))[0]}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    )
    if name in sys.modules:
      continue
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[name]
      raise


def data_shape(config):
  """The shape of one example: `(image_size, image_size, num_channels)` where the config names
  those (score_sde's image configs), otherwise `data.shape`."""
  data = config.data
  if "image_size" in data:
    return (data.image_size, data.image_size, data.num_channels)
  return tuple(data.shape)


def data_levels(config):
  """The number of levels of the data as stored (`datasets.dataset_levels`: 17 for the digits, 256 for 8-bit
  images, 0 for continuous vectors), from the dataset's registration without loading it, for the discrete decoder
  of VDM's bound. Uniformly dequantized images are continuous data, whose bound is not a code length for the
  images: refused."""
  d = config.data
  levels = as_user_error(datasets.dataset_levels, d.dataset)
  if levels is None:
    raise UserError(
      f"data.dataset={d.dataset!r} does not declare the number of levels of its values, which the discrete decoder "
      f"of training.loss={config.training.loss!r} needs: register it with register_dataset(name, levels=...)"
    )
  if levels and d.get("uniform_dequantization", False):
    raise UserError(
      f"training.loss={config.training.loss!r} bounds the likelihood of the {levels} levels of data.dataset="
      f"{d.dataset!r} with its discrete decoder, but data.uniform_dequantization=True makes the data continuous: "
      "set data.uniform_dequantization=False"
    )
  return levels


def takes_vectors(name):
  """Whether the network `name` takes vectors `(dim,)` (its class says `takes_vectors = True`), not images."""
  return getattr(models.get_model_class(name), "takes_vectors", False)


# The network fields that several networks share, and their domains (the networks declare them as dataclass
# fields; `build_model` checks those a network takes before building it).
NETWORK_INTS = {"nf": 1, "num_res_blocks": 1, "num_layers": 1, "augment_dim": 0}


def check_network_fields(kwargs):
  """The shared network fields of `kwargs` (a network's arguments) in their domains: a `UserError` naming the
  `model.` field otherwise."""
  for name, low in NETWORK_INTS.items():
    if name in kwargs:
      check_int(f"model.{name}", kwargs[name], low)
  if "ch_mult" in kwargs:
    check_ints("model.ch_mult", kwargs["ch_mult"])
  if "attn_resolutions" in kwargs:
    check_ints("model.attn_resolutions", kwargs["attn_resolutions"], empty=True)
  if "input_fourier" in kwargs:
    check_ints("model.input_fourier", kwargs["input_fourier"], empty=True)
  if "dropout" in kwargs:
    check_real("model.dropout", kwargs["dropout"], "in [0, 1)")


# model.schedule: the SDE's own fixed schedule, or VDM's learned log-SNR (nonlinear, or linear with learned ends).
SCHEDULES = ("fixed", "learned", "learned_linear")


def learned_schedule(config):
  """Whether `model.schedule` is a learned one, checked: it is trained by VDM's bound (`training.loss='vdm'`) and
  feeds a noise prediction network its log-SNR (`noise_fn`, models/vdm.py), from finite `gamma_min < gamma_max`."""
  m = config.model
  schedule = m.get("schedule", "fixed")
  if schedule not in SCHEDULES:
    raise UserError(f"unknown model.schedule {schedule!r}; valid choices: {', '.join(SCHEDULES)}")
  if schedule == "fixed":
    return False
  check_real("model.gamma_min", m.gamma_min, "(any sign)")
  check_real("model.gamma_max", m.gamma_max, "(any sign)")
  if not m.gamma_min < m.gamma_max:
    raise UserError(f"need model.gamma_min < model.gamma_max, got {m.gamma_min!r} and {m.gamma_max!r}")
  if config.training.loss != "vdm":
    raise UserError(
      f"model.schedule={schedule!r} is trained by VDM's bound: set training.loss='vdm' (got {config.training.loss!r})"
    )
  if m.prediction != "noise" or m.conditioning != "log_sigma":
    raise UserError(
      f"model.schedule={schedule!r} conditions a noise prediction network on the schedule's log-SNR: set "
      f"model.prediction='noise' and model.conditioning='log_sigma' (got {m.prediction!r}, {m.conditioning!r})"
    )
  if models.classifier.is_classifier(as_user_error(models.get_model_class, m.name)):
    raise UserError(f"model.schedule={schedule!r} is a score model's: model.name={m.name!r} is a classifier")
  return True


def _hashable(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


def build_model(config, shape):
  """The network `model.name` with every `config.model` field that the network declares (score_sde's
  names: `nf`, `ch_mult`, `attn_resolutions`, ...), computing in `training.dtype`, checked to build for
  examples of `shape` by an abstract trace of its initialisation (`jax.eval_shape`, no compilation). With a
  learned `model.schedule`, the network and its `LearnedSchedule` as one module (`WithSchedule`)."""
  m = config.model
  cls = as_user_error(models.get_model_class, m.name)
  is_image = len(shape) == 3
  vector_models = [n for n in models.model_names() if takes_vectors(n)]
  if takes_vectors(m.name) and is_image:
    raise UserError(
      f"model.name={m.name!r} needs vector data of shape (dim,), got {tuple(shape)}; "
      f"choose an image model: {', '.join(n for n in models.model_names() if n not in vector_models)}"
    )
  if not takes_vectors(m.name) and not is_image:
    raise UserError(
      f"model.name={m.name!r} needs images of shape (H, W, C), got {tuple(shape)}; "
      f"use a network for vector data: {', '.join(vector_models)}"
    )
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  kwargs = {k: _hashable(m[k]) for k in fields if k in m}
  check_network_fields(kwargs)
  if "dtype" in fields:
    if config.training.dtype not in DTYPES:
      raise UserError(f"unknown training.dtype {config.training.dtype!r}; valid choices: {', '.join(DTYPES)}")
    kwargs["dtype"] = DTYPES[config.training.dtype]
  if is_image and "ch_mult" in kwargs:
    factor = 2 ** (len(kwargs["ch_mult"]) - 1)
    if shape[0] % factor or shape[1] % factor:
      raise UserError(f"image size {tuple(shape[:2])} is not divisible by 2**(len(model.ch_mult)-1)={factor}")
  model = cls(**kwargs)
  if learned_schedule(config):  # one parameter tree {'network', 'schedule'}: trained, EMA'd, checkpointed as one
    schedule = LearnedSchedule(float(m.gamma_min), float(m.gamma_max), nonlinear=m.schedule == "learned")
    model = WithSchedule(model, schedule)
  as_user_error(models.utils.check_conditioning, model, m.conditioning, m.input_transform)
  try:
    models.utils.param_shapes(model, shape)
  except Exception as e:  # the network's own checks: shapes, group counts
    reason = " ".join(str(e).split()) or type(e).__name__
    raise UserError(
      f"model.name={m.name!r} cannot be built from the model fields (model.nf, model.ch_mult, ...) "
      f"for examples of shape {tuple(shape)}: {reason}"
    ) from None
  return model


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


def build_sde_of(config, model, sde):
  """`sde_of(params)`: the SDE that the model's score belongs to. `sde` (`training.sde`) for a fixed schedule; for a
  learned one, the variance-preserving SDE of its log-SNR bound to the parameters, `GammaSDE(schedule_fn(model,
  params))` (schedules.py; Kingma et al. 2021, Sec. 3), of `model.num_scales` steps for the samplers that ask."""
  if not learned_schedule(config):
    return lambda params: sde
  return lambda params: GammaSDE(schedule_fn(model, params), N=config.model.num_scales)


def build_score_fn(config, model, sde_of):
  """`score_fn_of(params, train=False, rng=None) -> score_fn(x, t)`: the network wrapped by the one score
  wrapper (models/utils.py `get_score_fn`) with the `config.model` fields that say what its output means, over
  the SDE `sde_of(params)`."""
  m = config.model
  score_fn_of = functools.partial(
    models.get_score_fn,
    model,
    prediction=m.prediction,
    scale_by_sigma=m.scale_by_sigma,
    conditioning=m.conditioning,
    input_transform=m.input_transform,
    continuous=config.training.continuous,
    sigma_data=m.sigma_data,
  )
  as_user_error(score_fn_of, None, sde=sde_of(None))  # the wrapper checks its fields before it needs parameters
  return lambda params, train=False, rng=None: score_fn_of(params, sde=sde_of(params), train=train, rng=rng)


def build_loss(config, sde, is_classifier=False):
  """`loss(score_fn, x, rng)` of `training.loss` (losses/registry.py) with the `config.training` fields its
  builder names, `model.sigma_data`, `data.centered` and, for a builder that names it, `data_levels`
  (`data_levels`); for a classifier of noisy inputs, `loss(logits_fn, x, labels, rng)`."""
  t = config.training
  if is_classifier:
    return functools.partial(losses.noisy_classifier_loss, sde=sde, eps=t.eps)
  options = {**t, "sigma_data": config.model.sigma_data, "centered": config.data.centered}
  if "data_levels" in as_user_error(losses.registry.option_names, t.loss):
    options["data_levels"] = data_levels(config)
  return as_user_error(losses.get_loss_fn, sde, t.loss, **options)


def sampling_options(config):
  """The `config.sampling` fields as the sampler's builder takes them, with `time_grid='auto'` resolved:
  a network trained on the levels of a discrete chain samples on them."""
  options = dict(config.sampling)
  if options.get("time_grid") == "auto":
    continuous = config.training.continuous or config.model.get("schedule", "fixed") != "fixed"
    options["time_grid"] = "uniform" if continuous else "discrete"
  return options


def build_sampler(config, sde):
  """`sample_fn(score_fn, x_init, rng) -> (x, nfe)` of `sampling.method` with its `config.sampling` fields."""
  return as_user_error(samplers.get_sampling_fn, sde, config.sampling.method, **sampling_options(config))


def build_sampler_of(config, model, sde, sde_of):
  """`(sampling_fn, sampling_fn_of)`: `sampling_fn_of(params)` is the sampler of the SDE `sde_of(params)`, and
  `sampling_fn` one sampler that checks the fields. One sampler of `sde` for a fixed schedule.
  For a learned one, built inside the sampling program from the parameters' SDE; checked here on VDM's linear
  schedule between `model.gamma_min` and `gamma_max`, and traced once over abstract parameters, which refuses a
  method that needs the schedule's values when it is built (a time grid of concrete numbers)."""
  if not learned_schedule(config):
    sampling_fn = build_sampler(config, sde)
    return sampling_fn, lambda params: sampling_fn
  m = config.model
  sampling_fn = build_sampler(config, GammaSDE(linear_gamma(m.gamma_min, m.gamma_max), N=m.num_scales))

  def built(params):
    build_sampler(config, sde_of(params))
    return jnp.zeros(())

  # Only the schedule's parameters are read to build a sampler: abstract ones of the schedule alone.
  schedule = jax.eval_shape(lambda key: model.schedule.init(key, jnp.zeros((1,)))["params"], jax.random.key(0))
  try:
    jax.eval_shape(built, {"schedule": schedule})
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    raise UserError(
      f"sampling.method={config.sampling.method!r} builds its steps from the numbers of a fixed schedule, which "
      f"model.schedule={m.schedule!r} learns: choose pc (time_grid='uniform'), ode, ddim or dpm_solver"
    ) from None
  return sampling_fn, lambda params: build_sampler(config, sde_of(params))


def likelihood_options(config):
  """`probability_flow_encode`'s options (samplers/likelihood.py) from the `config.eval` fields."""
  e = config.eval
  if e.ode_solver not in ODE_SOLVERS:
    raise UserError(f"unknown eval.ode_solver {e.ode_solver!r}; valid choices: {', '.join(ODE_SOLVERS)}")
  kind = e.hutchinson_type.lower()
  if kind not in likelihood.HUTCHINSON_TYPES:
    raise UserError(f"unknown eval.hutchinson_type {kind!r}; valid choices: {', '.join(likelihood.HUTCHINSON_TYPES)}")
  return dict(
    eps=float(e.eps),
    ode_solver=e.ode_solver,
    ode_steps=int(e.ode_steps),
    rtol=float(e.rtol),
    atol=float(e.atol),
    max_steps=int(e.ode_max_steps),
    hutchinson_type=kind,
    num_probes=int(e.num_probes),
    exact_trace=bool(e.exact_trace),
  )


# eval.bpd_methods: the likelihoods that `eval.enable_bpd` reports (run/evaluate.py), each under its own keys.
BPD_METHODS = ("bound", "ode")  # VDM's variational bound of the data as they are; the probability-flow ODE


def bpd_methods(config):
  """`eval.bpd_methods` (comma-separated, default both) as a tuple of `BPD_METHODS`: 'bound', VDM's variational
  bound (Kingma et al. 2021, Eq. 11-17: discrete decoder over the data's levels, no dequantization), and 'ode', the
  probability-flow ODE likelihood (Song et al. 2021, App. D.2: uniformly dequantized data)."""
  spec = config.eval.get("bpd_methods", ",".join(BPD_METHODS))
  names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else None
  if not names or any(n not in BPD_METHODS for n in names) or len(set(names)) != len(names):
    raise UserError(
      f"eval.bpd_methods={spec!r} is not a comma-separated list of distinct methods; valid choices: "
      f"{', '.join(BPD_METHODS)} (e.g. 'bound,ode')"
    )
  return tuple(n for n in BPD_METHODS if n in names)


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a config builds before it sees data: each part built once."""

  shape: tuple  # one example
  model: object  # the Flax module
  sde: sde_lib.SDE  # training.sde
  is_classifier: bool  # a classifier of noisy inputs (models/classifier.py), not a score model
  score_fn_of: object  # params -> score_fn (None for a classifier)
  loss_fn: object
  sampling_fn: object  # the sampler of `sde` (a learned schedule: of its linear schedule at initialisation)
  sampling_fn_of: object  # params -> sample_fn (the parameters' SDE's: a learned schedule's)
  optimizer: object  # optax's
  ema_decay: object  # step -> the EMA's decay
  sde_of: object  # params -> the SDE of the model's score: `sde`, or a learned schedule's `GammaSDE`
  learned_schedule: bool  # model.schedule is learned: the parameters hold the schedule


def build_parts(config):
  """The `Parts` of `config`, each builder checking its own fields."""
  shape = data_shape(config)
  model = build_model(config, shape)
  sde = build_sde(config)
  sde_of = build_sde_of(config, model, sde)
  is_classifier = models.classifier.is_classifier(model)
  score_fn_of = None if is_classifier else build_score_fn(config, model, sde_of)
  loss_fn = build_loss(config, sde, is_classifier)
  sampling_fn, sampling_fn_of = build_sampler_of(config, model, sde, sde_of)
  learned = learned_schedule(config)
  optimizer, ema_decay = build_optimizer(config), ema_schedule(config)
  return Parts(
    shape,
    model,
    sde,
    is_classifier,
    score_fn_of,
    loss_fn,
    sampling_fn,
    sampling_fn_of,
    optimizer,
    ema_decay,
    sde_of,
    learned,
  )
