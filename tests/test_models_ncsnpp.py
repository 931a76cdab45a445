"""The CIFAR-10 networks of score_sde: DDPM (Ho et al. 2020), NCSN++ and DDPM++ (Song et al. 2021).

Structure is checked with `jax.eval_shape` (tracing, no compilation); only three tiny networks are
compiled and run, on random parameters. Parameter counts at the published settings are those of the reference
implementations (see `test_parameter_counts_at_published_cifar10_settings`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.models import (
  ddpm,  # noqa: F401  (registers 'ddpm')
  ncsnpp,  # noqa: F401  (registers 'ncsnpp')
)
from scorejax.models import up_or_down_sampling as updown
from scorejax.models.registry import get_model
from scorejax.models.utils import param_count

FIR = (1, 3, 3, 1)
TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
TINY_WIDTH = {"ddpm": 32}  # DDPM normalises with 32 groups at every width (score_sde's): 32 channels at least
X_TINY = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
C_TINY = jax.ShapeDtypeStruct((2,), jnp.float32)


def init_shapes(model, x=X_TINY, c_noise=C_TINY):
  """Parameter shapes and output shape of `model`, by tracing only."""

  def init(x, c_noise):
    out, variables = model.init_with_output(jax.random.key(0), x, c_noise, train=False)
    return variables["params"], out

  return jax.eval_shape(init, x, c_noise)


# --- FIR resampling against NumPy ---------------------------------------------------------------


def upfirdn2d_numpy(x, k, up, down, pad0, pad1):
  """Direct definition: insert zeros, pad (negative crops), convolve ('valid'), keep every `down`-th."""
  n, h, w, c = x.shape
  u = np.zeros((n, h * up, w * up, c))
  u[:, ::up, ::up] = x
  u = np.pad(u, [(0, 0), (max(pad0, 0), max(pad1, 0)), (max(pad0, 0), max(pad1, 0)), (0, 0)])
  u = u[:, max(-pad0, 0) : u.shape[1] - max(-pad1, 0), max(-pad0, 0) : u.shape[2] - max(-pad1, 0)]
  kh, kw = k.shape
  out = np.zeros((n, u.shape[1] - kh + 1, u.shape[2] - kw + 1, c))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      patch = u[:, i : i + kh, j : j + kw]  # true convolution: the kernel is flipped
      out[:, i, j] = np.einsum("nabc,ab->nc", patch, k[::-1, ::-1])
  return out[:, ::down, ::down]


@pytest.mark.parametrize("up,down,pad0,pad1", [(2, 1, 2, 1), (1, 2, 1, 1), (1, 1, -1, 2)])
def test_upfirdn2d_matches_its_definition(up, down, pad0, pad1):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 6, 6, 3))
  k = rng.normal(size=(4, 4))  # not symmetric: catches a missing flip
  ours = updown.upfirdn2d(jnp.asarray(x, jnp.float32), k, up, down, pad0, pad1)
  np.testing.assert_allclose(ours, upfirdn2d_numpy(x, k, up, down, pad0, pad1), atol=1e-5)


def test_fir_resampling_keeps_constants_and_is_a_low_pass_round_trip():
  """With k = (1,3,3,1): a constant image stays constant (away from the zero-padded border), and
  down(up(x)) is the separable filter (3, 10, 3) / 16 on the original grid (Fourier response
  (10 + 6 cos w) / 16 = 1 - O(w^2)), so smooth images come back almost unchanged."""
  const = jnp.full((1, 8, 8, 1), 2.0)
  np.testing.assert_allclose(updown.downsample_2d(const, FIR)[0, 1:-1, 1:-1], 2.0, rtol=1e-6)
  np.testing.assert_allclose(updown.upsample_2d(const, FIR)[0, 1:-1, 1:-1], 2.0, rtol=1e-6)

  i = np.arange(16)
  smooth = np.sin(2 * np.pi * i / 16)[:, None] * np.cos(2 * np.pi * i / 16)[None, :]
  round_trip = np.asarray(updown.downsample_2d(updown.upsample_2d(jnp.asarray(smooth[None, :, :, None]), FIR), FIR))[
    0, :, :, 0
  ]
  g = np.array([3.0, 10.0, 3.0]) / 16
  low_pass = sum(g[a] * g[b] * np.roll(smooth, (1 - a, 1 - b), axis=(0, 1)) for a in range(3) for b in range(3))
  np.testing.assert_allclose(round_trip[1:-1, 1:-1], low_pass[1:-1, 1:-1], atol=1e-5)
  assert np.abs(round_trip - smooth)[1:-1, 1:-1].max() < 0.06


def test_fused_resampling_convolutions_equal_the_unfused_ones_inside():
  """`upsample_conv_2d` / `conv_downsample_2d` pad once, so only the border differs from upsample-then-conv."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
  conv = lambda h: jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
  up = updown.upsample_conv_2d(x, w, FIR)
  np.testing.assert_allclose(up[:, 1:-1, 1:-1], conv(updown.upsample_2d(x, FIR))[:, 1:-1, 1:-1], atol=1e-4)
  down = updown.conv_downsample_2d(x, w, FIR)
  np.testing.assert_allclose(down[:, 1:-1, 1:-1], updown.downsample_2d(conv(x), FIR)[:, 1:-1, 1:-1], atol=1e-4)


