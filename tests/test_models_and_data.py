"""Networks, the score wrapper, and the data layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets
import models
from datasets.loader import batch_indices
from datasets.toy2d import gmm_log_prob, gmm_score
from run_lib import empirical_score


@pytest.mark.parametrize("name,shape", [("mlp", (2,)), ("ncsn_small", (8, 8, 1))])
def test_networks_map_data_to_data_shape(name, shape):
  kwargs = dict(nf=8, num_layers=2) if name == "mlp" else dict(nf=8, ch_mult=(1, 2), num_res_blocks=1)
  model = models.get_model(name, **kwargs)
  params = models.init_params(model, jax.random.key(0), shape)
  x = jnp.ones((3,) + shape)
  out = jax.jit(lambda p, x, s: models.get_score_fn(model, p)(x, s))(params, x, jnp.array([0.1, 1.0, 10.0]))
  assert out.shape == x.shape


def test_score_wrapper_forms():
  """score = out / sigma with scale_by_sigma; score = -out / sigma for noise prediction."""
  class Fixed:
    def apply(self, variables, x, sigma):
      return x * 2.0
  x, sigma = jnp.ones((2, 3)), jnp.array([0.5, 2.0])
  np.testing.assert_allclose(models.get_score_fn(Fixed(), None)(x, sigma), 2 * x)
  np.testing.assert_allclose(models.get_score_fn(Fixed(), None, scale_by_sigma=True)(x, sigma),
                             2 * x / sigma[:, None])
  np.testing.assert_allclose(models.get_score_fn(Fixed(), None, prediction="noise")(x, sigma),
                             -2 * x / sigma[:, None])
  with pytest.raises(ValueError, match="valid choices: score, noise"):
    models.get_score_fn(Fixed(), None, prediction="eps")


def test_unknown_model_lists_choices():
  with pytest.raises(ValueError, match="valid choices: mlp, ncsn_small"):
    models.get_model("unet9000")


def test_digits_are_the_real_dataset():
  raw, labels = datasets.digits.load_digits_raw()
  assert raw.shape == (1797, 8, 8) and raw.min() == 0 and raw.max() == 16
  assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
  ds = datasets.get_dataset("digits")
  assert ds.train.shape == (1600, 8, 8, 1) and ds.test.shape == (197, 8, 8, 1)
  assert ds.train.min() == 0.0 and ds.train.max() == 1.0
  centered = datasets.get_dataset("digits", centered=True)
  np.testing.assert_allclose(centered.train, 2 * ds.train - 1)


def test_gmm_score_is_the_gradient_of_its_log_density():
  x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
  sigma = jnp.linspace(0.01, 3.0, 64)
  autodiff = jax.vmap(jax.grad(lambda xi, s: gmm_log_prob(xi[None], s)[0]))(x, sigma)
  np.testing.assert_allclose(gmm_score(x, sigma), autodiff, rtol=1e-4, atol=1e-4)


def test_empirical_score_of_one_point_is_the_gaussian_score():
  point = np.array([[1.0, -2.0]], np.float32)
  x = jax.random.normal(jax.random.key(1), (16, 2))
  sigma = jnp.full((16,), 0.7)
  np.testing.assert_allclose(empirical_score(point)(x, sigma), -(x - point) / 0.49, rtol=1e-5)


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch():
  n, bs = 100, 10
  epoch = np.concatenate([batch_indices(s, n, bs, seed=3) for s in range(10)])
  assert sorted(epoch.tolist()) == list(range(n))
  np.testing.assert_array_equal(batch_indices(7, n, bs, 3), batch_indices(7, n, bs, 3))
  assert not np.array_equal(batch_indices(10, n, bs, 3), batch_indices(0, n, bs, 3))  # new epoch, new order


def test_processes_read_disjoint_slices_of_the_same_global_batch():
  data = np.arange(40, dtype=np.float32)[:, None]
  full = datasets.BatchLoader(data, 8, seed=0, start_step=5, steps_per_call=2)
  parts = [datasets.BatchLoader(data, 8, seed=0, start_step=5, steps_per_call=2,
                                process_index=p, process_count=2) for p in range(2)]
  try:
    whole = next(full)
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
    np.testing.assert_array_equal(whole[1], data[batch_indices(6, 40, 8, 0)])
  finally:
    for loader in [full] + parts:
      loader.close()
