"""Guidance as a user runs it: a classifier of noisy inputs trained through the training loop guides a score
model's samples to the class asked for, from Python and from the command line, and so does classifier-free
guidance. Inpainting and colorization as a user runs them: test_run_inpaint.py."""

import os

import jax
import numpy as np
import pytest

from scorejax.datasets.toy2d import GMM_MEANS
from scorejax.run.classifier import attach_classifier, classifier_accuracy
from scorejax.run.errors import UserError
from scorejax.run.experiment import Experiment
from scorejax.run.sample import sample
from scorejax.run.train import train
from scorejax.run.validate import validate_config

from helpers import mixture_classes_run, override, run_main

# One device: no collectives, whose rendezvous XLA:CPU aborts after 40 s when the two cores are busy elsewhere.
QUIET = dict(print_fn=lambda *a: None, devices=jax.devices()[:1])


def nearest_component(x):
  return np.argmin(((x[:, None, :] - GMM_MEANS[None]) ** 2).sum(-1), axis=1)


def mixture_run(**fields):
  """A continuous VP run on the four-component mixture (components = classes), 1000 steps of an MLP."""
  return mixture_classes_run(**{"sampling.num_samples": 1000, "sampling.batch_size": 1000, **fields})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An unconditional score model and a classifier of noisy inputs, trained on the mixture."""
  score_dir, classifier_dir = (str(tmp_path_factory.mktemp(name)) for name in ("score", "classifier"))
  train(mixture_run(), score_dir, **QUIET)
  classifier = mixture_run(**{"model.name": "classifier_mlp", "model.num_classes": 4})
  state = train(classifier, classifier_dir, **QUIET)
  return score_dir, classifier_dir, classifier, state


@pytest.mark.slow
def test_the_classifier_of_noisy_inputs_learns_the_classes_where_the_noise_leaves_them_apart(runs):
  # Components 4 apart with standard deviations 0.3-0.6: at sigma = 0.1 the classes barely overlap (the
  # Bayes classifier is right 99.3% of the time); at sigma = 3 most of what tells them apart is gone.
  _, _, config, state = runs
  accuracy = classifier_accuracy(Experiment(config), state.ema_params)
  assert accuracy["accuracy_sigma_0.1"] > 0.97 and accuracy["accuracy_sigma_3"] < 0.8, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("label", [0, 3])
def test_classifier_guidance_samples_the_class_asked_for(runs, label):
  score_dir, classifier_dir, _, _ = runs
  config = mixture_run(**{"sampling.classifier_workdir": classifier_dir, "sampling.class_label": label})
  x = sample(config, score_dir, **QUIET)
  share = np.mean(nearest_component(x) == label)  # measured 0.98-0.99 at the default scale, 1 here
  assert share > 0.9, np.bincount(nearest_component(x), minlength=4) / len(x)


@pytest.mark.slow
def test_classifier_guidance_from_the_command_line(runs):
  score_dir, classifier_dir, _, _ = runs
  args = [f"--workdir={score_dir}", f"--config.sampling.classifier_workdir={classifier_dir}"]
  result = run_main("--mode=sample", *args, "--config.sampling.class_label=2", "--config.sampling.guidance_scale=2")
  assert result.returncode == 0, result.stderr
  written = np.load(os.path.join(score_dir, "samples", "samples_1000.npz"))
  assert np.all(written["labels"] == 2) and np.mean(nearest_component(written["samples"]) == 2) > 0.9


@pytest.mark.slow
def test_a_classifier_run_refuses_to_be_sampled_and_a_score_run_to_guide(runs, tmp_path):
  score_dir, classifier_dir, _, _ = runs
  with pytest.raises(UserError, match="is a classifier of noisy inputs, not a score model"):
    sample(mixture_run(**{"model.name": "classifier_mlp", "model.num_classes": 4}), classifier_dir, **QUIET)
  with pytest.raises(UserError, match="holds model.name='mlp', not a classifier"):
    sample(mixture_run(**{"sampling.classifier_workdir": score_dir, "sampling.class_label": 1}), score_dir, **QUIET)
  with pytest.raises(UserError, match="holds no trained run"):
    sample(mixture_run(**{"sampling.classifier_workdir": str(tmp_path), "sampling.class_label": 1}), score_dir, **QUIET)
  # A classifier of VP-noised inputs cannot guide a VE model: p_t(y | x_t) is of other inputs.
  ve_dir = str(tmp_path / "ve")
  ve = mixture_run(**{"training.sde": "vesde", "training.n_iters": 10, "training.snapshot_freq": 10})
  train(ve, ve_dir, **QUIET)
  with pytest.raises(UserError, match="trained for another SDE or data"):
    sample(override(ve, **{"sampling.classifier_workdir": classifier_dir, "sampling.class_label": 1}), ve_dir, **QUIET)


@pytest.mark.slow
def test_the_default_scale_of_classifier_guidance_is_the_one_saved_with_the_classifier(runs, tmp_path):
  # A learned classifier is weaker than the exact one and its run carries the scale that suits it
  # (configs/digits_classifier.py: 8); a scale given for the sampling wins; unguided and classifier-free
  # sampling take w = 1.
  score_dir, _, _, _ = runs
  classifier_dir = str(tmp_path)
  few_steps = {"training.n_iters": 10, "training.snapshot_freq": 10, "sampling.guidance_scale": 8.0}
  train(mixture_run(**{"model.name": "classifier_mlp", "model.num_classes": 4, **few_steps}), classifier_dir, **QUIET)
  guided = {"sampling.classifier_workdir": classifier_dir, "sampling.class_label": 1}
  for fields, scale in [({}, 8.0), ({"sampling.guidance_scale": 0.5}, 0.5)]:
    exp = Experiment(mixture_run(**guided, **fields), QUIET["devices"])
    attach_classifier(exp, classifier_dir, QUIET["devices"])
    assert exp.guidance_scale == scale
  assert Experiment(mixture_run(**{"model.num_classes": 4}), QUIET["devices"]).guidance_scale == 1.0


@pytest.mark.slow
def test_classifier_free_guidance_from_the_command_line(tmp_path):
  workdir = str(tmp_path)
  train(mixture_run(**{"model.num_classes": 4}), workdir, **QUIET)
  result = run_main(
    "--mode=sample", f"--workdir={workdir}", "--config.sampling.class_label=3", "--config.sampling.guidance_scale=2"
  )
  assert result.returncode == 0, result.stderr
  written = np.load(os.path.join(workdir, "samples", "samples_1000.npz"))
  assert np.all(written["labels"] == 3) and np.mean(nearest_component(written["samples"]) == 3) > 0.9


def test_the_shipped_classifier_config_is_a_classifier_of_the_default_digits_model():
  from scorejax.configs import digits, digits_classifier
  from scorejax.run.classifier import _sde_and_data

  for variant in ("", "ncsn"):  # the default's classifier, and configs/digits.py:ncsn's
    config = digits_classifier.get_config(variant)
    validate_config(config, 1)
    assert config.model.name == "classifier_conv"
    assert _sde_and_data(config) == _sde_and_data(digits.get_config(variant))
  assert _sde_and_data(digits_classifier.get_config()) != _sde_and_data(digits.get_config("ncsn"))
