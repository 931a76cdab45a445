"""Denoising score matching (Vincent 2011; Song & Ermon 2019)."""

import jax
import jax.numpy as jnp

from scorejax.sde_lib import per_example


def score_matching_loss(score_fn, x, sigma, rng, weighting=None):
  """Denoising score matching at noise level `sigma`.

  `noise ~ N(0, I)`, `x_noisy = x + sigma * noise`; the score of the perturbation kernel
  `q(x_noisy | x) = N(x, sigma^2 I)` is `-(x_noisy - x) / sigma^2 = -noise / sigma`, and

      loss = mean over all elements of  w(sigma) * (score_fn(x_noisy, sigma) + noise / sigma)^2

  (Vincent 2011, Eq. 11). `sigma` is a scalar or has shape `(batch,)`; `weighting` is an
  optional per-example weight `w(sigma)` of the same shape (default 1).
  """
  noise = jax.random.normal(rng, x.shape, x.dtype)
  s = per_example(sigma, x)
  x_noisy = x + s * noise
  target = -noise / s
  sigma_batch = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
  sq_err = jnp.square(score_fn(x_noisy, sigma_batch) - target)
  if weighting is not None:
    sq_err = sq_err * per_example(weighting, x)
  return jnp.mean(sq_err)


def sample_noise_levels(rng, sigmas, batch_size):
  """One noise level per example, uniform over the discrete levels `sigmas` (NCSN training)."""
  idx = jax.random.randint(rng, (batch_size,), 0, sigmas.shape[0])
  return sigmas[idx]


def multiscale_dsm_loss(score_fn, x, rng, sigmas):
  """The NCSN objective (Song & Ermon 2019, Eq. 5-6), the training loss of `main.py`.

      L = E_i E_x E_noise [ lambda(sigma_i) * ||s(x + sigma_i noise, sigma_i) + noise / sigma_i||^2 ],
      lambda(sigma) = sigma^2,

  with `i` uniform per example. With `lambda = sigma^2` every level contributes O(1), and for
  `s = -eps_hat / sigma` the summand is exactly the DDPM noise-prediction loss
  `||eps_hat - noise||^2` (Ho et al. 2020, Eq. 14). Averaged over elements.
  """
  rng_sigma, rng_noise = jax.random.split(rng)
  sigma = sample_noise_levels(rng_sigma, sigmas, x.shape[0])
  return score_matching_loss(score_fn, x, sigma, rng_noise, weighting=jnp.square(sigma))
