"""The loss of a noise-conditional classifier over a `logits_fn(x, t)`: it never sees a network."""

import jax
import jax.numpy as jnp
import optax

from scorejax.sde_lib import per_example


def noisy_inputs(x, rng, sde, t):
  """`x_t = m(t) x + std(t) z`: a draw of the SDE's perturbation kernel at times `t` `(batch,)`."""
  mean, std = sde.marginal_prob(x, t)
  return mean + per_example(std, x) * jax.random.normal(rng, x.shape, x.dtype)


def noisy_classifier_loss(logits_fn, x, labels, rng, sde, eps):
  """Cross-entropy of a classifier of noisy inputs (Song et al. 2021, App. I.1; Dhariwal & Nichol 2021):

      E_t E_{x_0, y} E_z [ -log p_phi(y | m(t) x_0 + std(t) z, t) ],   t ~ U(eps, T),

  over the perturbation kernel of the same SDE as the score model it will guide, so that at each time it
  approximates `p_t(y | x_t)`, the classifier that guidance needs."""
  rng_t, rng_z = jax.random.split(rng)
  t = jax.random.uniform(rng_t, (x.shape[0],), minval=eps, maxval=sde.T)
  logits = logits_fn(noisy_inputs(x, rng_z, sde, t), t)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy_at_time(logits_fn, x, labels, rng, sde, t):
  """The fraction of `x` noised to the time `t` (a scalar) whose most likely class is its label."""
  t = jnp.full((x.shape[0],), t, x.dtype)
  return jnp.mean(jnp.argmax(logits_fn(noisy_inputs(x, rng, sde, t), t), axis=-1) == labels)
