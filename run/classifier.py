"""A classifier of noisy inputs for classifier guidance: loaded from its own run to guide a score model's
samples, and its accuracy on held-out data at several noise levels."""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import losses, models
from scorejax.configs.default import get_default_config
from scorejax.run.builders import build_sde, data_shape
from scorejax.run.errors import UserError
from scorejax.run.experiment import EVAL, Experiment, seed_key
from scorejax.run.restore import restore_for_inference
from scorejax.run.saved_config import resolve_config

ACCURACY_NOISE_LEVELS = (0.1, 0.3, 1.0, 3.0)  # noise levels sigma (in x / m(t)) at which accuracy is reported


def _sde_and_data(config):
  """What a classifier and the score model it guides must share: the SDE with its noise range, and the data."""
  sde = build_sde(config)
  sde_fields = {k: v for k, v in vars(sde).items() if k != "N"}  # any number of levels: t is continuous
  return type(sde).__name__, sde_fields, config.data.dataset, data_shape(config), config.data.centered


def attach_classifier(exp, workdir, devices=None):
  """Load the classifier trained in `workdir` (its saved config, the EMA parameters of its newest checkpoint)
  and let it guide `exp`'s class-conditional samples (`Experiment.use_classifier`). A `UserError` if the run
  holds no classifier, or one of another SDE or other data."""
  found = []  # resolve_config says when it takes the config saved in the workdir
  config = resolve_config(get_default_config(), workdir, False, "sample", argv=[], print_fn=found.append)
  if not found:
    raise UserError(f"sampling.classifier_workdir={workdir!r} holds no trained run (no saved config)")
  if not models.classifier.is_classifier(models.get_model_class(config.model.name)):
    raise UserError(f"sampling.classifier_workdir={workdir!r} holds model.name={config.model.name!r}, not a classifier")
  if _sde_and_data(config) != _sde_and_data(exp.config):
    raise UserError(
      f"the classifier in {workdir} was trained for another SDE or data ({_sde_and_data(config)}) than this model "
      f"({_sde_and_data(exp.config)}): guidance needs p_t(y | x_t) of this model's own noisy inputs"
    )
  classifier = Experiment(config, devices)
  state = restore_for_inference(classifier, workdir)
  exp.use_classifier(
    classifier.logits_fn, state.ema_params, classifier.num_classes, config.sampling.get("guidance_scale")
  )
  return classifier, state


def classifier_accuracy(exp, params, noise_levels=ACCURACY_NOISE_LEVELS, num=None):
  """`{f"accuracy_sigma_{sigma:g}": ...}`: the fraction of the test split, noised to each noise level `sigma`
  by the SDE's kernel, that the classifier `exp` with `params` labels correctly."""
  test = exp.dataset.test if num is None else exp.dataset.test[:num]
  x = jnp.asarray(exp.model_space(test))
  labels = jnp.asarray(exp.dataset.test_labels[: len(test)])
  rng = seed_key(exp.config, EVAL)
  accuracy = jax.jit(lambda params, t, key: losses.accuracy_at_time(exp.logits_fn(params), x, labels, key, exp.sde, t))
  times = np.asarray(exp.sde.time_of_noise_level(np.asarray(noise_levels, np.float64), xp=np))
  return {
    f"accuracy_sigma_{sigma:g}": float(accuracy(params, float(t), jax.random.fold_in(rng, i)))
    for i, (sigma, t) in enumerate(zip(noise_levels, times))
  }
