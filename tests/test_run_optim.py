"""EDM's training details (Karras et al. 2022, App. F, Table 7; NVlabs/edm `training/training_loop.py`): the EMA
by half-life in images with its ramp-up, and the learning-rate ramp-up in images, as pure functions and inside
the compiled train step."""

import jax
import numpy as np
import pytest

from scorejax.run.errors import UserError
from scorejax.run.experiment import TRAIN, Experiment, seed_key
from scorejax.run.optim import build_optimizer, ema_decay, learning_rate_schedule, lr_rampup
from scorejax.run.train import make_train_step
from scorejax.run.validate import validate_config

from helpers import override, tiny_toy


def test_the_old_average_halves_over_one_halflife_of_images():
  """At a constant half-life of `1000 H` images the old weight is `prod beta = 1/2` after `1000 H / B` steps."""
  for halflife_kimg, batch_size in [(0.5, 10), (500.0, 500), (2.0, 64)]:
    steps = halflife_kimg * 1000 / batch_size
    for rampup in (None, 0.0):
      beta = float(ema_decay(0, batch_size, halflife_kimg, rampup))
      # float32 beta: its rounding (6e-8 relative) compounds over `steps` factors.
      assert beta**steps == pytest.approx(0.5, rel=steps * 1.2e-7)
    # With the ramp-up, long after the cap (ratio * images seen) has passed the half-life: the same decay.
    late = int(10 * steps / 0.05)
    assert float(ema_decay(late, batch_size, halflife_kimg, 0.05)) == pytest.approx(beta, rel=1e-7)


def test_the_rampup_caps_the_halflife_at_a_fraction_of_the_images_seen():
  """`h = min(1000 H, r k B)` at step `k`: while the cap holds, `beta = 0.5 ** (B / (r k B)) = 0.5 ** (1 / (r k))`
  whatever the batch; the first step (no image seen) keeps nothing of the initialisation, `beta = 0`."""
  halflife_kimg, ratio = 500.0, 0.05
  for batch_size in (128, 512):
    assert float(ema_decay(0, batch_size, halflife_kimg, ratio)) == 0.0
    last_capped = int(halflife_kimg * 1000 / (ratio * batch_size))  # r k B <= 1000 H up to here
    for step in (1, 2, 10, 1000, last_capped):
      expected = 0.5 ** (1 / (ratio * step))
      assert float(ema_decay(step, batch_size, halflife_kimg, ratio)) == pytest.approx(expected, rel=1e-6)
    after = 0.5 ** (batch_size / (halflife_kimg * 1000))
    assert float(ema_decay(last_capped + 1, batch_size, halflife_kimg, ratio)) == pytest.approx(after, rel=1e-6)


def schedule_config(**fields):
  return override(tiny_toy(), **{"optim.lr": 1e-3, "training.batch_size": 64, **fields})


def test_the_learning_rate_ramps_up_linearly_in_images():
  """`lr min(k B / (1000 R), 1)` at step `k` (`k` updates before it), times the warm-up in steps where both are on;
  with `R = 0` the schedule is the warm-up alone."""
  lr, batch_size, rampup_kimg = 1e-3, 64, 0.64  # full rate after 640 images: step 10
  ramp_only = learning_rate_schedule(schedule_config(**{"optim.warmup": 0, "optim.lr_rampup_kimg": rampup_kimg}))
  both = learning_rate_schedule(schedule_config(**{"optim.warmup": 4, "optim.lr_rampup_kimg": rampup_kimg}))
  warmup_only = learning_rate_schedule(schedule_config(**{"optim.warmup": 4, "optim.lr_rampup_kimg": 0.0}))
  for step in (0, 1, 3, 5, 9, 10, 11, 1000):
    ramp = min(step * batch_size / (rampup_kimg * 1000), 1.0)
    warm = min((step + 1) / 4, 1.0)
    assert float(ramp_only(step)) == pytest.approx(lr * ramp, rel=1e-6, abs=0.0)
    assert float(both(step)) == pytest.approx(lr * ramp * warm, rel=1e-6, abs=0.0)
    assert float(warmup_only(step)) == pytest.approx(lr * warm, rel=1e-6)
  assert float(lr_rampup(0, batch_size, rampup_kimg)) == 0.0  # EDM's first step does not move the weights


# The compiled step on the toy MLP: batch 64, half-life 80 images with ramp-up 0.5 (cap 32 k images: 32, 64,
# then 80 from step 3), lr ramp-up over 256 images (k / 4 of the rate at step k), no warm-up, no clipping.
BATCH, HALFLIFE_KIMG, EMA_RAMPUP, LR, LR_RAMPUP_KIMG, STEPS = 64, 0.08, 0.5, 1e-2, 0.256, 4


def run_steps(config):
  """`STEPS` compiled train steps (one per dispatch) on the first batch of the training set: the state before
  each step and after the last (copied: the step donates its input), and the experiment."""
  exp = Experiment(config, devices=jax.devices()[:1])
  step_fn = make_train_step(exp)
  state = exp.init_state()
  batch = np.asarray(exp.dataset.train[:BATCH])[None]
  states = [jax.tree_util.tree_map(np.array, state)]
  for _ in range(STEPS):
    state, _ = step_fn(state, batch)
    states.append(jax.tree_util.tree_map(np.array, state))
  return exp, batch[0], states


