"""The DDPM U-Net normalises as score_sde's DDPM: 32 groups at every width (flax's `nn.GroupNorm()` default).

The reference is score_sde's own module code, copied verbatim (tests/score_sde_ddpm.py): a checkpoint of its
DDPM at 32 channels, mapped by the importer's leaf map (models/score_sde_params.py), computes the same function
here, which NCSN++'s rule `min(C // 4, 32)` (8 and 16 groups there) would not. At the published width (128 and
256 channels) the two rules are one, so the CIFAR-10 DDPM is unchanged: same parameter tree, same outputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import score_sde_ddpm
import score_sde_format as fmt

from scorejax.models import ddpm, layerspp, score_sde_params
from scorejax.models.registry import get_model
from scorejax.models.utils import param_count, param_shapes

from helpers import FAST_COMPILE

NARROW = dict(nf=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,))  # widths 32 and 64, 8x8 images
LEVELS = np.array([0, 1, 250, 998, 999], np.float32)  # the discrete DDPM's label: its level's index


def ncsnpp_rule(x, dtype=jnp.float32, num_groups=None):
  """The GroupNorm the DDPM had before: NCSN++'s `min(C // 4, 32)` groups whatever its block asks."""
  del num_groups
  return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), dtype=dtype)(x)


def run(net, params, x, labels):
  apply = lambda p, x, c: net.apply({"params": p}, x, c, train=False)
  return jax.jit(apply).lower(params, x, labels).compile(FAST_COMPILE)(params, x, labels)


def relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def shape_tree(tree):
  return {k: shape_tree(v) if isinstance(v, dict) else tuple(v.shape) for k, v in tree.items()}


@pytest.mark.parametrize(
  "nf,ch_mult,attn,size", [(32, (1, 2), (4,), 8), (128, (1, 2, 2, 2), (16,), 32)], ids=["narrow", "published"]
)
def test_the_format_file_builds_the_tree_of_score_sde_s_own_ddpm(nf, ch_mult, attn, size):
  theirs = score_sde_ddpm.DDPM(score_sde_ddpm.ddpm_config(nf, ch_mult, 2, attn))
  x, labels = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32)
  params = jax.eval_shape(lambda x, c: theirs.init(jax.random.key(0), x, c, train=False)["params"], x, labels)
  assert shape_tree(params) == fmt.ddpm_shapes(nf, ch_mult, 2, attn, size, 3)


def test_score_sde_s_ddpm_is_not_built_narrower_than_32_channels():
  with pytest.raises(ValueError, match="Number of groups"):  # its own code, through flax
    theirs = score_sde_ddpm.DDPM(score_sde_ddpm.ddpm_config(16, (1, 2), 1, (4,)))
    jax.eval_shape(lambda: theirs.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)), train=False))
  with pytest.raises(ValueError, match="nf=16"):
    fmt.ddpm_shapes(16, (1, 2), 1, (4,), 8, 3)


@pytest.mark.parametrize("nf", [8, 16, 48])
def test_a_width_that_32_groups_do_not_divide_is_refused_naming_model_nf(nf):
  net = get_model("ddpm", **dict(NARROW, nf=nf))
  with pytest.raises(ValueError, match=rf"model.nf={nf} is not a multiple of 32"):
    param_shapes(net, (8, 8, 3))


@pytest.mark.slow
def test_a_narrow_score_sde_ddpm_imports_as_the_same_function(monkeypatch):
  """At 32 and 64 channels, score_sde's DDPM (32 groups) on its tree and ours on the mapped tree agree to float
  round-off; with NCSN++'s rule (8 and 16 groups) ours would compute another function."""
  rng = np.random.default_rng(0)
  theirs_params = fmt.random_tree(fmt.ddpm_shapes(32, (1, 2), 2, (4,), 8, 3), rng)
  theirs = score_sde_ddpm.DDPM(score_sde_ddpm.ddpm_config(**NARROW))
  ours = get_model("ddpm", **NARROW, conditioning="score_sde")
  rename, extra = score_sde_params.leaf_map(ours, (8, 8, 3))
  fill = lambda name, like: score_sde_params.identity_attention(like, jax.random.key(0))
  params = score_sde_params.map_tree(theirs_params, param_shapes(ours, (8, 8, 3)), rename, extra, fill)
  x = jnp.asarray(rng.standard_normal((len(LEVELS), 8, 8, 3)), jnp.float32)

  want = run(theirs, theirs_params, x, LEVELS)
  got = run(ours, params, x, LEVELS)
  assert relative_error(got, want) < 1e-5
  monkeypatch.setattr(layerspp, "group_norm", ncsnpp_rule)
  before = run(ours.clone(), params, x, LEVELS)
  assert relative_error(before, want) > 0.1  # the rule that imported it "without a word"


@pytest.mark.slow
def test_the_published_ddpm_is_unchanged(monkeypatch):
  """At nf=128 (widths 128 and 256) `min(C // 4, 32) = 32`: the CIFAR-10 DDPM (configs/cifar.py:vp_ddpm) has
  the same parameters and computes the same numbers, bit for bit, under either rule."""
  net = get_model("ddpm", conditioning="score_sde")
  assert (net.nf, net.ch_mult, net.attn_resolutions) == (128, (1, 2, 2, 2), (16,))
  shapes = param_shapes(net, (32, 32, 3))
  assert param_count(shapes) == 35_746_307
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 16, 16, 3)), jnp.float32)  # attends at 16x16
  rng = np.random.default_rng(2)
  small = param_shapes(net, (16, 16, 3))
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), jnp.float32), small)
  labels = jnp.array([3.0, 700.0])
  now = run(net, params, x, labels)
  monkeypatch.setattr(layerspp, "group_norm", ncsnpp_rule)
  before_shapes = param_shapes(net.clone(), (32, 32, 3))
  assert jax.tree_util.tree_structure(before_shapes) == jax.tree_util.tree_structure(shapes)
  assert shape_tree(before_shapes) == shape_tree(shapes)
  before = run(net.clone(), params, x, labels)
  np.testing.assert_array_equal(now, before)
  assert float(jnp.std(now)) > 1e-3  # not two zeros


def test_ddpm_s_groups_are_score_sde_s_default():
  assert ddpm.NUM_GROUPS == nn.GroupNorm.num_groups == 32
