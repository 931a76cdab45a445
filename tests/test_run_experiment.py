"""Class-conditional networks for classifier-free guidance: a label embedding joins the noise embedding,
label dropout trains the null label, and a network trained this way on the mixture samples the class asked
for. Unconditional networks keep their parameter trees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import datasets, models, sde_lib
from scorejax.datasets.toy2d import GMM_MEANS
from scorejax.run.experiment import Experiment, UserError, validate_config
from scorejax.run.train import train

from helpers import mixture_classes_run, override, tiny_digits, tiny_toy

NETWORKS = {  # name: (options of a tiny network, example shape, width of its noise embedding)
  "mlp": (dict(nf=8, num_layers=2), (2,), 8),
  "ncsn_small": (dict(nf=8, ch_mult=(1, 2), num_res_blocks=1), (8, 8, 1), 32),
  "ncsnpp": (dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)), (8, 8, 3), 32),
}
NUM_CLASSES = 3
# One device: no collectives, whose rendezvous XLA:CPU aborts after 40 s when the two cores are busy elsewhere.
QUIET = dict(print_fn=lambda *a: None, devices=jax.devices()[:1])


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


@pytest.mark.parametrize("name", ["mlp", "ncsn_small", "ncsnpp"])
def test_the_score_depends_on_the_label_and_no_label_is_the_null_label(name):
  kwargs, shape, _ = NETWORKS[name]
  model = models.get_model(name, **kwargs, num_classes=NUM_CLASSES)
  params = models.init_params(model, jax.random.key(0), shape)
  # Zero-initialised output layers make every score 0 at initialisation: move every parameter.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
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


def test_batches_carry_the_labels_of_their_examples():
  data = np.arange(100, dtype=np.float32)[:, None]
  loader = datasets.BatchLoader(data, 8, seed=0, start_step=3, steps_per_call=2, labels=10 * np.arange(100))
  try:
    images, labels = next(loader)
  finally:
    loader.close()
  assert images.shape == (2, 8, 1) and labels.shape == (2, 8)
  np.testing.assert_array_equal(labels, 10 * images[..., 0])


# ----------------------------------------------------------------------------- trained on the mixture


def conditional_toy(**fields):
  """A class-conditional MLP on the four-component mixture, whose components are the classes."""
  return mixture_classes_run(**{"model.num_classes": 4, **fields})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = conditional_toy()
  return config, train(config, str(tmp_path_factory.mktemp("conditional")), **QUIET)


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_classifier_free_guidance_of_a_trained_network_samples_each_class(trained, scale):
  # Measured after 1000 steps: 98.6-99.4% of each class's samples nearest its own component at w = 0, and
  # the same at w = 1.
  config, state = trained
  guided = override(config.copy_and_resolve_references(), **{"sampling.guidance_scale": scale})
  exp = Experiment(guided, QUIET["devices"])
  for k in range(4):
    x = exp.generate(state.ema_params, 0, num=1000, labels=np.full(1000, k))
    nearest = np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == k) > 0.95, (k, np.bincount(nearest, minlength=4) / len(x))


def test_label_dropout_is_what_trains_the_null_label(trained, tmp_path):
  # The null row of the table gets gradients only from dropped labels; Adam leaves a row with none as it was.
  null = lambda params: np.asarray(params["label_embedding"]["embedding"][4])
  config, state = trained
  initial = null(Experiment(config, QUIET["devices"]).init_state().params)
  assert np.abs(null(state.params) - initial).max() > 1e-2
  config = conditional_toy(**{"training.label_dropout": 0.0, "training.n_iters": 20, "training.log_freq": 10})
  config.training.snapshot_freq = 20
  np.testing.assert_array_equal(null(train(config, str(tmp_path), **QUIET).params), initial)


# ----------------------------------------------------------------------------- refused configs


@pytest.mark.parametrize(
  "make, fields, expected",
  [
    (tiny_toy, {"model.num_classes": -1}, "model.num_classes must be a non-negative integer, got -1"),
    (tiny_toy, {"training.label_dropout": 1.0}, "training.label_dropout must be a finite number in [0, 1)"),
    (tiny_toy, {"sampling.guidance_scale": -1.0}, "sampling.guidance_scale must be a finite number >= 0"),
    (tiny_toy, {"sampling.class_label": 2}, "sampling.class_label=2 needs a class-conditional model"),
    (
      tiny_toy,
      {"model.num_classes": 4, "sampling.class_label": 4},
      "sampling.class_label must be an integer in [-2, 3], got 4",
    ),
    (
      tiny_digits,
      {"model.name": "ncsn", "model.num_classes": 10},
      "model.name='ncsn' takes no class labels (model.num_classes=10); class-conditional networks: mlp, ncsn_small",
    ),
  ],
)
def test_conditioning_fields_out_of_their_domain_are_one_line(make, fields, expected):
  with pytest.raises(UserError) as error:
    validate_config(make(**fields), 1)
  assert str(error.value).startswith(expected), str(error.value)


@pytest.mark.parametrize(
  "fields, expected",
  [
    ({"model.num_classes": 3}, "model.num_classes=3, but data.dataset='gmm' has 4 classes; set model.num_classes=4"),
    (
      {"model.num_classes": 4, "data.dataset": "moons"},
      "model.num_classes=4, but data.dataset='moons' has no class labels; set model.num_classes=0",
    ),
  ],
)
def test_a_conditional_model_needs_the_classes_of_its_data(fields, expected):
  with pytest.raises(UserError, match=expected):
    Experiment(tiny_toy(**fields))