def edm_config(**fields):
  return tiny_toy(
    **{
      "training.batch_size": BATCH,
      "model.ema_halflife_kimg": HALFLIFE_KIMG,
      "model.ema_rampup_ratio": EMA_RAMPUP,
      "optim.lr": LR,
      "optim.lr_rampup_kimg": LR_RAMPUP_KIMG,
      "optim.warmup": 0,
      "optim.grad_clip": -1.0,
      **fields,
    }
  )


@pytest.fixture(scope="module")
def edm_run():
  return run_steps(edm_config())


def leaves(tree):
  return jax.tree_util.tree_leaves(tree)


def test_the_train_step_averages_with_the_decay_of_the_images_seen(edm_run):
  _, _, states = edm_run
  for k in range(STEPS):
    halflife = min(HALFLIFE_KIMG * 1000, EMA_RAMPUP * k * BATCH)
    beta = 0.5 ** (BATCH / max(halflife, 1e-8))
    for ema, old, new in zip(
      leaves(states[k + 1].ema_params), leaves(states[k].ema_params), leaves(states[k + 1].params)
    ):
      np.testing.assert_allclose(ema, beta * old + (1 - beta) * new, rtol=1e-6, atol=1e-7)
  # Step 0 keeps nothing of the initialisation: the average starts at the first update's weights.
  for ema, params in zip(leaves(states[1].ema_params), leaves(states[1].params)):
    np.testing.assert_array_equal(ema, params)


def replay_adam(exp, batch, states, weight_decay=0.0):
  """Adam (Kingma & Ba 2015, Alg. 1) replayed by hand from the gradients of each step's loss (its key folded from
  the seed and the step), AdamW's decoupled decay (Loshchilov & Hutter 2019) added for every leaf but the biases:
  the update of step `k` is `-lr k B / (1000 R) (m_hat / (sqrt(v_hat) + eps) + wd theta)`; step 0 (no image seen)
  leaves the weights as they were."""
  o = exp.config.optim
  b1, b2, eps = o.beta1, o.beta2, o.eps
  grad_fn = jax.jit(jax.grad(exp.batch_loss))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(states[0].params)]
  decayed = [not p.endswith("['bias']") for p in paths]
  assert any(decayed) and not all(decayed), paths  # the toy MLP has kernels and biases
  m = v = None
  for k in range(STEPS):
    g = leaves(grad_fn(states[k].params, batch, jax.random.fold_in(seed_key(exp.config, TRAIN), k)))
    m = [(1 - b1) * gi + (b1 * mi if m else 0) for gi, mi in zip(g, m or g)]
    v = [(1 - b2) * gi**2 + (b2 * vi if v else 0) for gi, vi in zip(g, v or g)]
    lr = LR * min(k * BATCH / (LR_RAMPUP_KIMG * 1000), 1.0)
    for new, old, mi, vi, decays in zip(leaves(states[k + 1].params), leaves(states[k].params), m, v, decayed):
      direction = (mi / (1 - b1 ** (k + 1))) / (np.sqrt(vi / (1 - b2 ** (k + 1))) + eps)
      np.testing.assert_allclose(new - old, -lr * (direction + weight_decay * decays * old), rtol=0, atol=1e-4 * LR)
  for new, old in zip(leaves(states[1].params), leaves(states[0].params)):
    np.testing.assert_array_equal(new, old)


def test_the_train_step_moves_the_weights_at_the_ramped_learning_rate(edm_run):
  replay_adam(*edm_run)


def test_adamw_decays_every_weight_but_the_biases():
  """VDM's optimizer (google-research/vdm configs/cifar10.py: AdamW, beta2 0.99), its decay raised to show."""
  wd = 0.5
  exp, batch, states = run_steps(
    edm_config(**{"optim.optimizer": "AdamW", "optim.beta2": 0.99, "optim.weight_decay": wd})
  )
  replay_adam(exp, batch, states, weight_decay=wd)
  with pytest.raises(UserError, match=r"optim.weight_decay=0.5 needs optim.optimizer='AdamW'"):
    build_optimizer(edm_config(**{"optim.weight_decay": wd}))
  with pytest.raises(UserError, match=r"unknown optim.optimizer 'SGD'; valid choices: Adam, AdamW"):
    build_optimizer(edm_config(**{"optim.optimizer": "SGD"}))


def test_without_a_halflife_the_average_decays_by_the_fixed_rate():
  rate = 0.9
  _, _, states = run_steps(edm_config(**{"model.ema_halflife_kimg": 0.0, "model.ema_rate": rate}))
  for k in range(STEPS):
    for ema, old, new in zip(
      leaves(states[k + 1].ema_params), leaves(states[k].ema_params), leaves(states[k + 1].params)
    ):
      np.testing.assert_allclose(ema, rate * old + (1 - rate) * new, rtol=1e-6, atol=1e-7)


def test_no_rampup_is_none_or_zero():
  for ratio in (None, 0.0):
    validate_config(edm_config(**{"model.ema_rampup_ratio": ratio}), num_devices=1)
    assert float(ema_decay(0, BATCH, HALFLIFE_KIMG, ratio)) == pytest.approx(0.5 ** (BATCH / (HALFLIFE_KIMG * 1000)))
