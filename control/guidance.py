"""Class guidance: the score of `p_t(x | y)` from the score of `p_t(x)`.

Bayes' rule at every noise level, `log p_t(x | y) = log p_t(x) + log p_t(y | x) - log p(y)`, gives

    grad_x log p_t(x | y) = s(x, t) + grad_x log p_t(y | x),

so an unconditional score and a classifier of noisy inputs `p_t(y | x)` give the conditional score
(Song et al. 2021, Sec. 5 and App. I.1). Guidance scales the classifier's term by `w` (Dhariwal & Nichol
2021): `w = 1` is the conditional law, `w > 1` the sharper `p_t(x) p_t(y | x)^w`. Classifier-free guidance
(Ho & Salimans 2022) takes the classifier's gradient from one network trained with and without labels:
`grad log p_t(y | x) = s(x, t, y) - s(x, t, null)`.
"""

import jax
import jax.numpy as jnp


def _labels(labels, x):
  """A class label per example: a scalar is broadcast over the batch of `x`."""
  return jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (x.shape[0],))


def class_log_prob(logits_fn):
  """`log_prob_fn(x, t, y) = log softmax(logits_fn(x, t))[y]`, shape `(batch,)`, of a classifier that
  returns logits `(batch, num_classes)` of noisy inputs `x` at time `t`."""

  def log_prob_fn(x, t, y):
    log_probs = jax.nn.log_softmax(logits_fn(x, t).astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]

  return log_prob_fn


def classifier_guidance(score_fn, log_prob_fn, labels, scale):
  """Classifier guidance (Song et al. 2021, Sec. 5, Eq. 14; Dhariwal & Nichol 2021, Alg. 1-2):

      s_w(x, t | y) = s(x, t) + w grad_x log p_phi(y | x, t),

  `log_prob_fn(x, t, y)` the classifier's `log p_phi(y | x_t)` of shape `(batch,)`, `labels` the class `y`
  (a scalar or one per example), `scale` the guidance scale `w`. With the exact score and the exact
  noisy classifier `p_t(y | x)`, `w = 1` is the exact score of `p_t(x | y)` at every `t`.

  The gradient is that of the batch's summed log-probabilities: each example's term depends on its own
  row only, so a classifier must not mix the examples of a batch (no batch statistics).
  """

  def guided_score_fn(x, t):
    y = _labels(labels, x)
    gradient = jax.grad(lambda v: jnp.sum(log_prob_fn(v, t, y)))(x)
    return score_fn(x, t) + scale * gradient.astype(x.dtype)

  return guided_score_fn


def classifier_free_guidance(conditional_score_fn, labels, scale, null_label):
  """Classifier-free guidance (Ho & Salimans 2022, Eq. 6, written for scores):

      s_w(x, t | y) = (1 + w) s(x, t, y) - w s(x, t, null)
                    = s(x, t, y) + w [s(x, t, y) - s(x, t, null)],

  the second form a classifier's gradient `grad log p_t(y | x)` implied by one network trained with and
  without labels. `conditional_score_fn(x, t, y)` takes labels of shape `(batch,)`, where `null_label`
  stands for no label (the unconditional score); `w = 0` is the conditional score itself, and `w > 0`
  sharpens it. Both scores come from one call on the batch twice over (its labels, then the null label),
  as in the paper's implementation.
  """

  def guided_score_fn(x, t):
    y = _labels(labels, x)
    if isinstance(scale, (int, float)) and scale == 0:  # a static zero needs no unconditional score
      return conditional_score_fn(x, t, y)
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    both = conditional_score_fn(
      jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([y, jnp.full_like(y, null_label)])
    )
    conditional, unconditional = jnp.split(both, 2)
    return (1.0 + scale) * conditional - scale * unconditional

  return guided_score_fn
