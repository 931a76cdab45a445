"""Score matching losses for the score SDEs (Song et al. 2021). Here `score_fn(x, t)` takes the
time `t` of shape `(batch,)`; the discrete losses call it at the times `t_i = i / (N - 1)` of their levels."""
import jax
import jax.numpy as jnp

from scorejax import sde_lib
from scorejax.sde_lib import per_example


def _reduce(sq, reduce_mean):
  """Mean or sum over the data dimensions of each example, shape `(batch,)`."""
  axes = tuple(range(1, sq.ndim))
  return jnp.mean(sq, axis=axes) if reduce_mean else jnp.sum(sq, axis=axes)


def continuous_dsm_loss(score_fn, x, rng, sde, eps=1e-5, reduce_mean=True, likelihood_weighting=False):
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


def smld_loss(score_fn, x, rng, sde: sde_lib.VESDE, reduce_mean=True):
  """Discrete SMLD/NCSN loss over the `N` levels of a VE SDE (Song & Ermon 2019, Eq. 5) with
  `lambda(sigma) = sigma^2`. Level `i` is the time `t_i = i / (N - 1)`, where `sigma(t_i) = sigma_i`
  exactly, and `score_fn` is called with `t_i`."""
  rng_i, rng_z = jax.random.split(rng)
  i = jax.random.randint(rng_i, (x.shape[0],), 0, sde.N)
  sigma = sde.discrete_sigmas[i]
  z = jax.random.normal(rng_z, x.shape, x.dtype)
  score = score_fn(x + per_example(sigma, x) * z, i / max(sde.N - 1, 1) * sde.T)
  return jnp.mean(_reduce(jnp.square(score * per_example(sigma, x) + z), reduce_mean))


def ddpm_loss(score_fn, x, rng, sde: sde_lib.VPSDE, reduce_mean=True):
  """Discrete DDPM loss (Ho et al. 2020, Eq. 14) written over the score: with
  `x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) z` and `eps_hat = -sqrt(1 - alpha_bar_i) s`,
  `|| eps_hat - z ||^2 = || sqrt(1 - alpha_bar_i) s + z ||^2`; `score_fn` gets `t_i = i / (N - 1)`."""
  rng_i, rng_z = jax.random.split(rng)
  i = jax.random.randint(rng_i, (x.shape[0],), 0, sde.N)
  alpha_bar = jnp.cumprod(sde.alphas)[i]
  z = jax.random.normal(rng_z, x.shape, x.dtype)
  std = per_example(jnp.sqrt(1.0 - alpha_bar), x)
  x_i = per_example(jnp.sqrt(alpha_bar), x) * x + std * z
  score = score_fn(x_i, i / (sde.N - 1))
  return jnp.mean(_reduce(jnp.square(score * std + z), reduce_mean))


def get_sde_loss_fn(sde, continuous=True, reduce_mean=True, likelihood_weighting=False, eps=1e-5):
  """`loss(score_fn, x, rng)` as score_sde's `training.continuous`, `reduce_mean` and
  `likelihood_weighting` select it."""
  if continuous:
    return lambda score_fn, x, rng: continuous_dsm_loss(score_fn, x, rng, sde, eps, reduce_mean,
                                                        likelihood_weighting)
  if likelihood_weighting:
    raise ValueError("training.likelihood_weighting needs training.continuous=True")
  if isinstance(sde, sde_lib.SubVPSDE) or not isinstance(sde, (sde_lib.VESDE, sde_lib.VPSDE)):
    raise ValueError(f"discrete training (training.continuous=False) exists for VE (SMLD) and VP (DDPM) "
                     f"SDEs, not {type(sde).__name__}")
  loss = smld_loss if isinstance(sde, sde_lib.VESDE) else ddpm_loss
  return lambda score_fn, x, rng: loss(score_fn, x, rng, sde, reduce_mean)
