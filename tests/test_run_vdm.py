"""`training.loss='vdm'` through the run layer: VDM's bound (losses/vdm.py) trains a score model over its SDE's
schedule, with the discrete decoder over the data's levels, which the config gives without loading the data."""

import json
import os

import jax
import numpy as np
import pytest

from scorejax import datasets
from scorejax.losses.vdm import level_grid, score_denoiser, vdm_loss
from scorejax.run.builders import data_levels
from scorejax.run.experiment import TRAIN, Experiment, seed_key
from scorejax.run.train import train

from helpers import tiny_digits, tiny_toy

quiet = lambda *a, **k: None


def test_the_levels_of_the_data_come_from_the_config_without_loading_it():
  assert [data_levels(c) for c in (tiny_digits(), tiny_toy())] == [17, 0]
  assert datasets.dataset_levels("cifar10") == datasets.dataset_levels("folder") == 256


@pytest.mark.slow
def test_digits_train_on_the_bound_with_the_discrete_decoder(tmp_path):
  config = tiny_digits(
    **{
      "training.loss": "vdm",
      "training.n_iters": 60,
      "training.log_freq": 1,
      "training.snapshot_freq": 60,
      "training.snapshot_sampling": False,
    }
  )
  train(config, str(tmp_path), devices=jax.devices()[:1], print_fn=quiet)
  losses = [json.loads(line)["loss"] for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert len(losses) == 60 and np.all(np.isfinite(losses))
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  assert last < 0.85 * first, (first, last)

  # The logged loss of step 0 is the bound of batch 0 at the initial parameters, computed here from its parts: the
  # digits' 17 levels in [0, 1], the VE SDE's schedule over [training.eps, 1], the loss's key of step 0.
  exp = Experiment(config, jax.devices()[:1])
  params = exp.init_state().params
  counts = exp.dataset.train[datasets.batch_indices(0, len(exp.dataset.train), 16, config.seed)]
  x = counts.astype(np.float32) / 16
  key = jax.random.fold_in(jax.random.fold_in(seed_key(config, TRAIN), 0), 0)
  denoiser = score_denoiser(exp.score_fn(params), exp.sde, config.training.eps)
  by_hand = {g: float(vdm_loss(denoiser, x, key, None if g is None else level_grid(g))) for g in (17, 256, None)}
  np.testing.assert_allclose(losses[0], by_hand[17], rtol=1e-5)
  assert min(abs(by_hand[g] - losses[0]) for g in (256, None)) > 0.1, (losses[0], by_hand)