# --- Structure of every option, by tracing ------------------------------------------------------

NCSNPP_OPTIONS = [  # together with the compiled cases below, every value of every option
  dict(fir=True, resblock_type="ddpm", resamp_with_conv=False, progressive_input="none", conditional=False),
  dict(fir=True, resblock_type="ddpm", progressive="residual", progressive_input="residual"),
  dict(
    fir=False,
    resblock_type="ddpm",
    resamp_with_conv=False,
    progressive_input="input_skip",
    progressive_combine="cat",
    embedding_type="positional",
  ),
  dict(
    fir=False,
    resblock_type="biggan",
    progressive="residual",
    progressive_input="input_skip",
    progressive_combine="sum",
    skip_rescale=False,
  ),
]


@pytest.mark.parametrize("options", NCSNPP_OPTIONS)
def test_ncsnpp_options_map_images_to_images(options):
  params, out = init_shapes(get_model("ncsnpp", **TINY, **options))
  assert out.shape == X_TINY.shape and out.dtype == jnp.float32
  has_embedding = any("Dense" in "/".join(map(str, path)) for path, _ in jax.tree_util.tree_leaves_with_path(params))
  assert has_embedding == options.get("conditional", True)


def test_unknown_options_list_the_choices():
  with pytest.raises(ValueError, match="valid choices: none, output_skip, residual"):
    init_shapes(get_model("ncsnpp", **TINY, progressive="skip"))


def test_bfloat16_compute_keeps_float32_params():
  for name in ("ddpm", "ncsnpp"):
    params, out = init_shapes(get_model(name, **dict(TINY, nf=TINY_WIDTH.get(name, 8)), dtype=jnp.bfloat16))
    assert {p.dtype for p in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    assert out.dtype == jnp.float32  # returned in the input's dtype


# --- Compiled runs: shapes, conditioning, dropout, bfloat16 --------------------------------------

RUN_CASES = {
  # NCSN++ with everything it adds: FIR, BigGAN blocks, both pyramids, Fourier features.
  "ncsnpp": (
    "ncsnpp",
    dict(
      fir=True,
      resblock_type="biggan",
      progressive="output_skip",
      progressive_input="input_skip",
      progressive_combine="cat",
    ),
  ),
  # DDPM-style blocks, plain resampling, residual pyramids, positional embedding, no rescaling.
  "ncsnpp_plain": (
    "ncsnpp",
    dict(
      fir=False,
      resblock_type="ddpm",
      progressive="residual",
      progressive_input="residual",
      embedding_type="positional",
      skip_rescale=False,
    ),
  ),
  "ddpm": ("ddpm", {}),
}
# These programs run once: skip LLVM's optimisations, which dominate compile time on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def random_params(model, seed=0):
  """Random parameters of the right shapes, drawn in NumPy (no compilation). Unlike the
  initialisation, they make every layer live: `init_scale=0` zero-initialises the last layers,
  which would make the conditioning tests vacuous."""
  rng = np.random.default_rng(seed)
  shapes, _ = init_shapes(model)
  return jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1], initial=1)), s.dtype), shapes
  )


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RUN_CASES))
def test_networks_run_are_conditioned_and_use_dropout(case):
  name, options = RUN_CASES[case]
  tiny = dict(TINY, nf=TINY_WIDTH.get(name, 8))
  model = get_model(name, **tiny, **options)
  params = random_params(model)
  x = jax.random.normal(jax.random.key(1), (1,) + X_TINY.shape[1:])
  x = jnp.concatenate([x, x])  # the same image at two noise levels
  c_noise = jnp.array([-2.0, 1.0])
  with_dropout, with_bf16 = case in ("ncsnpp", "ddpm"), case == "ncsnpp"

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def program(params, x, c_noise):
    out = {"eval": model.apply({"params": params}, x, c_noise, train=False)}
    if with_dropout:
      out["train"] = model.apply({"params": params}, x, c_noise, train=True, rngs={"dropout": jax.random.key(3)})
    if with_bf16:
      bf16 = get_model(name, **tiny, **options, dtype=jnp.bfloat16)
      out["bf16"] = bf16.apply({"params": params}, x, c_noise, train=False)
    return out

  out = program(params, x, c_noise)
  for y in out.values():
    assert y.shape == X_TINY.shape and y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
  ev = np.asarray(out["eval"])
  # The same image at different log sigma gives different outputs (far above float32 round-off).
  assert np.abs(ev[0] - ev[1]).mean() > 1e-3 * np.abs(ev).mean()
  if with_dropout:
    assert np.abs(out["train"] - ev).mean() > 1e-3 * np.abs(ev).mean()
  if with_bf16:
    np.testing.assert_allclose(out["bf16"], ev, atol=0.05 * np.abs(ev).max())


