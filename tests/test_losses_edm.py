"""The EDM formulation (Karras et al. 2022) in this code: the preconditioned denoiser of `model.prediction='edm'`
and the EDM loss (`training.loss='edm'`), proven on Gaussian and Gaussian-mixture data, whose ideal denoiser
`E[y | y + sigma n]` is closed-form, then trained end to end on the 2D mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax import losses, models
from scorejax.datasets.toy2d import GMM_MEANS, GMM_STDS, GMM_WEIGHTS, gmm_sde_score, sample_gmm
from scorejax.run.errors import UserError
from scorejax.run.evaluate import evaluate
from scorejax.run.train import train
from scorejax.run.validate import validate_config

from helpers import SDE_NAMES, make_sde, tiny_toy

quiet = lambda *a, **k: None
SDES = {name: make_sde(name, 100, sigma_max=50.0) for name in SDE_NAMES}
P_MEAN, P_STD = -1.2, 1.2  # EDM's Table 1 (configs/default.py)
# The mixture's mean and per-dimension standard deviation: Var = sum_k w_k (mu_k^2 + s_k^2) - mean^2.
MIXTURE_MEAN = GMM_WEIGHTS @ GMM_MEANS
MIXTURE_STD = np.sqrt(GMM_WEIGHTS @ (GMM_MEANS**2 + GMM_STDS[:, None] ** 2) - MIXTURE_MEAN**2)  # (2.02, 1.90)
GAUSSIAN = (np.array([[0.3, -0.2]], np.float32), np.array([0.7], np.float32), np.array([1.0], np.float32))
MIXTURE = (GMM_MEANS, GMM_STDS, GMM_WEIGHTS)


def posterior(x, sigma, means, stds, weights, xp=np):
  """For `y ~ sum_k w_k N(mu_k, s_k^2 I)` and `x = y + sigma n`: the responsibilities `r_k(x)`, the components'
  posterior means `mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)` and variances `s_k^2 sigma^2 / (s_k^2 + sigma^2)`.
  `x`: `(batch, d)`, `sigma`: `(batch,)`."""
  var = xp.square(stds)[None] + xp.square(sigma)[:, None]  # (batch, K): Var[x | k]
  diff = x[:, None, :] - means[None]  # (batch, K, d)
  log_r = xp.log(weights)[None] - 0.5 * xp.sum(xp.square(diff), -1) / var - 0.5 * x.shape[-1] * xp.log(var)
  r = xp.exp(log_r - xp.max(log_r, axis=1, keepdims=True))
  r = r / xp.sum(r, axis=1, keepdims=True)
  gain = xp.square(stds)[None] / var
  return r, means[None] + gain[..., None] * diff, gain * xp.square(sigma)[:, None]


def ideal_denoiser_step(x, sigma, data, xp=np):
  """`D(x; sigma) - x = sum_k r_k(x) sigma^2 (mu_k - x) / (s_k^2 + sigma^2)`: the denoiser's move, computed as such
  rather than as a difference, for it is `O(sigma^2)` and float32 loses it against `x` at small sigma."""
  means, stds, _ = data
  r, _, _ = posterior(x, sigma, *data, xp=xp)
  shrink = xp.square(sigma)[:, None] / (xp.square(stds)[None] + xp.square(sigma)[:, None])  # (batch, K)
  return xp.sum((r * shrink)[..., None] * (means[None] - x[:, None, :]), axis=1)


def lognormal_expectation(f, num_nodes=60):
  """`E f(sigma)`, `ln sigma ~ N(P_MEAN, P_STD^2)`, by Gauss-Hermite quadrature:
  `sum_i w_i f(exp(P_MEAN + sqrt(2) P_STD z_i)) / sqrt(pi)`."""
  z, w = np.polynomial.hermite.hermgauss(num_nodes)
  return sum(wi * f(np.exp(P_MEAN + np.sqrt(2.0) * P_STD * zi)) for zi, wi in zip(z, w)) / np.sqrt(np.pi)


def expected_posterior_variance(sigma, data, num_nodes=40):
  """`E_x tr Var[y | x] / d` at noise `sigma`: given the component `k`, `x ~ N(mu_k, (s_k^2 + sigma^2) I)`, a 2D
  Gauss-Hermite rule per component; `tr Var[y | x] = sum_j r_j (d v_j + ||m_j||^2) - ||sum_j r_j m_j||^2`."""
  means, stds, weights = (np.asarray(a, np.float64) for a in data)
  z, w = np.polynomial.hermite.hermgauss(num_nodes)
  grid = np.sqrt(2.0) * np.stack(np.meshgrid(z, z), -1).reshape(-1, 2)
  grid_w = np.outer(w, w).reshape(-1) / np.pi
  total, d = 0.0, means.shape[1]
  for mu, s, wk in zip(means, stds, weights):
    x = mu + np.sqrt(s**2 + sigma**2) * grid
    r, m, v = posterior(x, np.full(len(x), sigma), means, stds, weights)
    second = np.sum(r * (d * v + np.sum(m**2, -1)), 1)
    first = np.sum(r[..., None] * m, 1)
    total += wk * grid_w @ (second - np.sum(first**2, -1))
  return total / d


def loss_minimum(data, sigma_data):
  """The EDM loss of the ideal denoiser: `E_sigma lambda(sigma) E_x tr Var[y | x] / d`."""
  weight = lambda s: (s**2 + sigma_data**2) / (s * sigma_data) ** 2
  return lognormal_expectation(lambda s: weight(s) * expected_posterior_variance(s, data))


def monte_carlo_loss(score_fn, sde, data, sigma_data, batches=50, batch=4_000):
  """`losses.edm_loss` on `batches` batches of `data`'s samples, each with its own key: the `(batches,)` values,
  the same draws whatever `score_fn`."""
  loss = jax.jit(lambda y, key: losses.edm_loss(score_fn, y, key, sde, P_MEAN, P_STD, sigma_data, True))
  rng = np.random.default_rng(0)
  return np.array([float(loss(sample_gmm(rng, batch, *data), jax.random.key(i))) for i in range(batches)])


def mean_and_error(values):
  return np.mean(values), np.std(values, ddof=1) / np.sqrt(len(values))


@pytest.mark.parametrize("name, data", [("gaussian", GAUSSIAN), ("mixture", MIXTURE)])
@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_the_edm_loss_of_the_ideal_denoiser_is_the_weighted_posterior_variance(name, data, sde_name):
  """At the exact score, `D = x + sigma^2 s = E[y | x]`, so the loss is its minimum; with every mixture width
  1.5 times too large, the denoiser is wrong and the loss, on the same draws, lies above it by far more than
  the error of the difference."""
  sde, sigma_data = SDES[sde_name], 0.5
  exact = loss_minimum(data, sigma_data)
  if name == "gaussian":  # one dimension's posterior variance s^2 sigma^2 / (s^2 + sigma^2), in closed form
    s2 = float(data[1][0]) ** 2
    closed = lognormal_expectation(lambda s: (s**2 + sigma_data**2) / (s * sigma_data) ** 2 * s2 * s**2 / (s2 + s**2))
    np.testing.assert_allclose(exact, closed, rtol=1e-10)
  values = monte_carlo_loss(gmm_sde_score(sde, *data), sde, data, sigma_data)
  mean, stderr = mean_and_error(values)
  # 200k draws of sigma: the standard error is 0.3-0.5% of the loss; 4 standard errors is a 1-in-15000 miss.
  assert stderr < 0.01 * exact and abs(mean - exact) < 4 * stderr, (mean, exact, stderr)
  means, stds, weights = data
  wrong = monte_carlo_loss(gmm_sde_score(sde, means, 1.5 * stds, weights), sde, data, sigma_data)
  excess, excess_error = mean_and_error(wrong - values)  # on the same draws: the difference is the denoiser's
  assert excess > 10 * excess_error, (excess, excess_error)


def test_gaussian_data_of_std_sigma_data_has_unit_loss_at_every_noise_level():
  """EDM's weighting: `lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2) = 1` when `s = sigma_d`."""
  sigma = np.geomspace(1e-3, 1e3, 13)
  s = 0.5
  np.testing.assert_allclose(losses.edm_weight(sigma, s) * s**2 * sigma**2 / (s**2 + sigma**2), 1.0, rtol=1e-5)


