"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020) RefineNets: shapes, conditioning on the
noise-level index (which the SDE gives: tests/test_models_ncsn.py), instance norm++ against NumPy, bfloat16
compute, and parameter counts.

Forward passes run on parameters drawn in NumPy from `jax.eval_shape(model.init)`: on two CPU
cores XLA needs minutes to compile the ~100 threefry kernels of a real `init`, while the init code
itself is traced by `eval_shape` and the initialisers are checked on the normalisation layers. The
forward passes are compiled without LLVM optimisation, which cuts their compile time 2-4x.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.models import ncsn  # noqa: F401  (registers the networks)
from scorejax.models.refinenet_layers import (
  ConditionalInstanceNormPlus,
  InstanceNormPlus,
  resize_bilinear_align_corners,
)
from scorejax.models.registry import get_model
from scorejax.models.utils import param_count

TINY_SHAPE = (16, 16, 3)  # H, W divisible by 2 (ncsn, ncsnv2), 4 (ncsnv2_128), 8 (ncsnv2_256)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _apply(model, params, x, c_noise):
  """`model.apply` compiled once without LLVM optimisation: the tests run each network once or twice."""
  variables = {"params": params}
  return jax.jit(model.apply).lower(variables, x, c_noise).compile(FAST_COMPILE)(variables, x, c_noise)


def _abstract_params(model, shape, batch=1):
  x = jax.ShapeDtypeStruct((batch,) + tuple(shape), jnp.float32)
  c = jax.ShapeDtypeStruct((batch,), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x, c)["params"]


def _numpy_params(abstract, seed=0):
  """Parameters like the real initialisers': conv kernels ~ U(+-1/sqrt(fan_in)), norm scales near 1
  and shifts near 0; the per-level table rows spread wider so that the levels differ clearly."""
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


def _images(shape, batch, seed):
  return np.random.default_rng(seed).standard_normal((batch,) + tuple(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def ncsnv2_tiny():
  """Tiny NCSNv2, its parameters, and its output on [x0, x0, 0] at sigma = 0.5, 20, 1."""
  model = get_model("ncsnv2", nf=8)
  params = _numpy_params(_abstract_params(model, TINY_SHAPE))
  x = _images(TINY_SHAPE, 3, seed=1)
  x[1], x[2] = x[0], 0.0
  c_noise = np.log(np.array([0.5, 20.0, 1.0], np.float32))
  return model, params, x, c_noise, np.asarray(_apply(model, params, x, c_noise))


def test_ncsnv2_maps_images_to_images_whatever_the_noise_level(ncsnv2_tiny):
  _, _, x, _, out = ncsnv2_tiny
  assert out.shape == x.shape and np.all(np.isfinite(out))
  # unconditional (technique 3): the noise level enters only as the division by sigma outside
  np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ncsnv2_128", "ncsnv2_256"])
def test_deeper_ncsnv2_maps_images_to_images(name):
  model = get_model(name, nf=8)
  x = _images(TINY_SHAPE, 2, seed=2)
  out = np.asarray(_apply(model, _numpy_params(_abstract_params(model, TINY_SHAPE)), x, np.zeros(2, np.float32)))
  assert out.shape == x.shape and np.all(np.isfinite(out))


def test_ncsn_output_depends_on_the_level_index_only():
  """Rows 0, 2 share the index 0 (the label 0 and one a quarter of a level away); row 1 is index 5."""
  model = get_model("ncsn", nf=8)
  c_noise = np.array([0.0, 5.0, 0.25], np.float32)
  x = np.repeat(_images((16, 16, 1), 1, seed=3), 3, axis=0)
  out = np.asarray(_apply(model, _numpy_params(_abstract_params(model, (16, 16, 1))), x, c_noise))
  assert out.shape == x.shape and np.all(np.isfinite(out))
  np.testing.assert_array_equal(out[0], out[2])
  assert np.max(np.abs(out[0] - out[1])) > 1e-2


def _numpy_instance_norm_plus(x, gamma, alpha, beta):
  """z = gamma ((x - mu) / s + alpha (mu - mean_c mu) / std_c(mu)) + beta, std over channels unbiased."""
  mu = x.mean(axis=(1, 2))
  mu_tilde = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, ddof=1, keepdims=True) + 1e-5)
  h = (x - mu[:, None, None]) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
  expand = lambda p: np.reshape(p, (-1, 1, 1, p.shape[-1]))
  return expand(gamma) * (h + expand(alpha) * mu_tilde[:, None, None]) + expand(beta)


def test_instance_norm_plus_matches_numpy():
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((2, 5, 4, 6)) * rng.uniform(0.5, 3, 6) + rng.standard_normal(6)).astype(np.float32)
  norm = InstanceNormPlus()
  params = jax.jit(norm.init)(jax.random.key(0), x)["params"]
  np.testing.assert_array_equal(params["beta"], 0)
  assert np.all(np.abs(params["gamma"] - 1) < 0.1) and np.all(np.abs(params["alpha"] - 1) < 0.1)
  gamma, alpha, beta = (rng.standard_normal(6).astype(np.float32) for _ in range(3))
  out = jax.jit(norm.apply)({"params": {"gamma": gamma, "alpha": alpha, "beta": beta}}, x)
  np.testing.assert_allclose(out, _numpy_instance_norm_plus(x, gamma, alpha, beta), rtol=1e-4, atol=1e-4)


def test_conditional_instance_norm_plus_uses_the_row_of_each_level():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32) + 2
  y = jnp.array([3, 1])
  norm = ConditionalInstanceNormPlus(num_classes=4)
  table = jax.jit(norm.init)(jax.random.key(0), x, y)["params"]["embedding"]
  assert table.shape == (4, 18)
  assert np.all(np.abs(table[:, :12] - 1) < 0.1)
  np.testing.assert_array_equal(table[:, 12:], 0)
  table = rng.standard_normal((4, 18)).astype(np.float32)
  out = jax.jit(norm.apply)({"params": {"embedding": table}}, x, y)
  gamma, alpha, beta = np.split(table[np.asarray(y)], 3, axis=-1)
  np.testing.assert_allclose(out, _numpy_instance_norm_plus(x, gamma, alpha, beta), rtol=1e-4, atol=1e-4)


def test_bilinear_resize_aligns_corners_and_is_exact_on_linear_images():
  """Bilinear interpolation reproduces an affine image; output pixel j sits at j (n_in - 1) / (n_out - 1)."""
  i, j = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
  x = jnp.asarray((10 * i + j)[None, :, :, None], jnp.float32)
  out = jax.jit(resize_bilinear_align_corners, static_argnums=1)(x, (5, 7))
  p, q = np.meshgrid(np.arange(5) * 2 / 4, np.arange(7) * 3 / 6, indexing="ij")
  np.testing.assert_allclose(out[0, :, :, 0], 10 * p + q, rtol=1e-6, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params(ncsnv2_tiny):
  _, params, x, c_noise, out32 = ncsnv2_tiny
  model16 = get_model("ncsnv2", nf=8, dtype=jnp.bfloat16)
  abstract = _abstract_params(model16, TINY_SHAPE)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype(jnp.float32)}
  out16 = _apply(model16, params, x, c_noise)
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
  assert param_count(_abstract_params(get_model(name), (32, 32, 3))) == count
