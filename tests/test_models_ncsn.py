"""NCSN's level index comes from the SDE: the wrapper feeds the network `sde.score_sde_label(t, continuous=False)`
(SMLD's index of the chain's level, from `sigma_max` down), and the network no longer re-derives the geometric
levels from `log sigma` with noise levels of its own. Same parameters and, at every level of the chain and between
them, the same scores, bit for bit, as the network that did (`PreviousNCSN`: models/ncsn.py before the change).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import models, sde_lib
from scorejax.models.ncsn import NCSN, refinenet
from scorejax.models.refinenet_layers import get_act, get_normalization

SHAPE = (16, 16, 1)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def previous_level_index(c_noise, sigma_min: float, sigma_max: float, num_scales: int):
  """models/ncsn.py's `noise_level_index` before the change: the level nearest to `exp(c_noise)` in log sigma."""
  if num_scales == 1:
    return jnp.zeros(jnp.shape(c_noise), jnp.int32)
  log_max, log_min = jnp.log(sigma_max), jnp.log(sigma_min)
  position = (log_max - c_noise.astype(jnp.float32)) / (log_max - log_min) * (num_scales - 1)
  return jnp.clip(jnp.round(position), 0, num_scales - 1).astype(jnp.int32)


class PreviousNCSN(nn.Module):
  """models/ncsn.py's `NCSN` before the change: `c_noise = log sigma`, the index computed inside."""

  nf: int = 128
  normalization: str = "InstanceNorm++"
  nonlinearity: str = "elu"
  interpolation: str = "bilinear"
  sigma_min: float = 0.01
  sigma_max: float = 1.0
  num_scales: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c_noise, train: bool = False):
    y = previous_level_index(c_noise, self.sigma_min, self.sigma_max, self.num_scales)
    norm = get_normalization(self.normalization, num_classes=self.num_scales, dtype=self.dtype)
    return refinenet(
      x,
      y,
      nf=self.nf,
      encoder=NCSN.ENCODER,
      decoder=NCSN.DECODER,
      act=get_act(self.nonlinearity),
      norm=norm,
      refine_norm=norm,
      pool="avg",
      interpolation=self.interpolation,
      dtype=self.dtype,
    )


def shapes(model, batch=1):
  x, c = jax.ShapeDtypeStruct((batch,) + SHAPE, jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x, c)["params"]


def numpy_params(abstract, seed=0):
  """Like the initialisers' (tests/test_ncsn_architectures.py): kernels ~ U(+-1/sqrt(fan_in)), norm scales near 1,
  shifts near 0; the per-level table rows spread wider, so that the levels differ clearly."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name in ("kernel", "bias"):
      bound = 1 / np.sqrt(np.prod(shape[:-1])) if name == "kernel" else 0.1
      value = rng.uniform(-bound, bound, shape)
    elif name == "embedding":
      value = 1 + 0.3 * rng.standard_normal(shape)
    else:
      value = (name != "beta") + 0.02 * rng.standard_normal(shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def test_the_parameter_tree_is_unchanged():
  new, old = shapes(NCSN(nf=8)), shapes(PreviousNCSN(nf=8))
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)
  assert jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, new, old)) == [True] * len(
    jax.tree_util.tree_leaves(new)
  )


def test_the_scores_are_unchanged_at_every_level_and_between_them():
  """configs/cifar.py:ncsn's SDE (VE, sigma from 0.01 to 1, 10 levels): the score at the chain's times, where
  training and annealed Langevin ask, and at times between the levels, against the previous network given
  `log sigma(t)` by the previous wrapper."""
  sde = sde_lib.VESDE(0.01, 1.0, 10)
  params = numpy_params(shapes(NCSN(nf=8)))
  t = jnp.concatenate([sde.discrete_times, jnp.asarray([1e-5, 0.03, 0.3, 0.52, 0.97])])
  x = jnp.asarray(np.random.default_rng(1).standard_normal((len(t),) + SHAPE), jnp.float32)
  score_fn = models.get_score_fn(NCSN(nf=8), params, sde)
  got = compiled(score_fn, x, t)
  old = PreviousNCSN(nf=8)
  want = compiled(lambda p, x, t: old.apply({"params": p}, x, jnp.log(sde.noise_level(t))), params, x, t)
  np.testing.assert_array_equal(got, want)
  assert np.max(np.abs(got[0] - got[9])) > 1e-2 * np.max(np.abs(got))  # the levels do condition it


@pytest.mark.parametrize(
  "sigma_min,sigma_max,num_scales", [(0.01, 1.0, 10), (0.01, 50.0, 232), (0.01, 348.0, 2311), (0.1, 1.0, 1)]
)
def test_the_sde_labels_each_level_with_the_index_the_network_computed(sigma_min, sigma_max, num_scales):
  """At each level's time the SDE's label is SMLD's index `N - 1 - i`, the previous network's from `log sigma_i`;
  between the levels both round to the nearest level (a grid clear of the half-way ties)."""
  sde = sde_lib.VESDE(sigma_min, sigma_max, num_scales)
  t = np.concatenate([np.asarray(sde.discrete_times), np.linspace(0.0, 1.0, 2001)])
  position = (1.0 - t) * max(num_scales - 1, 1)
  t = t[np.abs(position - np.floor(position) - 0.5) > 1e-3]
  label = np.asarray(sde.score_sde_label(jnp.asarray(t, jnp.float32), False))
  previous = np.asarray(previous_level_index(jnp.log(sde.noise_level(jnp.asarray(t, jnp.float32))), *sde_args(sde)))
  np.testing.assert_array_equal(label, previous)
  np.testing.assert_array_equal(label[:num_scales], np.arange(num_scales)[::-1])


def sde_args(sde):
  return sde.sigma_min, sde.sigma_max, sde.N


def test_a_level_conditioned_network_needs_the_sde_s_chain():
  with pytest.raises(ValueError, match="conditioned on the level of a discrete chain, which SubVPSDE lacks"):
    models.get_score_fn(NCSN(nf=8), None, sde_lib.SubVPSDE(0.1, 20.0, 10))
  with pytest.raises(ValueError, match="model.num_scales=10 levels, but the SDE's chain has 232"):
    models.get_score_fn(NCSN(nf=8), None, sde_lib.VESDE(0.01, 50.0, 232))
