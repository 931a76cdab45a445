"""`--mode=import`: a checkpoint of score_sde (Song et al. 2021; yang-song/score_sde) as an ordinary
checkpoint here, for sampling, evaluation and resumed training.

score_sde's `run_lib.train` saves its `State` (`models/utils.py`) with
`flax.training.checkpoints.save_checkpoint`: a file `checkpoint_<n>` holding the Flax msgpack of

  step         the training step
  optimizer    flax.optim's Adam: `target`, the parameters, and `state` = {`step`, `param_states`}, where
               `param_states` has the parameters' tree with `{grad_ema, grad_sq_ema}` (Adam's first and
               second moments) in place of each parameter
  params_ema   the EMA of the parameters: what score_sde samples and evaluates with
  lr, ema_rate, rng, model_state (empty for NCSN++, DDPM++ and DDPM)

The parameters, their EMA and the moments are mapped onto this project's tree (models/score_sde_params.py),
the moments into optax's Adam state with its step count, so that fine-tuning resumes where score_sde
stopped. The checkpoint's config says how the network is conditioned: `model.conditioning='score_sde'`, and
`model.input_transform='2x-1'` for uncentred data, as score_sde's networks compute `2x - 1` themselves.
"""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scorejax import models
from scorejax.checkpointing import Checkpointer, CheckpointError, first_line, step_dirs
from scorejax.models import score_sde_params
from scorejax.run.errors import UserError
from scorejax.run.experiment import INIT, seed_key
from scorejax.run.optim import TrainState, build_optimizer
from scorejax.run.saved_config import config_dict
from scorejax.run.validate import validate_config
from scorejax.run.workdir import workdir_lock

STATE_FIELDS = ("step", "optimizer", "lr", "model_state", "ema_rate", "params_ema", "rng")  # score_sde's State
MOMENTS = {"grad_ema": "mu", "grad_sq_ema": "nu"}  # flax.optim.Adam's names -> optax.scale_by_adam's
NETWORKS = ("ncsnpp", "ddpm")


def score_sde_conventions(config):
  """`config` with the inputs that score_sde's networks were trained on: its labels, and `2x - 1` inside the
  network where the data is not centred (score_sde's NCSN++ and DDPM: `if not config.data.centered`)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model.conditioning = "score_sde"
    config.model.input_transform = "none" if config.data.centered else "2x-1"
  return config


def read_checkpoint(path):
  """The state dict of a score_sde checkpoint file; UserError in one line if it is missing or is not one."""
  if os.path.isdir(path):
    found = sorted(n for n in os.listdir(path) if n.startswith("checkpoint_"))
    hint = f" (it holds {', '.join(found)})" if found else ""
    raise UserError(f"--config.import_from={path} is a directory{hint}; name one checkpoint_<n> file")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise UserError(f"cannot read --config.import_from={path}: {e.strerror or e}") from None
  try:
    state = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack's and flax's own errors: truncated, corrupt, or another format
    raise UserError(f"{path} is not a score_sde checkpoint (a Flax msgpack file): {first_line(e, 120)}") from None
  if not isinstance(state, dict) or "params_ema" not in state or "step" not in state:
    raise UserError(f"{path} is not a score_sde checkpoint: it lacks score_sde's State fields step and params_ema")
  unknown = sorted(set(state) - set(STATE_FIELDS))
  if unknown:
    raise UserError(f"{path} is not a score_sde checkpoint: unknown fields {', '.join(map(str, unknown))}")
  if state.get("model_state"):
    raise UserError(f"{path} holds a model_state ({', '.join(state['model_state'])}); NCSN++ and DDPM have none")
  return state


def _step(value, what):
  step = np.asarray(value)
  if step.shape != () or not np.issubdtype(step.dtype, np.integer) or step < 0 or step >= 2**31:
    raise ValueError(f"its {what} is not a non-negative int32 step: {value!r}")
  return int(step)


def _split_moments(param_states):
  """Adam's `{path: {grad_ema, grad_sq_ema}}` as two trees `{grad_ema: tree, grad_sq_ema: tree}`."""
  trees, odd = {name: {} for name in MOMENTS}, []
  for path, leaf in score_sde_params.flatten(param_states).items():
    if path[-1] in MOMENTS:
      trees[path[-1]][path[:-1]] = leaf
    else:
      odd.append("/".join(path))
  if odd:
    raise ValueError(f"its optimizer.state.param_states are not Adam's (grad_ema, grad_sq_ema): {', '.join(odd[:5])}")
  return {name: score_sde_params.unflatten(leaves) for name, leaves in trees.items()}


