"""The published DDPM variant's discrete loss is finite at every one of its levels (issue 11); its train
step runs in tests/test_configs_cifar.py::test_variant_trains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from scorejax import losses
from scorejax.configs import folder
from scorejax.run.experiment import Experiment

from helpers import override

pytestmark = pytest.mark.slow  # end to end: left out by `-m "not slow"`


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  """The DDPM normalises with 32 groups (score_sde's), so it is 32 channels wide at least: the images,
  CIFAR-10's size written to a folder, are read at 4x4 (configs/folder.py: the same variant) to keep the
  steps cheap."""
  folder_path = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(2)
  for i in range(192):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder_path / f"{i}.png")
  config = override(
    folder.get_config("vp_ddpm"),
    **{
      "data.root": str(folder_path),
      "data.image_size": 4,
      "model.nf": 32,
      "model.ch_mult": (1, 2),
      "model.num_res_blocks": 1,
      "model.attn_resolutions": (),
    },
  )
  return Experiment(config, devices=jax.devices()[:1])


def test_every_one_of_the_1000_levels_gives_a_finite_loss_and_gradient(experiment):
  """Every level of the discrete DDPM loss, passed explicitly, one example each (level 0 used to land on
  t = 0, where the VP noise is zero and the conditioning log sigma = -inf): the loss summed over the levels
  and its gradient are finite, which they are only if every level's are (a NaN or inf anywhere stays)."""
  exp = experiment
  assert exp.sde.N == 1000
  x = jnp.asarray(exp.model_space(exp.dataset.train[np.arange(1000) % len(exp.dataset.train)]))

  @jax.jit
  def loss_and_grad(params):
    loss = lambda p: losses.level_dsm_loss(exp.score_fn(p), x, jax.random.key(0), exp.sde, jnp.arange(1000), True)
    return jax.value_and_grad(loss)(params)

  loss, grads = loss_and_grad(exp.init_state().params)
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