# The noise level from each preconditioning's `c_noise`: `ln(sigma) / 4`, `ln(sigma / 2)`, and `999 t` of EDM's
# VP schedule, `sigma = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)` (VPPrecond's beta_d = 19.9, beta_min = 0.1).
SIGMA_OF_C_NOISE = {
  "edm": lambda c: jnp.exp(4.0 * c),
  "edm_ve": lambda c: 2.0 * jnp.exp(c),
  "edm_vp": lambda c: jnp.sqrt(jnp.expm1(0.5 * 19.9 * jnp.square(c / 999) + 0.1 * c / 999)),
}


class IdealNetwork:
  """A stand-in network whose raw output is the preconditioning's target: from its input `c_in x_hat` and
  `c_noise` it recovers `sigma` and `x_hat`, and returns `F = (D - c_skip x_hat) / c_out` for the ideal denoiser
  `D` of the mixture (`posterior`), so that the wrapper's `c_skip x_hat + c_out F` is `D`."""

  def __init__(self, prediction, sigma_data):
    self.conditioning = models.utils.PRECONDITIONING_CONDITIONING[prediction]  # what its c_noise is
    self.precondition = models.utils.PRECONDITIONINGS[prediction]
    self.sigma_of_c_noise, self.sigma_data = SIGMA_OF_C_NOISE[prediction], sigma_data

  def apply(self, variables, network_input, c_noise, train=False, rngs=None):
    sigma = self.sigma_of_c_noise(c_noise)
    c = self.precondition(sigma[:, None], self.sigma_data)
    x_hat = network_input / c.c_in
    # D - c_skip x_hat = (D - x_hat) + (1 - c_skip) x_hat, with 1 - c_skip = sigma^2 skip_deficit.
    step = ideal_denoiser_step(x_hat, sigma, MIXTURE, xp=jnp)
    return (step + jnp.square(sigma[:, None]) * c.skip_deficit * x_hat) / c.c_out


