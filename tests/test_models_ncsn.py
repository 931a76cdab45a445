"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020) RefineNets (models/ncsn.py).

Forward passes run on parameters drawn in NumPy from `jax.eval_shape(model.init)`: on two CPU cores XLA needs
minutes to compile the ~100 threefry kernels of a real `init` (the initialisers are checked on the normalisation
layers: test_models_refinenet_layers.py), and are compiled without LLVM optimisation, 2-4x faster to compile.

NCSN's level index comes from the SDE: the wrapper feeds the network `sde.score_sde_label(t, continuous=False)`
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
from scorejax.models.registry import get_model
from scorejax.models.utils import param_count

from helpers import FAST_COMPILE

SHAPE = (16, 16, 1)


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


def shapes(model, shape=SHAPE, batch=1):
  x, c = jax.ShapeDtypeStruct((batch,) + tuple(shape), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x, c)["params"]


def numpy_params(abstract, seed=0):
  """Parameters like the real initialisers': kernels ~ U(+-1/sqrt(fan_in)), norm scales near 1,
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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- the RefineNets: shapes, bfloat16, counts

TINY_SHAPE = (16, 16, 3)  # H, W divisible by 2 (ncsn, ncsnv2), 4 (ncsnv2_128), 8 (ncsnv2_256)


def apply(model, params, x, c_noise):
  """`model.apply` compiled once without LLVM optimisation: the tests run each network once or twice."""
  return compiled(model.apply, {"params": params}, x, c_noise)


def images(shape, batch, seed):
  return np.random.default_rng(seed).standard_normal((batch,) + tuple(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def ncsnv2_tiny():
  """Tiny NCSNv2, its parameters, and its output on [x0, x0, 0] at sigma = 0.5, 20, 1."""
  model = get_model("ncsnv2", nf=8)
  params = numpy_params(shapes(model, TINY_SHAPE))
  x = images(TINY_SHAPE, 3, seed=1)
  x[1], x[2] = x[0], 0.0
  c_noise = np.log(np.array([0.5, 20.0, 1.0], np.float32))
  return model, params, x, c_noise, np.asarray(apply(model, params, x, c_noise))


def test_ncsnv2_maps_images_to_images_whatever_the_noise_level(ncsnv2_tiny):
  _, _, x, _, out = ncsnv2_tiny
  assert out.shape == x.shape and np.all(np.isfinite(out))
  # unconditional (technique 3): the noise level enters only as the division by sigma outside
  np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ncsnv2_128", "ncsnv2_256"])
def test_deeper_ncsnv2_maps_images_toimages(name):
  model = get_model(name, nf=8)
  x = images(TINY_SHAPE, 2, seed=2)
  out = np.asarray(apply(model, numpy_params(shapes(model, TINY_SHAPE)), x, np.zeros(2, np.float32)))
  assert out.shape == x.shape and np.all(np.isfinite(out))


@pytest.mark.slow
def test_ncsn_output_depends_on_the_level_index_only():
  """Rows 0, 2 share the index 0 (the label 0 and one a quarter of a level away); row 1 is index 5."""
  model = get_model("ncsn", nf=8)
  c_noise = np.array([0.0, 5.0, 0.25], np.float32)
  x = np.repeat(images((16, 16, 1), 1, seed=3), 3, axis=0)
  out = np.asarray(apply(model, numpy_params(shapes(model, (16, 16, 1))), x, c_noise))
  assert out.shape == x.shape and np.all(np.isfinite(out))
  np.testing.assert_array_equal(out[0], out[2])
  assert np.max(np.abs(out[0] - out[1])) > 1e-2


def test_bfloat16_compute_keeps_float32_params(ncsnv2_tiny):
  _, params, x, c_noise, out32 = ncsnv2_tiny
  model16 = get_model("ncsnv2", nf=8, dtype=jnp.bfloat16)
  abstract = shapes(model16, TINY_SHAPE)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype(jnp.float32)}
  out16 = apply(model16, params, x, c_noise)
  assert out16.dtype == jnp.bfloat16
  error = np.max(np.abs(np.asarray(out16, np.float32) - out32)) / np.max(np.abs(out32))
  assert error < 0.05


# ----------------------------------------------------------------------------- parameter counts


def _torch_layout_count(nf, channels, residual_blocks, refine_blocks, num_classes=None):
  """Parameters of the authors' PyTorch constructors (ermongroup/ncsnv2 models/ncsn.py, ncsnv2.py;
  score_sde_pytorch models/ncsnv2.py), block by block: an independent count of the same layout.
  `residual_blocks`: (in mult, out mult, resample, dilation); `refine_blocks`: (input mults, out mult)."""
  conv = lambda cin, cout, k=3, bias=True: k * k * cin * cout + bias * cout
  norm = (lambda c: 3 * c) if num_classes is None else (lambda c: 3 * c * num_classes)
  refine_norm = (lambda c: 0) if num_classes is None else norm  # NCSNv2 RefineBlocks are unnormalised

  def residual(cin, cout, resample, dilation):
    if resample == "down":
      return norm(cin) + conv(cin, cin) + norm(cin) + conv(cin, cout) + conv(cin, cout, 3 if dilation > 1 else 1)
    shortcut = conv(cin, cout, 3 if dilation > 1 else 1) if cin != cout else 0
    return norm(cin) + conv(cin, cout) + norm(cout) + conv(cout, cout) + shortcut

  rcu = lambda c, n_blocks: n_blocks * 2 * (conv(c, c, bias=False) + refine_norm(c))

  def refine(ins, f, end):
    msf = sum(conv(c, f) + refine_norm(c) for c in ins) if len(ins) > 1 else 0
    return sum(rcu(c, 2) for c in ins) + msf + 2 * (conv(f, f, bias=False) + refine_norm(f)) + rcu(f, 3 if end else 1)

  total = conv(channels, nf) + norm(nf) + conv(nf, channels)
  total += sum(residual(a * nf, b * nf, r, d) for a, b, r, d in residual_blocks)
  return total + sum(
    refine([m * nf for m in ins], f * nf, k == len(refine_blocks) - 1) for k, (ins, f) in enumerate(refine_blocks)
  )


RES_32 = [
  (1, 1, None, 1),
  (1, 1, None, 1),
  (1, 2, "down", 1),
  (2, 2, None, 1),
  (2, 2, "down", 2),
  (2, 2, None, 2),
  (2, 2, "down", 4),
  (2, 2, None, 4),
]
REFINE_32 = [([2], 2), ([2, 2], 2), ([2, 2], 1), ([1, 1], 1)]
RES_128 = RES_32[:4] + [
  (2, 2, "down", 1),
  (2, 2, None, 1),
  (2, 4, "down", 2),
  (4, 4, None, 2),
  (4, 4, "down", 4),
  (4, 4, None, 4),
]
REFINE_128 = [([4], 4), ([4, 4], 2), ([2, 2], 2), ([2, 2], 1), ([1, 1], 1)]
RES_256 = RES_128[:6] + [(2, 2, "down", 1), (2, 2, None, 1)] + RES_128[6:]
REFINE_256 = REFINE_128[:3] + [([2, 2], 2)] + REFINE_128[3:]


@pytest.mark.parametrize(
  "name,count,layout",
  [
    # CIFAR-10 settings nf=128, 3 channels, 10 levels (configs/ve/ncsn/cifar10.py)
    ("ncsn", 30_117_635, (RES_32, REFINE_32, 10)),
    # CIFAR-10 settings nf=128, 3 channels (configs/ve/ncsnv2/cifar10.py)
    ("ncsnv2", 29_694_083, (RES_32, REFINE_32, None)),
    # nf=128, 3 channels, as for LSUN (ncsnv2_128) and FFHQ (ncsnv2_256)
    ("ncsnv2_128", 83_445_379, (RES_128, REFINE_128, None)),
    ("ncsnv2_256", 94_132_611, (RES_256, REFINE_256, None)),
  ],
)
def test_parameter_counts_at_published_settings(name, count, layout):
  """Exact counts, cross-checked against a block-by-block count of the PyTorch constructors.

  score_sde's Flax port (models/ncsnv2.py) widens NCSN's and NCSNv2's third RefineBlock to 2 nf,
  giving 34,428,675 and 33,970,563; the authors' PyTorch code and score_sde_pytorch use nf, as here.
  Convolutions make the count independent of the resolution, so the deep variants are traced at 32 px.
  """
  residual_blocks, refine_blocks, num_classes = layout
  assert _torch_layout_count(128, 3, residual_blocks, refine_blocks, num_classes) == count
  assert param_count(shapes(get_model(name), (32, 32, 3))) == count
