"""Networks, the score wrapper, and the data layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import datasets, models, sde_lib
from scorejax.datasets.loader import batch_indices
from scorejax.datasets.toy2d import empirical_score, gmm_log_prob, gmm_score

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


def test_digits_are_the_real_dataset():
  raw, labels = datasets.digits.load_digits_raw()
  assert raw.shape == (1797, 8, 8) and raw.min() == 0 and raw.max() == 16
  assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
  ds = datasets.get_dataset("digits")
  assert ds.train.shape == (1600, 8, 8, 1) and ds.test.shape == (197, 8, 8, 1)
  assert ds.train.dtype == np.uint8 and ds.max_value == 16 and ds.train.max() == 16
  x = ds.model_space(ds.train)
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_allclose(ds.model_space(ds.train, centered=True), 2 * x - 1)


def test_training_batches_are_scaled_flipped_and_dequantized_on_device():
  k = np.arange(2 * 2 * 3 * 1, dtype=np.uint8).reshape(2, 2, 3, 1) * 20  # pixel counts 0..220
  plain = datasets.preprocess_batch(jnp.asarray(k), jax.random.key(0), 255)
  np.testing.assert_allclose(plain, k / 255.0, rtol=1e-6)
  centered = datasets.preprocess_batch(jnp.asarray(k), jax.random.key(0), 255, centered=True)
  np.testing.assert_allclose(centered, 2 * (k / 255.0) - 1, rtol=1e-6, atol=1e-6)
  # Dequantized: each pixel lies in its own bin [k, k + 1) / 256, and the bins are filled uniformly.
  big = jnp.asarray(np.repeat(k, 2000, axis=0))
  deq = np.asarray(datasets.preprocess_batch(big, jax.random.key(1), 255, uniform_dequantization=True))
  u = deq * 256 - np.asarray(big, np.float64)
  assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
  # Flips: every image is either itself or its mirror, and about half are mirrored.
  flipped = np.asarray(datasets.preprocess_batch(big, jax.random.key(2), 255, random_flip=True))
  same = np.all(np.isclose(flipped, np.asarray(big) / 255.0), axis=(1, 2, 3))
  mirror = np.all(np.isclose(flipped, np.asarray(big)[:, :, ::-1] / 255.0), axis=(1, 2, 3))
  assert np.all(same | mirror) and 0.45 < mirror.mean() < 0.55


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
  parts = [
    datasets.BatchLoader(data, 8, seed=0, start_step=5, steps_per_call=2, process_index=p, process_count=2)
    for p in range(2)
  ]
  try:
    whole = next(full)
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
    np.testing.assert_array_equal(whole[1], data[batch_indices(6, 40, 8, 0)])
  finally:
    for loader in [full] + parts:
      loader.close()
