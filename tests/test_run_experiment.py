"""The experiment (`Experiment`) of a class-conditional model, for classifier-free guidance: label dropout trains the
null label, a network trained this way on the mixture samples the class asked for, `sampling.class_label=-2`
samples every class in turn, and conditioning fields out of their domain are one line. The label embedding
itself: test_models_layers.py."""

import jax
import numpy as np
import pytest

from scorejax.datasets.toy2d import GMM_MEANS
from scorejax.run.errors import UserError
from scorejax.run.experiment import Experiment
from scorejax.run.train import train
from scorejax.run.validate import validate_config

from helpers import mixture_classes_run, override, tiny_digits, tiny_toy

# One device: no collectives, whose rendezvous XLA:CPU aborts after 40 s when the two cores are busy elsewhere.
QUIET = dict(print_fn=lambda *a: None, devices=jax.devices()[:1])


# ----------------------------------------------------------------------------- trained on the mixture


def conditional_toy(**fields):
  """A class-conditional MLP on the four-component mixture, whose components are the classes."""
  return mixture_classes_run(**{"model.num_classes": 4, **fields})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = conditional_toy()
  return config, train(config, str(tmp_path_factory.mktemp("conditional")), **QUIET)


@pytest.mark.slow
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


@pytest.mark.slow
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
  exp = Experiment(tiny_toy(**fields))  # sampling needs no data: the classes are checked when the data is read
  with pytest.raises(UserError, match=expected):
    _ = exp.dataset


def test_class_label_minus_two_samples_every_class_in_turn():
  exp = Experiment(tiny_toy(**{"model.num_classes": 4, "sampling.class_label": -2}), devices=jax.devices()[:1])
  np.testing.assert_array_equal(exp.sample_labels(10), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
