"""Class-conditional networks (`add_label_embedding`): a label embedding with a null row joins the noise embedding,
the score depends on the label and no label is the null label; unconditional networks keep their parameter trees
and refuse labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import models, sde_lib

NETWORKS = {  # name: (options of a tiny network, example shape, width of its noise embedding)
  "mlp": (dict(nf=8, num_layers=2), (2,), 8),
  "ncsn_small": (dict(nf=8, ch_mult=(1, 2), num_res_blocks=1), (8, 8, 1), 32),
  "ncsnpp": (dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)), (8, 8, 3), 32),
}
NUM_CLASSES = 3


def shapes(name, **options):
  kwargs, shape, _ = NETWORKS[name]
  return models.utils.param_shapes(models.get_model(name, **kwargs, **options), shape)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_conditional_network_is_the_unconditional_one_plus_a_table_with_a_null_row(name):
  unconditional = shapes(name)
  assert "label_embedding" not in unconditional and shapes(name, num_classes=0) == unconditional
  conditional = dict(shapes(name, num_classes=NUM_CLASSES))
  table = conditional.pop("label_embedding")["embedding"]
  assert conditional == unconditional  # the same tree beside the table: nothing renamed or resized
  assert table.shape == (NUM_CLASSES + 1, NETWORKS[name][2])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "ncsn_small", "ncsnpp"])
def test_the_score_depends_on_the_label_and_no_label_is_the_null_label(name):
  kwargs, shape, _ = NETWORKS[name]
  model = models.get_model(name, **kwargs, num_classes=NUM_CLASSES)
  params = models.init_params(model, jax.random.key(0), shape)
  # Zero-initialised output layers make every score 0 at initialisation: move every parameter.
  # Drawn in NumPy: an eager jax.random.normal compiles a threefry kernel for each shape.
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(lambda p: p + np.float32(0.1) * rng.standard_normal(p.shape, np.float32), params)
  sde = sde_lib.VPSDE(0.1, 20.0, N=10)
  # One example under each label, then unlabelled; eager (one network call each): compiling costs more.
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(2), shape), (NUM_CLASSES + 1,) + shape)
  t = jnp.full((NUM_CLASSES + 1,), 0.4)
  score_fn = models.get_score_fn(model, params, sde)
  by_label = np.asarray(score_fn(x, t, jnp.arange(NUM_CLASSES + 1)))
  assert all(np.abs(by_label[k] - by_label[0]).max() > 1e-3 for k in range(1, NUM_CLASSES + 1))
  np.testing.assert_allclose(score_fn(x, t), np.broadcast_to(by_label[NUM_CLASSES], x.shape), rtol=1e-5, atol=1e-6)


def test_labels_given_to_an_unconditional_network_are_refused():
  kwargs, shape, _ = NETWORKS["mlp"]
  model = models.get_model("mlp", **kwargs)
  params = models.init_params(model, jax.random.key(0), shape)
  with pytest.raises(ValueError, match="without class input"):
    models.get_score_fn(model, params, sde_lib.VPSDE(0.1, 20.0, N=10))(jnp.ones((2, 2)), 0.5, jnp.zeros(2, jnp.int32))


@pytest.mark.parametrize("name", ["ncsn_small", "ddpm"])
def test_input_fourier_features_widen_the_first_layer_only(name):
  # VDM's Fourier features (Kingma et al. 2021, App. C): sin and cos of 2^n 2 pi x per channel, concatenated to x.
  x = jnp.asarray([[0.25, 1 / 16]])
  features = models.layers.input_fourier_features(x, (1, 3))
  angles = 2 * np.pi * np.asarray([2 * 0.25, 8 * 0.25, 2 / 16, 8 / 16])  # channel-major: (x_0, n=1), (x_0, n=3), ...
  np.testing.assert_allclose(features, [[0.25, 1 / 16, *np.sin(angles), *np.cos(angles)]], atol=1e-6)
  assert models.layers.input_fourier_features(x, ()) is x
  if name == "ncsn_small":
    options, shape = NETWORKS[name][0], NETWORKS[name][1]
  else:  # VDM's network: one resolution, no downsampling
    options, shape = dict(nf=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()), (4, 4, 3)
  plain = models.utils.param_shapes(models.get_model(name, **options), shape)
  model = models.get_model(name, **options, input_fourier=(6, 7))
  wide = models.utils.param_shapes(model, shape)
  first = "Conv_0"  # the input convolution
  assert wide[first]["kernel"].shape[-2] == 5 * plain[first]["kernel"].shape[-2]  # C (1 + 2 * 2) input channels
  rest = lambda tree: {k: v for k, v in tree.items() if k != first}
  assert jax.tree_util.tree_map(lambda a: a.shape, rest(wide)) == jax.tree_util.tree_map(lambda a: a.shape, rest(plain))
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, jnp.zeros((2,))), wide, jnp.zeros((2, *shape)))
  assert out.shape == (2, *shape)  # the output keeps the data's channels
