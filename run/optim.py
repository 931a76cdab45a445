"""The optimizer, its learning-rate schedule, the EMA of the weights, and the training state they update."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from scorejax.run.errors import UserError, check_int, check_real


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  ema_params: Any
  opt_state: Any
  nan_step: jnp.ndarray  # first step whose loss was NaN/inf, -1 while none


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


OPTIMIZERS = ("Adam", "AdamW")


def decays(params):
  """AdamW's mask: every parameter but the biases decays (google-research/vdm's `decay_mask_fn` for its networks)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) != "bias", params)


def build_optimizer(config):
  """Adam (`optim.optimizer='Adam'`, Kingma & Ba 2015) or AdamW (Loshchilov & Hutter 2019: the decoupled weight
  decay `-lr wd theta` added to Adam's step for every parameter but the biases, `decays`) at
  `learning_rate_schedule(config)` (the warm-up in steps, EDM's ramp-up in images), after global-norm clipping;
  the `config.optim` fields checked."""
  o = config.optim
  names = {n.lower(): n for n in OPTIMIZERS}
  if not isinstance(o.optimizer, str) or o.optimizer.lower() not in names:
    raise UserError(f"unknown optim.optimizer {o.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
  check_real("optim.lr", o.lr, "> 0")
  check_real("optim.beta1", o.beta1, "in [0, 1)")
  check_real("optim.beta2", o.beta2, "in [0, 1)")
  check_real("optim.eps", o.eps, "> 0")
  check_real("optim.weight_decay", o.weight_decay, ">= 0")
  check_int("optim.warmup", o.warmup, 0)
  check_real("optim.lr_rampup_kimg", o.lr_rampup_kimg, ">= 0")
  adamw = names[o.optimizer.lower()] == "AdamW"
  if o.weight_decay and not adamw:
    raise UserError(f"optim.weight_decay={o.weight_decay!r} needs optim.optimizer='AdamW' (Adam has no weight decay)")
  schedule = learning_rate_schedule(config)
  # The clip stays in the chain when off (an infinite norm) so that the optimizer state has the same
  # structure whatever `optim.grad_clip` is, and a run can resume with a different value.
  clip = optax.clip_by_global_norm(o.grad_clip if o.grad_clip > 0 else float("inf"))
  if adamw:
    step = optax.adamw(schedule, b1=o.beta1, b2=o.beta2, eps=o.eps, weight_decay=o.weight_decay, mask=decays)
  else:
    step = optax.adam(schedule, b1=o.beta1, b2=o.beta2, eps=o.eps)
  return optax.chain(clip, step)


def ema_decay(step, batch_size, halflife_kimg, rampup_ratio):
  """EDM's EMA decay of the step `step` (Karras et al. 2022, App. F, Table 7; NVlabs/edm `training_loop.py`):

      beta = 0.5 ** (B / max(h, 1e-8)),  h = min(1000 halflife_kimg, rampup_ratio * n),

  `B = batch_size` the global batch and `n = step * B` the images seen before the step, so that the weight of
  the old average halves every `h` images; the cap (none where `rampup_ratio` is 0 or None) keeps it from
  remembering the random initialisation early on: `beta = 0` at step 0, `0.5 ** (1 / (rampup_ratio * step))` while
  the cap holds. The average is then `ema <- beta ema + (1 - beta) params`, `params` after the step."""
  halflife = halflife_kimg * 1000.0
  if rampup_ratio:
    images_seen = jnp.asarray(step, jnp.float32) * batch_size  # float: the count outgrows int32 in long runs
    halflife = jnp.minimum(halflife, rampup_ratio * images_seen)
  return 0.5 ** (batch_size / jnp.maximum(halflife, 1e-8))


def ema_schedule(config):
  """`decay(step)`: the EMA's decay at a step, `model.ema_rate`, or with `model.ema_halflife_kimg > 0` EDM's
  half-life in images (`ema_decay`); the `config.model` EMA fields checked."""
  m = config.model
  check_real("model.ema_rate", m.ema_rate, "in [0, 1)")
  check_real("model.ema_halflife_kimg", m.ema_halflife_kimg, ">= 0")
  if m.get("ema_rampup_ratio") is not None:  # None: no ramp-up, as EDM's `ema_rampup_ratio=None`
    check_real("model.ema_rampup_ratio", m.ema_rampup_ratio, ">= 0")
  if m.ema_halflife_kimg > 0:
    batch_size, halflife, rampup = config.training.batch_size, m.ema_halflife_kimg, m.ema_rampup_ratio
    return lambda step: ema_decay(step, batch_size, halflife, rampup)
  return lambda step: m.ema_rate
