"""The EDM sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Algorithm 2), for any score SDE through its equivalent VE noise level (Sec. 3, Eq. 4)."""

import math

import jax
import jax.numpy as jnp

from scorejax.samplers.registry import check_options, register_sampler


def karras_sigmas(sigma_min, sigma_max, num_steps, rho):
  """Eq. 5: `sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`
  for `i < N`, and `sigma_N = 0`: `N + 1` levels."""
  ramp = jnp.linspace(0.0, 1.0, num_steps) if num_steps > 1 else jnp.zeros((1,))
  inverse_rho = 1.0 / rho
  sigmas = (sigma_max**inverse_rho + ramp * (sigma_min**inverse_rho - sigma_max**inverse_rho)) ** rho
  return jnp.append(sigmas, 0.0)


def edm_sampler(score_fn, x_init, rng, sigmas, s_churn, s_min, s_max, s_noise):
  """Karras et al. 2022, Algorithm 2: Heun's method on the probability flow of `x ~ p(x; sigma)`,

      dx / dsigma = (x - D(x; sigma)) / sigma = -sigma score_fn(x, sigma),   D = x + sigma^2 score,

  from `sigmas[0]` to `sigmas[N] = 0`, with `score_fn(x, sigma)` (`sigma` of shape `(batch,)`) and
  `x_init ~ N(0, sigmas[0]^2 I)`. Before step `i`, churn raises the noise to `sigma_hat = (1 + gamma_i) sigma_i`
  by adding `N(0, (sigma_hat^2 - sigma_i^2) s_noise^2 I)`, `gamma_i = min(s_churn / N, sqrt(2) - 1)` where
  `s_min <= sigma_i <= s_max`, else 0. The last step, to `sigma = 0`, is Euler (it is then the denoiser
  `D`): `2 N - 1` score evaluations. One `lax.scan`; returns the final `x`.
  """
  sigmas = jnp.asarray(sigmas, x_init.dtype)
  num_steps = sigmas.shape[0] - 1
  batch = x_init.shape[0]
  stochastic = s_churn > 0
  in_range = (sigmas[:-1] >= s_min) & (sigmas[:-1] <= s_max)
  gammas = jnp.where(in_range, min(s_churn / num_steps, math.sqrt(2.0) - 1.0), 0.0)
  sigma_hats = sigmas[:-1] * (1.0 + gammas)

  def derivative(x, sigma):
    return -sigma * score_fn(x, jnp.full((batch,), sigma))

  def churn(x, i, sigma, sigma_hat):
    if not stochastic:
      return x
    z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return x + jnp.sqrt(jnp.square(sigma_hat) - jnp.square(sigma)) * s_noise * z

  def heun_step(x, inputs):
    i, sigma, sigma_hat, sigma_next = inputs
    x = churn(x, i, sigma, sigma_hat)
    d = derivative(x, sigma_hat)
    x_euler = x + (sigma_next - sigma_hat) * d
    return x + (sigma_next - sigma_hat) * 0.5 * (d + derivative(x_euler, sigma_next)), None

  last = num_steps - 1
  inputs = (jnp.arange(last), sigmas[:last], sigma_hats[:last], sigmas[1 : last + 1])
  x, _ = jax.lax.scan(heun_step, x_init, inputs)
  x = churn(x, last, sigmas[last], sigma_hats[last])
  return x - sigma_hats[last] * derivative(x, sigma_hats[last])  # Euler to sigma_N = 0


@register_sampler("edm")
def build_edm(sde, *, num_steps, rho, s_churn, s_min, s_max, s_noise, eps):
  """Algorithm 2 in `x_hat = x / m(t)` between the noise levels of `eps` and `T` (`num_steps`, nfe
  `2 num_steps - 1`; `rho`; the churn `s_churn`, `s_min`, `s_max`, `s_noise`), through
  `sde.run_in_noise_levels`."""
  check_options(
    sde,
    num_steps=(num_steps, "positive integer"),
    rho=(rho, "> 0"),
    s_churn=(s_churn, ">= 0"),
    s_noise=(s_noise, ">= 0"),
    s_min=(s_min, ">= 0"),
    eps=eps,
  )
  if not s_max >= s_min:  # inf: churn at every level
    raise ValueError(f"sampling.s_max must be a number >= sampling.s_min={s_min!r} (inf allowed), got {s_max!r}")
  sigma_min, sigma_max = (float(sde.noise_level(jnp.asarray(t))) for t in (eps, sde.T))
  sigmas = karras_sigmas(sigma_min, sigma_max, num_steps, rho)
  churn = dict(s_churn=s_churn, s_min=s_min, s_max=s_max, s_noise=s_noise)

  def sample_fn(score_fn, x_init, rng):
    chain = lambda score, x_hat: edm_sampler(score, x_hat, rng, sigmas, **churn)
    return sde.run_in_noise_levels(chain, score_fn, x_init, 0.0, True), 2 * num_steps - 1

  return sample_fn
