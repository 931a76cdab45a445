"""Two-dimensional toy distributions. The Gaussian mixture has a closed-form score at every noise level."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.datasets.registry import Dataset, register_dataset

# An unequal-weight mixture of 4 isotropic Gaussians: means, standard deviations, weights.
GMM_MEANS = np.array([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]], np.float32)
GMM_STDS = np.array([0.4, 0.5, 0.3, 0.6], np.float32)
GMM_WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4], np.float32)


def _gmm_components(x, sigma, scale, means, stds):
  """Per-component variances `(batch, K)` and offsets `scale * mu_k - x`, `(batch, K, d)`."""
  sigma = jnp.reshape(jnp.asarray(sigma, x.dtype), (-1, 1))
  scale = jnp.reshape(jnp.asarray(scale, x.dtype), (-1, 1))
  var = jnp.square(scale * jnp.asarray(stds)[None, :]) + jnp.square(sigma)  # (batch, K)
  diff = scale[..., None] * jnp.asarray(means)[None] - x[:, None, :]  # (batch, K, d)
  return var, diff


def gmm_log_prob(x, sigma, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS, scale=1.0):
  """`log p(x)` of the mixture scaled by `scale` and convolved with `N(0, sigma^2 I)`:
  `p = sum_k w_k N(scale mu_k, (scale^2 s_k^2 + sigma^2) I)`. This is the marginal `p_t` of every
  score SDE, with `(scale, sigma) = (mean coefficient, std)` of its perturbation kernel.
  `x`: `(batch, d)`; `sigma`, `scale`: scalars or `(batch,)`."""
  d = x.shape[-1]
  var, diff = _gmm_components(x, sigma, scale, means, stds)
  log_comp = (
    -0.5 * jnp.sum(jnp.square(diff), -1) / var - 0.5 * d * jnp.log(2 * math.pi * var) + jnp.log(jnp.asarray(weights))
  )
  return jax.nn.logsumexp(log_comp, axis=-1)


def gmm_class_log_probs(x, sigma, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS, scale=1.0):
  """`log p(k | x)` for each component `k`, shape `(batch, K)`: the log-responsibilities
  `log w_k N(x; scale mu_k, v_k I) - log p(x)`, `v_k = scale^2 s_k^2 + sigma^2`. Where the components are
  the classes, this is the exact classifier of noisy inputs at every noise level (Bayes' rule)."""
  d = x.shape[-1]
  var, diff = _gmm_components(x, sigma, scale, means, stds)
  log_comp = -0.5 * jnp.sum(jnp.square(diff), -1) / var - 0.5 * d * jnp.log(var) + jnp.log(jnp.asarray(weights))
  return jax.nn.log_softmax(log_comp, axis=-1)


def gmm_score(x, sigma, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS, scale=1.0):
  """Exact score `grad_x log p(x) = sum_k r_k(x) (scale mu_k - x) / (scale^2 s_k^2 + sigma^2)`,
  with responsibilities `r_k` (softmax of the component log-densities)."""
  d = x.shape[-1]
  var, diff = _gmm_components(x, sigma, scale, means, stds)
  log_comp = -0.5 * jnp.sum(jnp.square(diff), -1) / var - 0.5 * d * jnp.log(var) + jnp.log(jnp.asarray(weights))
  resp = jax.nn.softmax(log_comp, axis=-1)
  return jnp.sum(resp[..., None] * diff / var[..., None], axis=1)


def gmm_sde_score(sde, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS):
  """The exact `score_fn(x, t) = grad log p_t(x)` of the mixture carried by `sde` to time `t`:
  with `p_0t(x_t | x_0) = N(m(t) x_0, std(t)^2 I)`, `p_t = sum_k w_k N(m mu_k, (m^2 s_k^2 + std^2) I)`."""

  def score_fn(x, t):
    scale, std = sde.marginal_coefficients(t)
    return gmm_score(x, std, means, stds, weights, scale)

  return score_fn


def gmm_sde_log_prob(sde, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS):
  """`log p_t(x)` of the mixture carried by `sde` to time `t`, as `log_prob(x, t)`."""

  def log_prob(x, t):
    scale, std = sde.marginal_coefficients(t)
    return gmm_log_prob(x, std, means, stds, weights, scale)

  return log_prob


def gaussian_sde_score(sde, mean, cov):
  """The exact score of Gaussian data `N(mean, cov)` (`cov` a NumPy array over the flattened example) carried
  by `sde` to time `t`: `-(m^2 cov + std^2 I)^{-1} (x - m mean)`, through the eigenvectors of `cov`, with no
  linear solve inside a sampler's loop."""
  eigenvalues, eigenvectors = (jnp.asarray(a, jnp.float32) for a in np.linalg.eigh(np.asarray(cov, np.float64)))
  mean = jnp.asarray(mean, jnp.float32).reshape(-1)

  def score_fn(x, t):
    scale, std = (c[:, None] for c in sde.marginal_coefficients(t))
    coordinates = (x.reshape(x.shape[0], -1) - scale * mean) @ eigenvectors
    return (-(coordinates / (scale**2 * eigenvalues + std**2)) @ eigenvectors.T).reshape(x.shape)

  return score_fn


def sample_gmm_with_labels(rng, n, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS):
  """`n` draws of the mixture and the component of each, its class label."""
  comp = rng.choice(len(weights), size=n, p=weights / weights.sum())
  return (means[comp] + stds[comp, None] * rng.standard_normal((n, means.shape[1]))).astype(np.float32), comp


def sample_gmm(rng, n, means=GMM_MEANS, stds=GMM_STDS, weights=GMM_WEIGHTS):
  return sample_gmm_with_labels(rng, n, means, stds, weights)[0]


def sample_swiss_roll(rng, n):
  t = 1.5 * np.pi * (1 + 2 * rng.random(n))
  x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5.0
  return (x + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)


def sample_checkerboard(rng, n):
  x1 = rng.random(n) * 4 - 2
  x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
  x2 = x2 + (np.floor(x1) % 2)
  return (np.stack([x1, x2], 1) * 2).astype(np.float32)


def sample_moons(rng, n):
  upper = rng.random(n) < 0.5
  t = np.pi * rng.random(n)
  x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
  x = (x - np.array([0.5, 0.25])) * 2
  return (x + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


def gmm_data_log_prob(x):
  """`log p(x)` of the (noise-free) mixture."""
  return gmm_log_prob(x, 0.0)


TOYS = {
  "gmm": (sample_gmm, gmm_score, gmm_data_log_prob),
  "swiss_roll": (sample_swiss_roll, None, None),
  "checkerboard": (sample_checkerboard, None, None),
  "moons": (sample_moons, None, None),
}
# Toys whose examples have classes: their labelled sampler and number of classes (the mixture's components).
LABELLED = {"gmm": (sample_gmm_with_labels, len(GMM_WEIGHTS))}


def _register(name, sampler, score, log_prob):
  @register_dataset(name, levels=0)
  def make(num_train: int = 50_000, num_test: int = 5_000, data_seed: int = 0, **unused):
    rng = np.random.default_rng(data_seed)
    if name in LABELLED:
      labelled, num_classes = LABELLED[name]
      (train, train_labels), (test, test_labels) = labelled(rng, num_train), labelled(rng, num_test)
      classes = dict(train_labels=train_labels, test_labels=test_labels, num_classes=num_classes)
    else:
      train, test, classes = sampler(rng, num_train), sampler(rng, num_test), {}
    return Dataset(name, train=train, test=test, score=score, sample=sampler, log_prob=log_prob, **classes)

  return make


for _name, (_sampler, _score, _log_prob) in TOYS.items():
  _register(_name, _sampler, _score, _log_prob)


def empirical_score(points):
  """Score of `(1/n) sum_j N(x; scale x_j, sigma^2 I)`, the scaled training data convolved with the noise."""
  points = jnp.asarray(points)

  def score(x, sigma, scale=1.0):
    sigma = jnp.reshape(sigma, (-1, 1))
    diff = scale * points[None] - x[:, None, :]
    w = jax.nn.softmax(-0.5 * jnp.sum(jnp.square(diff), -1) / jnp.square(sigma), axis=-1)
    return jnp.sum(w[..., None] * diff, axis=1) / jnp.square(sigma)

  return score