@pytest.mark.parametrize("prediction", ["edm", "edm_vp", "edm_ve"])
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_the_preconditioned_ideal_denoiser_gives_back_the_exact_score(sde_name, prediction):
  sde, sigma_data = SDES[sde_name], 0.5
  network = IdealNetwork(prediction, sigma_data)
  score_fn = models.get_score_fn(
    network, {}, sde, prediction=prediction, sigma_data=0.5, conditioning=network.conditioning
  )
  exact = gmm_sde_score(sde)
  y = jnp.asarray(sample_gmm(np.random.default_rng(1), 2_000))
  for i, t in enumerate(np.geomspace(1e-3, 1.0, 10)):
    t = jnp.full((len(y),), t, jnp.float32)
    mean, std = sde.marginal_prob(y, t)
    x = mean + std[:, None] * jax.random.normal(jax.random.key(i), y.shape)
    truth = exact(x, t)
    # Float32 round-off only: measured below 3e-12 at every time (sigma from 1e-4 to 50), each SDE and mode.
    relative = float(jnp.mean(jnp.square(score_fn(x, t) - truth)) / jnp.mean(jnp.square(truth)))
    assert relative < 1e-8, (float(t[0]), relative)


def test_the_training_target_has_unit_variance_at_every_noise_level():
  """`(y - c_skip x) / c_out` and the network input `c_in x`, `x = y + sigma n`, for the mixture standardised to
  `sigma_d` per dimension: variance 1 at every sigma (EDM App. B.6), measured on 200k draws to within 4 standard
  errors; preconditioned for `sigma_d = 1` instead, the same data's target drifts to a quarter at large sigma."""
  sigma_data, n = 0.5, 200_000
  rng = np.random.default_rng(2)
  y = (sample_gmm(rng, n) - MIXTURE_MEAN) / MIXTURE_STD * sigma_data
  noise = rng.standard_normal(y.shape).astype(np.float32)
  drift = []
  for sigma in np.geomspace(2e-3, 80.0, 9):
    x = y + sigma * noise
    for assumed in (sigma_data, 1.0):
      c_skip, c_out, c_in, _, _ = (float(c) for c in models.utils.edm_preconditioning(sigma, assumed))
      target = (y - c_skip * x) / c_out
      if assumed == sigma_data:
        for values in (target, c_in * x):
          second = np.mean(values**2, axis=1)
          stderr = np.std(second) / np.sqrt(n)
          assert abs(np.mean(second) - 1.0) < 4 * stderr and stderr < 0.01, (sigma, np.mean(second), stderr)
      else:
        drift.append(abs(np.mean(target**2) - 1.0))
  assert max(drift) > 0.5, drift