# --- Parameter counts at the published CIFAR-10 settings ------------------------------------------

NCSNPP_CIFAR10 = dict(  # configs/ve/cifar10_ncsnpp_continuous.py (score_sde)
  nf=128,
  ch_mult=(1, 2, 2, 2),
  num_res_blocks=4,
  attn_resolutions=(16,),
  dropout=0.1,
  resamp_with_conv=True,
  conditional=True,
  fir=True,
  fir_kernel=(1, 3, 3, 1),
  skip_rescale=True,
  resblock_type="biggan",
  progressive="none",
  progressive_input="residual",
  progressive_combine="sum",
  attention_type="ddpm",
  embedding_type="fourier",
  fourier_scale=16.0,
  init_scale=0.0,
  conv_size=3,
)
DDPMPP_CIFAR10 = dict(  # configs/{vp,subvp}/cifar10_ddpmpp_continuous.py (score_sde)
  NCSNPP_CIFAR10, fir=False, progressive_input="none", embedding_type="positional"
)

# Expected counts. DDPM: Ho et al. 2020, App. B, "35.7 million parameters" (their
# diffusion_tf/models/unet.py). NCSN++ / DDPM++: the Score SDE paper states no parameter counts;
# these are the counts of score_sde's own flax implementation (models/ncsnpp.py) with the configs
# above, obtained by `jax.eval_shape` of its `init` (identical parameter trees, checked leaf by leaf).
PUBLISHED = [
  ("ddpm", {}, 35_746_307),  # 35.7M
  ("ncsnpp", NCSNPP_CIFAR10, 62_758_915),  # NCSN++ cont. (VE)
  ("ncsnpp", dict(NCSNPP_CIFAR10, num_res_blocks=8), 107_587_075),  # NCSN++ cont. (deep, VE)
  ("ncsnpp", DDPMPP_CIFAR10, 61_804_419),  # DDPM++ cont. (VP, sub-VP)
  ("ncsnpp", dict(DDPMPP_CIFAR10, num_res_blocks=8), 106_632_579),  # DDPM++ cont. (deep, VP, sub-VP)
]


@pytest.mark.parametrize("name,settings,expected", PUBLISHED)
def test_parameter_counts_at_published_cifar10_settings(name, settings, expected):
  model = get_model(name, **settings)
  params = jax.eval_shape(
    lambda x, c: model.init(jax.random.key(0), x, c)["params"],
    jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
    jax.ShapeDtypeStruct((1,), jnp.float32),
  )
  assert param_count(params) == expected
  if name == "ddpm":
    assert abs(expected - 35.7e6) < 0.05e6


def test_defaults_are_the_published_settings():
  assert get_model("ddpm") == get_model(
    "ddpm", nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, resamp_with_conv=True
  )
  assert get_model("ncsnpp") == get_model("ncsnpp", **NCSNPP_CIFAR10)
