"""Constraints on part of a sample: inpainting (known pixels) and colorization (a known grayscale image),
as score_sde samples them (Song et al. 2021, Sec. 5 and App. I.2).

A constraint is a map `constraint(x, t, z) -> x`, `t` of shape `(batch,)` and `z ~ N(0, I)` of the shape
of `x`, that a sampler applies after each of its steps; at the end, after the last denoising, with `t = 0`
and `z = 0`, it writes the known part exactly. Here every constraint knows an orthogonal projection `P`
onto the known part of `x` and data `y` whose projection `P y` is known, and replaces that part of the
current `x_t` by a draw of its noisy value at time `t` under the forward kernel:

    x <- x - P x + P (m(t) y + std(t) z).

Since the forward noise is isotropic, `P z` is exactly the noise that the kernel puts into the known part.
"""

import jax.numpy as jnp

from scorejax.sde_lib import per_example


def known_values_constraint(sde, replace_known, known):
  """`constraint(x, t, z) = replace_known(x, m(t) y + std(t) z)`, where `replace_known(x, v) = x - P x + P v`
  puts the known part of `v` into `x` for an orthogonal projection `P`, and `known` (`y`, of the shape of
  `x`, or one example broadcast over the batch) holds the known values."""

  def constraint(x, t, z):
    scale, std = sde.marginal_coefficients(t)
    return replace_known(x, per_example(scale, x) * known + per_example(std, x) * z)

  return constraint


def inpainting_constraint(sde, mask, known):
  """Inpainting (score_sde's `get_pc_inpainter`): the entries where `mask` is 1 are those of `known`
  (`P x = mask * x`, written as a selection so that the known entries come out exact in floating point).
  `mask` holds 0 or 1, of the shape of `x` or broadcast against it (one mask for all, or one per example)."""
  is_known = jnp.asarray(mask) > 0.5
  return known_values_constraint(sde, lambda x, v: jnp.where(is_known, v, x), known)


def colorization_constraint(sde, images):
  """Colorization (score_sde's `get_pc_colorizer`): the grayscale image, the mean of each pixel's
  channels, is that of `images` (`(batch, H, W, C)`, or gray images with every channel equal).

  score_sde writes `x` in a decorrelated colour basis, an orthogonal matrix whose first axis is
  `(1, ..., 1) / sqrt(C)`, and replaces that channel; the orthogonal projection onto that axis is
  `P x = mean_c(x)` on every channel, so that replacement is `x - mean_c(x) + mean_c(v)`, without the basis."""
  channel_mean = lambda v: jnp.mean(v, axis=-1, keepdims=True)
  return known_values_constraint(sde, lambda x, v: x - channel_mean(x) + channel_mean(v), images)
