"""The EDM loss (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
Sec. 5, Eq. 2 and 8, Table 1), over a `score_fn(x, t)` of any network and any score SDE: its denoiser at the
noise level `sigma` is Tweedie's `D(x_hat; sigma) = x_hat + sigma^2 score(x_hat, sigma)` in the VE variables
`x_hat = x / m(t)`, at the time `t` of `sigma` (`sde.noise_level_score`)."""

import math

import jax
import jax.numpy as jnp

from scorejax.losses.registry import register_loss
from scorejax.sde_lib import per_example


def edm_weight(sigma, sigma_data):
  """`lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 = 1 / c_out^2`: the weighted loss is that of
  the network's own output against its target `(y - c_skip x) / c_out`, of unit variance at every `sigma`."""
  return (jnp.square(sigma) + sigma_data**2) / jnp.square(sigma * sigma_data)


def tweedie_denoiser(score_fn, sde, x_hat, sigma):
  """`D(x_hat; sigma) = x_hat + sigma^2 grad log p(x_hat; sigma)` (Karras et al. Eq. 3), `sigma` of shape
  `(batch,)`, through the SDE's time of `sigma`: `E[y | y + sigma n = x_hat]` when `score_fn` is exact."""
  return x_hat + per_example(jnp.square(sigma), x_hat) * sde.noise_level_score(score_fn)(x_hat, sigma)


def edm_loss(score_fn, y, rng, sde, p_mean, p_std, sigma_data, reduce_mean):
  """Karras et al. 2022, Eq. 2 with Table 1's choices:

      E_{sigma, y, n} [ lambda(sigma) || D(y + n; sigma) - y ||^2 ],  n ~ N(0, sigma^2 I),
      ln sigma ~ N(p_mean, p_std^2),  lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2,

  the squared error averaged (`reduce_mean`) or summed over the data dimensions of each example, then
  averaged over the batch. Its minimum, at `D = E[y | y + n]`, is the posterior variance weighted by
  `lambda`: 1 per dimension for Gaussian data of standard deviation `sigma_d`."""
  rng_sigma, rng_n = jax.random.split(rng)
  sigma = jnp.exp(p_mean + p_std * jax.random.normal(rng_sigma, (y.shape[0],), y.dtype))
  n = per_example(sigma, y) * jax.random.normal(rng_n, y.shape, y.dtype)
  sq = jnp.square(tweedie_denoiser(score_fn, sde, y + n, sigma) - y)
  axes = tuple(range(1, y.ndim))
  per_example_error = jnp.mean(sq, axis=axes) if reduce_mean else jnp.sum(sq, axis=axes)
  return jnp.mean(edm_weight(sigma, sigma_data) * per_example_error)


def get_edm_loss_fn(sde, p_mean, p_std, sigma_data, reduce_mean):
  """`loss(score_fn, y, rng)`: `edm_loss` with `training.p_mean`, `training.p_std`, `model.sigma_data` and
  `training.reduce_mean`."""
  for name, value, positive in (("training.p_mean", p_mean, False), ("training.p_std", p_std, True)):
    if not (math.isfinite(value) and (value > 0 or not positive)):
      raise ValueError(f"{name} must be a finite number {'> 0' if positive else '(any sign)'}, got {value!r}")
  if not (math.isfinite(sigma_data) and sigma_data > 0):
    raise ValueError(f"model.sigma_data must be a finite number > 0, got {sigma_data!r}")
  return lambda score_fn, y, rng: edm_loss(score_fn, y, rng, sde, p_mean, p_std, sigma_data, reduce_mean)


@register_loss("edm")
def build_edm_loss(sde, *, p_mean, p_std, sigma_data, reduce_mean, continuous):
  """EDM's loss (`training.loss='edm'`): `get_edm_loss_fn` with `training.p_mean`, `p_std`, `reduce_mean` and
  `model.sigma_data`, at continuous noise levels."""
  if not continuous:
    raise ValueError("training.loss='edm' trains at continuous noise levels: set training.continuous=True")
  return get_edm_loss_fn(sde, p_mean, p_std, sigma_data, reduce_mean)