def convert(state, model, shape, optimizer, rng):
  """`(TrainState, moments)`: score_sde's state dict as this project's training state for `model` on
  examples of `shape`, and whether it carried Adam's moments. Raises ValueError in one line when a
  leaf is unknown, missing or mis-shaped."""
  like = models.utils.param_shapes(model, shape)
  rename, extra = score_sde_params.leaf_map(model, shape)
  identity = {
    name: score_sde_params.identity_attention(like[name], jax.random.fold_in(rng, i)) for i, name in enumerate(extra)
  }

  def zeros(name, like_module):
    return jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, np.float32), like_module)

  def as_ours(tree, what, fill):
    return score_sde_params.map_tree(tree, like, rename, extra, fill, what)

  step = _step(state["step"], "step")
  ema = as_ours(state["params_ema"], "EMA parameters (params_ema)", lambda name, _: identity[name])
  adam = state.get("optimizer") or {}
  if adam.get("target") is not None:
    params = as_ours(adam["target"], "parameters (optimizer.target)", lambda name, _: identity[name])
  else:  # an inference-only file: the EMA stands in for the parameters
    params = jax.tree_util.tree_map(np.copy, ema)
  opt_state = optimizer.init(params)
  adam_state = adam.get("state") or {}
  moments = bool(adam_state.get("param_states"))
  if moments:
    trees = _split_moments(adam_state["param_states"])
    ours = {MOMENTS[name]: as_ours(tree, f"Adam moments ({name})", zeros) for name, tree in trees.items()}
    # optax counts Adam's steps and the warm-up schedule's alike: both continue from score_sde's count.
    count = jnp.asarray(_step(adam_state.get("step", step), "optimizer.state.step"), jnp.int32)
    opt_state = optax.tree_utils.tree_set(opt_state, **ours, count=count)
  train_state = TrainState(
    step=jnp.asarray(step, jnp.int32),
    params=params,
    ema_params=ema,
    opt_state=opt_state,
    nan_step=jnp.full((), -1, jnp.int32),
  )
  return jax.tree_util.tree_map(jnp.asarray, train_state), moments


def _refuse_existing(workdir):
  steps = step_dirs(os.path.join(workdir, "checkpoints"))
  if steps:
    newest = max(steps)
    raise UserError(
      f"--workdir={workdir} already holds checkpoint step {newest} ({steps[newest]}); it is not overwritten: "
      "import into an empty --workdir"
    )


def import_checkpoint(config, workdir, devices=None, print_fn=print):
  """`--mode=import`: the score_sde checkpoint `config.import_from` as checkpoint `<its step>` in
  `workdir/checkpoints`, with the config of `config` and score_sde's conventions. Everything is read and
  checked before anything is written: a missing, corrupt or truncated file, one of another network, or a
  workdir that already holds a checkpoint is a UserError in one line, and nothing is written."""
  path = config.import_from
  if not path:
    raise UserError("--mode=import needs --config.import_from=PATH, a score_sde checkpoint file (checkpoint_<n>)")
  _refuse_existing(workdir)
  if config.model.name not in NETWORKS:
    raise UserError(
      f"score_sde checkpoints import into model.name {' or '.join(NETWORKS)}, not {config.model.name!r}; "
      "choose the variant of the checkpoint, e.g. --config=configs/cifar.py:vp_ddpmpp_deep"
    )
  devices = list(jax.devices() if devices is None else devices)
  config = score_sde_conventions(config)
  parts = validate_config(config, len(devices))
  shape, model = parts.shape, parts.model
  state = read_checkpoint(path)
  try:
    train_state, moments = convert(state, model, shape, build_optimizer(config), seed_key(config, INIT))
  except ValueError as e:
    raise UserError(f"{path} does not fit model.name={config.model.name!r} with this config: {e}") from None
  train_state = jax.device_put(train_state, NamedSharding(Mesh(np.array(devices), ("data",)), P()))
  step = int(train_state.step)
  try:
    with workdir_lock(workdir, "import"):
      _refuse_existing(workdir)  # a run may have written one since the first look
      checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.training.max_to_keep)
      try:
        checkpointer.save(step, train_state, config_dict(config))
      except BaseException:
        checkpointer.close(quiet=True)  # the error on its way out is the one to report
        raise
      checkpointer.close()  # the save is on disk, or its failure is reported
  except CheckpointError as e:
    raise UserError(str(e)) from None
  m = config.model
  count = models.utils.param_count(train_state.params)
  optimizer = "with Adam's moments" if moments else "without Adam's moments (fine-tuning starts Adam afresh)"
  print_fn(
    f"imported {path} ({m.name}, {count:,} parameters, step {step}, {optimizer}) as checkpoint step {step} in "
    f"{workdir}/checkpoints, with model.conditioning={m.conditioning!r} and model.input_transform="
    f"{m.input_transform!r}"
  )
  ema_rate = state.get("ema_rate")
  if ema_rate is not None and not np.isclose(float(np.asarray(ema_rate)), m.ema_rate):
    rate = float(np.asarray(ema_rate))
    print_fn(f"note: score_sde's EMA rate was {rate:g}; fine-tuning uses model.ema_rate={m.ema_rate:g}")
  print_fn(f"sample from it with: python main.py --mode=sample --workdir={workdir}")
  return train_state
