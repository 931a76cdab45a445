"""The published DDPM variant trains: its discrete loss at batch 128, over every level (issue 11)."""

import jax
import numpy as np
import pytest
from PIL import Image

from scorejax.configs import folder
from scorejax.run.experiment import Experiment
from scorejax.run.train import make_train_step

from helpers import override

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`


def test_vp_ddpm_trains_200_steps_at_batch_128_with_a_finite_loss(tmp_path):
  """The discrete DDPM loss draws every one of its 1000 levels here (25,600 draws), level 0 included,
  which used to land on t = 0, where the VP noise is zero and the conditioning log sigma = -inf. The DDPM
  normalises with 32 groups (score_sde's), so it is 32 channels wide at least: the images, CIFAR-10's size
  written to a folder, are read at 4x4 (configs/folder.py: the same variant) to keep the steps as cheap."""
  rng = np.random.default_rng(2)
  for i in range(192):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  config = override(
    folder.get_config("vp_ddpm"),
    **{
      "data.root": str(tmp_path),
      "data.image_size": 4,
      "training.batch_size": 128,
      "model.nf": 32,
      "model.ch_mult": (1, 2),
      "model.num_res_blocks": 1,
      "model.attn_resolutions": (),
      "optim.warmup": 20,
    },
  )
  exp = Experiment(config, devices=jax.devices()[:1])
  state = exp.init_state()
  train = exp.dataset.train
  step = make_train_step(exp)
  losses = []
  for i in range(200):
    batch = train[np.random.default_rng([3, i]).choice(len(train), 128, replace=False)]
    state, loss = step(state, batch[None])
    losses.append(loss)
  losses = np.concatenate([np.asarray(v) for v in losses])
  assert int(state.nan_step) == -1 and np.all(np.isfinite(losses)), np.flatnonzero(~np.isfinite(losses))
  assert np.mean(losses[-20:]) < np.mean(losses[:20])  # it learns
