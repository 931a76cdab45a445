"""Networks by name (`model.name`), and the wrapper that turns a network into `score_fn`: what it feeds the network
(`c_noise = log(std / m)`) and how it reads its output (a score, a scaled score or a noise prediction)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import models, sde_lib

from helpers import SDE_NAMES, make_sde


@pytest.mark.parametrize("name,shape", [("mlp", (2,)), ("ncsn_small", (8, 8, 1))])
def test_networks_map_data_to_data_shape(name, shape):
  kwargs = dict(nf=8, num_layers=2) if name == "mlp" else dict(nf=8, ch_mult=(1, 2), num_res_blocks=1)
  model = models.get_model(name, **kwargs)
  params = models.init_params(model, jax.random.key(0), shape)
  x = jnp.ones((3,) + shape)
  sde = sde_lib.VESDE(0.01, 10.0, N=100)
  out = jax.jit(lambda p, x, t: models.get_score_fn(model, p, sde)(x, t))(params, x, jnp.array([0.1, 0.5, 1.0]))
  assert out.shape == x.shape


class _Echo:
  """A stand-in network whose output is `x * c_noise`: shows what the wrapper feeds and divides."""

  def apply(self, variables, x, c_noise, train=False, rngs=None):
    return x * c_noise[:, None]


@pytest.mark.parametrize(
  "sde",
  [make_sde(name, 100, sigma_max=10.0) for name in SDE_NAMES],
  ids=list(SDE_NAMES),
)
def test_score_wrapper_forms(sde):
  """c_noise = log(std / m); score = out / std with scale_by_sigma; score = -out / std for noise prediction."""
  x, t = jnp.ones((2, 3)), jnp.array([0.3, 0.9])
  m, std = sde.marginal_prob(jnp.ones((2, 1)), t)
  m, std = m[:, 0], std
  out = x * jnp.log(std / m)[:, None]
  np.testing.assert_allclose(models.get_score_fn(_Echo(), None, sde)(x, t), out, rtol=1e-6)
  np.testing.assert_allclose(
    models.get_score_fn(_Echo(), None, sde, scale_by_sigma=True)(x, t), out / std[:, None], rtol=1e-6
  )
  np.testing.assert_allclose(
    models.get_score_fn(_Echo(), None, sde, prediction="noise")(x, t), -out / std[:, None], rtol=1e-6
  )
  with pytest.raises(ValueError, match="valid choices: score, noise"):
    models.get_score_fn(_Echo(), None, sde, prediction="eps")


def test_unknown_model_lists_choices():
  with pytest.raises(ValueError, match="unknown model.name 'unet9000'; valid choices: .*mlp, .*ncsn_small"):
    models.get_model("unet9000")
