"""The EDM sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Algorithm 2), for any score SDE through its equivalent VE noise level (Sec. 3, Eq. 4)."""
import math

import jax
import jax.numpy as jnp

from scorejax import sde_lib
from scorejax.samplers.registry import register_sampler
from scorejax.sde_lib import per_example


def time_of_noise_level(sde, sigma):
  """The time `t` at which `sde.noise_level(t) = std(t) / m(t) = sigma`.

  VE: `sigma(t) = sigma_min (sigma_max / sigma_min)^t`, so
  `t = log(sigma / sigma_min) / log(sigma_max / sigma_min)`.
  VP and sub-VP: `m(t) = exp(-B(t) / 2)` with `B(t) = int_0^t beta = beta_0 t + (beta_1 - beta_0) t^2 / 2`;
  `m = 1 / sqrt(1 + sigma^2)` for VP (`std^2 = 1 - m^2`) and `m = 2 / (sigma + sqrt(sigma^2 + 4))` for
  sub-VP (`std = 1 - m^2`); then `t = 2 B / (beta_0 + sqrt(beta_0^2 + 2 (beta_1 - beta_0) B))`, `B = -2 log m`.
  """
  sigma = jnp.asarray(sigma)
  if isinstance(sde, sde_lib.VESDE):
    return jnp.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
  if isinstance(sde, sde_lib.SubVPSDE):
    integral = 2.0 * jnp.log(0.5 * (sigma + jnp.sqrt(jnp.square(sigma) + 4.0)))
  elif isinstance(sde, sde_lib.VPSDE):
    integral = jnp.log1p(jnp.square(sigma))
  else:
    raise ValueError(f"no inverse noise level for {type(sde).__name__}; supported: VESDE, VPSDE, SubVPSDE")
  beta_0, beta_d = sde.beta_0, sde.beta_1 - sde.beta_0
  return 2.0 * integral / (beta_0 + jnp.sqrt(beta_0 ** 2 + 2.0 * beta_d * integral))


def noise_level_score(sde, score_fn):
  """`score(x_hat, sigma)`: the score of `x_hat = x / m(t) = x_0 + sigma z` (Karras et al. Eq. 4),
  `grad_{x_hat} log p(x_hat; sigma) = m(t) s(m(t) x_hat, t)` at `t = t(sigma)`, for any SDE."""
  def score(x_hat, sigma):
    t = time_of_noise_level(sde, sigma)
    scale = per_example(sde.marginal_coefficients(t)[0], x_hat)
    return scale * score_fn(scale * x_hat, t)
  return score


def karras_sigmas(sigma_min, sigma_max, num_steps, rho=7.0):
  """Eq. 5: `sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`
  for `i < N`, and `sigma_N = 0`: `N + 1` levels."""
  ramp = jnp.linspace(0.0, 1.0, num_steps) if num_steps > 1 else jnp.zeros((1,))
  inverse_rho = 1.0 / rho
  sigmas = (sigma_max ** inverse_rho + ramp * (sigma_min ** inverse_rho - sigma_max ** inverse_rho)) ** rho
  return jnp.append(sigmas, 0.0)


def edm_sampler(score_fn, x_init, rng, sigmas, s_churn=0.0, s_min=0.0, s_max=float("inf"), s_noise=1.0):
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
  inputs = (jnp.arange(last), sigmas[:last], sigma_hats[:last], sigmas[1:last + 1])
  x, _ = jax.lax.scan(heun_step, x_init, inputs)
  x = churn(x, last, sigmas[last], sigma_hats[last])
  return x - sigma_hats[last] * derivative(x, sigma_hats[last])  # Euler to sigma_N = 0


@register_sampler("edm")
def build_edm(sde, sampling):
  """Algorithm 2 in `x_hat = x / m(t)` between the noise levels of `sampling.eps` and `T`:
  `sampling.num_steps` (N = 18; nfe = 2N - 1), `sampling.rho` (7), `sampling.s_churn` (0),
  `sampling.s_min` (0), `sampling.s_max` (inf), `sampling.s_noise` (1), `sampling.eps` (1e-3)."""
  num_steps = sampling.get("num_steps", 18)
  eps = sampling.get("eps", 1e-3)
  sigma_min, sigma_max = (float(sde.noise_level(jnp.asarray(t))) for t in (eps, sde.T))
  sigmas = karras_sigmas(sigma_min, sigma_max, num_steps, sampling.get("rho", 7.0))
  churn = dict(s_churn=sampling.get("s_churn", 0.0), s_min=sampling.get("s_min", 0.0),
               s_max=sampling.get("s_max", float("inf")), s_noise=sampling.get("s_noise", 1.0))
  time_of_noise_level(sde, sigma_max)  # unsupported SDEs fail here
  prior_scale = float(sde.marginal_coefficients(jnp.asarray(sde.T))[0])

  def sample_fn(score_fn, x_init, rng):
    # At sigma = 0, t = 0 and m = 1: x = x_hat.
    x = edm_sampler(noise_level_score(sde, score_fn), x_init / prior_scale, rng, sigmas, **churn)
    return x, 2 * num_steps - 1
  return sample_fn
