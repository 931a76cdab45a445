"""The learned noise schedule and the module that holds it beside a network (models/vdm.py): monotone with its
endpoints for any parameters, one parameter tree, and the noise prediction model that the bound sees equal to the score
that the samplers see."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scorejax import losses, models, schedules
from scorejax.models.vdm import FixedSchedule, LearnedSchedule, WithSchedule, noise_fn, schedule_fn

T = jnp.linspace(0.0, 1.0, 2001)


def test_learned_schedule_is_monotone_between_its_endpoints_for_any_parameters():
  schedule = LearnedSchedule(gamma_min=-13.3, gamma_max=5.0, n_features=32)
  params = schedule.init(jax.random.key(0), jnp.zeros((1,)))
  curve = jax.jit(lambda p: schedules.gamma_and_slope(lambda t: schedule.apply(p, t), T))
  gamma, _ = curve(params)
  np.testing.assert_allclose([gamma[0], gamma[-1]], [-13.3, 5.0], atol=1e-5)
  np.testing.assert_allclose(gamma, -13.3 + 18.3 * T, atol=0.05)  # starts close to linear
  for seed in range(5):  # random weights of either sign and scale, endpoints in either order
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    random = [5.0 * jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)]
    random = jax.tree_util.tree_unflatten(tree, random)
    gamma, slope = curve(random)
    low, high = float(random["params"]["gamma_min"]), float(random["params"]["gamma_max"])
    np.testing.assert_allclose([gamma[0], gamma[-1]], [low, low + abs(high - low)], rtol=1e-5, atol=1e-4)
    assert float(jnp.min(slope)) >= 0 and np.all(np.diff(np.asarray(gamma)) >= -1e-5), seed
  fixed = LearnedSchedule(gamma_min=-5.0, gamma_max=1.0, nonlinear=False, learn_endpoints=False)
  assert fixed.init(jax.random.key(0), jnp.zeros((1,)))["params"].keys() == {"linear"}
  np.testing.assert_allclose(FixedSchedule(-5.0, 1.0).apply({}, T), -5.0 + 6.0 * T, rtol=1e-6)


@pytest.fixture(scope="module")
def mlp_with_schedule():
  model = WithSchedule(models.get_model("mlp", nf=16, num_layers=1), LearnedSchedule(n_features=8))
  return model, models.init_params(model, jax.random.key(0), (3,))


def test_with_schedule_holds_both_in_one_tree_and_its_noise_model_is_the_samplers_score(mlp_with_schedule):
  model, params = mlp_with_schedule
  assert set(params) == {"network", "schedule"}
  assert set(params["schedule"]) == {"gamma_min", "gamma_max", "linear", "l2", "l3"}
  assert model.conditioning == "log_sigma" and model.takes_vectors and model.num_classes == 0
  params = jax.tree_util.tree_map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(1), v.shape), params)

  @jax.jit
  def both(params, z, t):
    gamma = schedule_fn(model, params)
    score_fn = models.get_score_fn(model, params, schedules.GammaSDE(gamma), prediction="noise")
    sigma = schedules.alpha_sigma(gamma(t))[1]
    return noise_fn(model, params)(z, t, gamma(t)), -sigma[:, None] * score_fn(z, t)

  eps, from_score = both(params, jax.random.normal(jax.random.key(2), (3, 3)), jnp.asarray([0.1, 0.5, 0.9]))
  np.testing.assert_allclose(eps, from_score, rtol=1e-4, atol=1e-6)
  assert float(jnp.std(eps)) > 1e-3  # the perturbed network's output, not its zero-initialised one


@pytest.mark.slow
def test_the_bound_trains_network_and_schedule_as_one_tree(mlp_with_schedule):
  # What the train state will hold: one tree, one gradient, one optimizer step, whose schedule part takes the
  # variance-minimising gradient (losses/vdm.py) and whose network part the bound's.
  model, params = mlp_with_schedule
  x = jax.random.normal(jax.random.key(4), (64, 3))

  @jax.jit
  def loss_and_grads(params):
    def loss(params):
      denoiser = losses.Denoiser(noise_fn(model, params), schedule_fn(model, params))
      return losses.vdm_loss(denoiser, x, jax.random.key(5), schedule_gradient="variance")

    return jax.value_and_grad(loss)(params)

  value, grads = loss_and_grads(params)
  assert np.isfinite(float(value))
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  for part in ("network", "schedule"):
    norm = optax.tree.norm(grads[part])
    assert np.isfinite(float(norm)) and float(norm) > 0, part
  optimizer = optax.adam(1e-2)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  moved = optax.apply_updates(params, updates)
  for name in ("gamma_min", "gamma_max", "l2"):
    before, after = (jax.tree_util.tree_leaves(tree["schedule"][name])[0] for tree in (params, moved))
    assert not np.allclose(before, after), name
