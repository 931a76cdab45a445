"""Denoising score matching at given noise levels (Vincent 2011): `score_matching_loss`, of the seed API.

NCSN's multiscale objective (Song & Ermon 2019, Eq. 5-6: `lambda(sigma) = sigma^2`, the level uniform per
example) is the discrete loss over the VE SDE's chain that training uses, `losses.sde_losses.discrete_dsm_loss`
(`training.continuous=False`); it has no second home here."""

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
