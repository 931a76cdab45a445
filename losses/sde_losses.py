"""Score matching losses for the score SDEs (Song et al. 2021). Here `score_fn(x, t)` takes the
time `t` of shape `(batch,)`; the discrete losses call it at the times `sde.discrete_times` of their levels."""

import jax
import jax.numpy as jnp

from scorejax.losses.registry import register_loss
from scorejax.sde_lib import per_example


def _reduce(sq, reduce_mean):
  """Mean or sum over the data dimensions of each example, shape `(batch,)`."""
  axes = tuple(range(1, sq.ndim))
  return jnp.mean(sq, axis=axes) if reduce_mean else jnp.sum(sq, axis=axes)


def continuous_dsm_loss(score_fn, x, rng, sde, eps, reduce_mean, likelihood_weighting):
  """Continuous-time denoising score matching (Song et al. 2021, Eq. 7):

      E_t E_{x_0} E_z [ lambda(t) || s(x_t, t) + z / std(t) ||^2 ],  x_t = mean(x_0, t) + std(t) z,

  `t ~ U(eps, T)`, with `lambda(t) = std(t)^2` (the summand becomes `|| std s + z ||^2`, the noise
  prediction loss) or, with `likelihood_weighting`, `lambda(t) = g(t)^2`, which makes the loss an
  upper bound on the negative log-likelihood (Song et al. 2021b, Thm. 1).
  """
  rng_t, rng_z = jax.random.split(rng)
  t = jax.random.uniform(rng_t, (x.shape[0],), minval=eps, maxval=sde.T)
  z = jax.random.normal(rng_z, x.shape, x.dtype)
  mean, std = sde.marginal_prob(x, t)
  score = score_fn(mean + per_example(std, x) * z, t)
  if likelihood_weighting:
    _, g = sde.sde(jnp.zeros_like(x), t)
    losses = _reduce(jnp.square(score + z / per_example(std, x)), reduce_mean) * jnp.square(g)
  else:
    losses = _reduce(jnp.square(score * per_example(std, x) + z), reduce_mean)
  return jnp.mean(losses)


def denoising_loss_at_time(score_fn, x, rng, sde, t):
  """The noise-prediction form of denoising score matching at one time `t` (a scalar):
  `E_z mean_i (std(t) s(x_t, t) + z)_i^2`, `x_t = m(t) x + std(t) z`. The weighted terms of every loss
  above at a fixed `t`; the optimum is below 1 by the information the data carries about `z`."""
  z = jax.random.normal(rng, x.shape, x.dtype)
  t = jnp.full((x.shape[0],), t, x.dtype)
  mean, std = sde.marginal_prob(x, t)
  std = per_example(std, x)
  return jnp.mean(jnp.square(score_fn(mean + std * z, t) * std + z))


def discrete_dsm_loss(score_fn, x, rng, sde, reduce_mean):
  """The discrete loss over the `N` levels of the SDE's chain: SMLD/NCSN's for VE (Song & Ermon 2019,
  Eq. 5, `lambda(sigma) = sigma^2`), DDPM's for VP (Ho et al. 2020, Eq. 14, written over the score:
  `eps_hat = -sqrt(1 - alpha_bar_i) s`). Level `i` is uniform per example and presented at its time
  `t_i = sde.discrete_times[i]`, where the continuous kernel is the chain's own: `x_i = m(t_i) x_0 +
  std(t_i) z` with `m^2 = alpha_bar_i`, `std^2 = 1 - alpha_bar_i` for DDPM (`std = sigma_i` for SMLD), and the
  network is conditioned on the level's own noise `sigma_i`. The summand `|| std(t_i) s(x_i, t_i) + z ||^2`
  is `|| eps_hat - z ||^2`."""
  rng_i, rng_z = jax.random.split(rng)
  i = jax.random.randint(rng_i, (x.shape[0],), 0, sde.N)
  return level_dsm_loss(score_fn, x, rng_z, sde, i, reduce_mean)


def level_dsm_loss(score_fn, x, rng, sde, levels, reduce_mean):
  """`discrete_dsm_loss` at the given chain levels `levels` (shape `(batch,)`), averaged over the batch."""
  t = sde.discrete_times[levels]
  z = jax.random.normal(rng, x.shape, x.dtype)
  mean, std = sde.marginal_prob(x, t)
  std = per_example(std, x)
  return jnp.mean(_reduce(jnp.square(score_fn(mean + std * z, t) * std + z), reduce_mean))


def get_sde_loss_fn(sde, continuous, reduce_mean, likelihood_weighting, eps):
  """`loss(score_fn, x, rng)` as score_sde's `training.continuous`, `reduce_mean` and
  `likelihood_weighting` select it; `eps` is the smallest time of the continuous loss."""
  if continuous:
    return lambda score_fn, x, rng: continuous_dsm_loss(score_fn, x, rng, sde, eps, reduce_mean, likelihood_weighting)
  if likelihood_weighting:
    raise ValueError("training.likelihood_weighting needs training.continuous=True")
  if not sde.has_discrete_chain:
    raise ValueError(
      f"discrete training (training.continuous=False) needs an SDE with a discrete chain: "
      f"VE (SMLD) or VP (DDPM), not {type(sde).__name__}"
    )
  _ = sde.discrete_times  # a chain that cannot exist (DDPM with beta_max >= N) fails here
  return lambda score_fn, x, rng: discrete_dsm_loss(score_fn, x, rng, sde, reduce_mean)


@register_loss("sde")
def build_sde_loss(sde, *, continuous, reduce_mean, likelihood_weighting, eps):
  """score_sde's losses (`training.loss='sde'`): `get_sde_loss_fn` with `training.continuous`, `reduce_mean`,
  `likelihood_weighting` and `eps`."""
  if not 0 < eps < sde.T:
    raise ValueError(f"training.eps must be a finite number in (0, {sde.T:g}), got {eps!r}")
  return get_sde_loss_fn(sde, continuous, reduce_mean, likelihood_weighting, eps)
