"""From network to `score_fn`: the one place where the network output becomes a score."""
import jax
import jax.numpy as jnp

from sde_lib import per_example

PREDICTIONS = ("score", "noise")


def get_score_fn(model, params, prediction: str = "score", scale_by_sigma: bool = False):
  """Wrap `model.apply` as `score_fn(x, sigma) -> score`, `sigma` of shape `(batch,)`.

  prediction='score': the network output is the score, divided by sigma if
    `scale_by_sigma` (NCSNv2, Song & Ermon 2020, technique 3: `s(x, sigma) = s(x) / sigma`).
  prediction='noise': the network predicts the noise `eps_hat` in `x_noisy = x + sigma * eps`,
    and `s_theta(x, sigma) = -eps_hat(x, sigma) / sigma` (the score / DDPM identity,
    Vincent 2011; Ho et al. 2020; Song et al. 2021, Eq. 4 with `std = sigma`).
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"unknown model.prediction {prediction!r}; valid choices: {', '.join(PREDICTIONS)}")

  def score_fn(x, sigma):
    out = model.apply({"params": params}, x, sigma)
    if prediction == "noise":
      return -out / per_example(sigma, x)
    if scale_by_sigma:
      return out / per_example(sigma, x)
    return out

  return score_fn


def init_params(model, rng, data_shape):
  """Initialise `model` on a dummy batch of one example of shape `data_shape`."""
  x = jnp.zeros((1,) + tuple(data_shape), jnp.float32)
  return jax.jit(model.init)(rng, x, jnp.ones((1,), jnp.float32))["params"]  # jitted: eager init is slow


def param_count(params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
