"""From stored pixels to the model's data space, on the device inside the train step.

Image datasets are kept as integer pixel counts `k in {0, ..., max_value}` (uint8): a quarter of
the memory and of the host-to-device traffic of float32. The step turns them into model inputs:

    x = k / max_value                      (plain), or
    x = (k + u) / (max_value + 1), u ~ U[0, 1)^D   (`data.uniform_dequantization`: a continuous
                                            density whose likelihood bounds the discrete one;
                                            Theis et al. 2016, Ho et al. 2019),
    x <- 2 x - 1                           (`data.centered`),
    x <- x flipped left-right with probability 1/2   (`data.random_flip`).
"""

import jax
import jax.numpy as jnp
import numpy as np


def to_model_space(k, max_value, centered=False, dequantization_noise=None):
  """Pixel counts `k` (any integer or float array) to `[0, 1]` or, if `centered`, `[-1, 1]`.

  With `dequantization_noise` `u` in [0, 1) of the shape of `k`: `(k + u) / (max_value + 1)`.
  Works on NumPy and JAX arrays alike (NumPy in, float32 NumPy out)."""
  xp = jnp if isinstance(k, jax.Array) or isinstance(dequantization_noise, jax.Array) else np
  k = xp.asarray(k, xp.float32)
  if dequantization_noise is None:
    x = k / max_value
  else:
    x = (k + dequantization_noise) / (max_value + 1)
  return 2.0 * x - 1.0 if centered else x


def preprocess_batch(batch, rng, max_value, centered=False, random_flip=False, uniform_dequantization=False):
  """One training batch `(batch, H, W, C)` of pixel counts to model inputs, with the random
  flip and dequantization drawn from `rng`. `max_value=None` means the data is already in model
  space (vector data); it is returned as float32."""
  if max_value is None:
    return jnp.asarray(batch, jnp.float32)
  rng_flip, rng_u = jax.random.split(rng)
  noise = jax.random.uniform(rng_u, batch.shape) if uniform_dequantization else None
  x = to_model_space(batch, max_value, centered, noise)
  if random_flip:
    flip = jax.random.bernoulli(rng_flip, 0.5, (x.shape[0], 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1, :], x)
  return x