# Measured (600 steps, seed 42): max relative score error in sigma in [0.3, 3] 0.029 (VE) and 0.028 (VP), NLL
# 0.060 and 0.057 nats/dim above the truth, sliced Wasserstein 0.29 and 0.20; after 60 steps 0.90, 0.87, 0.95.
# EDM's VPPrecond with its label 999 t embedded as DDPM's time step: 0.048, 0.117, 0.21 (0.51 relative score
# error when the same label went through the log-sigma embedding).
@pytest.mark.slow
@pytest.mark.parametrize("sde, prediction", [("vesde", "edm"), ("vpsde", "edm"), ("vpsde", "edm_vp")])
def test_a_model_trained_with_the_edm_loss_learns_the_mixture_and_samples_it_in_35_steps(tmp_path, sde, prediction):
  """The tolerances of test_run_train.py's `test_a_trained_model_learns_the_mixture_score`, with the network
  preconditioned for the mixture's standard deviation (~2) (or as EDM's VP column), the EDM loss, and EDM's
  Heun sampler at 18 steps."""
  config = tiny_toy(
    **{
      "training.sde": sde,
      "training.n_iters": 600,
      "training.log_freq": 100,
      "training.snapshot_freq": 600,
      "training.batch_size": 256,
      "training.loss": "edm",
      "training.continuous": True,
      "data.num_train": 20_000,
      "model.nf": 64,
      "model.prediction": prediction,
      "model.conditioning": models.utils.PRECONDITIONING_CONDITIONING[prediction],
      "model.sigma_data": float(np.sqrt(np.mean(MIXTURE_STD**2))),
      "sampling.method": "edm",
      "sampling.num_steps": 18,
      "sampling.num_samples": 2_000,
      "sampling.batch_size": 2_000,
      "training.snapshot_sampling": False,
      "eval.enable_bpd": True,
      "eval.bpd_num_examples": 500,
    }
  )
  workdir = str(tmp_path)
  train(config, workdir, print_fn=quiet)
  result = evaluate(config, workdir, print_fn=quiet)
  mid = [v["score_relative_mse"] for s, v in result["per_sigma"].items() if 0.3 <= float(s) <= 3.0]
  assert mid and max(mid) < 0.1, result["per_sigma"]
  assert abs(result["nll_nats_per_dim"] - result["true_nll_nats_per_dim"]) < 0.15, result
  assert result["sliced_wasserstein"] < 0.35, result


EDM_LOSS = {"training.loss": "edm", "training.continuous": True}


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"training.loss": "nope"}, "unknown training.loss 'nope'; valid choices: edm, sde"),
    ({"training.loss": "edm"}, "training.loss='edm' trains at continuous noise levels: set training.continuous=True"),
    # The EDM loss checks its own fields (run/builders.py passes them).
    ({**EDM_LOSS, "training.p_std": 0.0}, "training.p_std must be a finite number > 0, got 0.0"),
    ({**EDM_LOSS, "training.p_mean": float("nan")}, "training.p_mean must be a finite number (any sign), got nan"),
    ({**EDM_LOSS, "model.sigma_data": -1.0}, "model.sigma_data must be a finite number > 0, got -1.0"),
    (
      {"model.prediction": "edm", "model.conditioning": "score_sde"},
      "model.prediction='edm' feeds the network its own c_noise; set model.conditioning='log_sigma'",
    ),
    (
      {"model.prediction": "edm_vp"},
      "model.prediction='edm_vp' feeds the network its own c_noise; set model.conditioning='score_sde'",
    ),
  ],
)
def test_bad_edm_fields_are_one_line_errors(fields, message):
  with pytest.raises(UserError) as error:
    validate_config(tiny_toy(**fields), 1)
  assert message in str(error.value)
