"""Noise schedules for score-based models: NCSN's geometric noise levels and the score SDEs
(VE, VP, sub-VP) as small pure objects."""
import jax
import jax.numpy as jnp

from scorejax.registry import Registry

_SDES = Registry("training.sde")
register_sde = _SDES.register
sde_names = _SDES.names


def get_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> jnp.ndarray:
  """Geometric noise levels `sigma_1 = sigma_max > ... > sigma_L = sigma_min`.

  `sigma_i = sigma_max * (sigma_min / sigma_max) ** ((i - 1) / (L - 1))`
  (Song & Ermon 2019, Sec. 4.2): a constant ratio between neighbouring levels
  keeps the noisy distributions of adjacent levels overlapping.
  """
  if num_scales == 1:
    return jnp.asarray([sigma_max], jnp.float32)
  return jnp.exp(jnp.linspace(jnp.log(sigma_max), jnp.log(sigma_min), num_scales)).astype(jnp.float32)


# ----------------------------------------------------------------------------- score SDEs
# Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations".
# A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, T] carries data to a tractable prior; given the
# score s(x, t) = grad log p_t(x), the reverse-time SDE dx = [f - g^2 s] dt + g dw_bar and the
# probability-flow ODE dx/dt = f - (1/2) g^2 s carry the prior back to data (Eq. 6 and 13).


def per_example(v, x):
  """Broadcast a scalar or a per-example `(batch,)` array against `x` of shape `(batch, ...)`."""
  v = jnp.asarray(v, x.dtype)
  return v if v.ndim == 0 else jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


class SDE:
  """Base class. `t` has shape `(batch,)`; `x` has shape `(batch, ...)`."""
  T = 1.0

  def __init__(self, N: int):
    self.N = N  # number of discretisation steps for the discrete samplers and losses

  def sde(self, x, t):
    """Drift `f(x, t)` (shape of x) and diffusion `g(t)` (shape `(batch,)`)."""
    raise NotImplementedError

  def marginal_prob(self, x0, t):
    """Mean and standard deviation of the perturbation kernel `p_0t(x_t | x_0) = N(mean, std^2 I)`."""
    raise NotImplementedError

  def marginal_coefficients(self, t):
    """`(m(t), std(t))`, each of shape of `t`: `x_t = m(t) x_0 + std(t) z` (the kernel's scale and noise)."""
    t = jnp.asarray(t)
    mean, std = self.marginal_prob(jnp.ones(t.shape + (1,), t.dtype), t)
    return jnp.reshape(mean, t.shape), jnp.broadcast_to(std, t.shape)

  def noise_level(self, t):
    """The equivalent VE noise level `sigma(t) = std(t) / m(t)`: `x_t / m(t) = x_0 + sigma(t) z`.
    Every network is conditioned on `log sigma(t)` (models/utils.py), whatever the SDE (Karras et al.
    2022, Sec. 3: the SDEs differ only by this change of variables and a rescaling of `x`)."""
    scale, std = self.marginal_coefficients(t)
    return std / scale

  def prior_sample(self, rng, shape):
    raise NotImplementedError

  def prior_logp(self, z):
    raise NotImplementedError

  def discretize(self, x, t):
    """One step of the discrete forward chain `x_{i+1} = x_i + f_i + G_i z` at time `t`: `(f_i, G_i)`."""
    dt = 1.0 / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def reverse(self, score_fn, probability_flow: bool = False):
    """The reverse-time SDE, or with `probability_flow` the ODE with the same marginals.

    drift = f(x, t) - c g(t)^2 score_fn(x, t), c = 1 (SDE) or 1/2 (ODE); diffusion = g(t) or 0.
    """
    return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:

  def __init__(self, forward: SDE, score_fn, probability_flow: bool):
    self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
    self.N, self.T = forward.N, forward.T

  def sde(self, x, t):
    drift, diffusion = self.forward.sde(x, t)
    c = 0.5 if self.probability_flow else 1.0
    drift = drift - c * per_example(jnp.square(diffusion), x) * self.score_fn(x, t)
    return drift, (jnp.zeros_like(diffusion) if self.probability_flow else diffusion)

  def discretize(self, x, t):
    """Reverse diffusion step (Song et al. 2021, Eq. 46): `f_rev = f - G^2 s`, `G_rev = G`."""
    f, G = self.forward.discretize(x, t)
    c = 0.5 if self.probability_flow else 1.0
    f_rev = f - c * per_example(jnp.square(G), x) * self.score_fn(x, t)
    return f_rev, (jnp.zeros_like(G) if self.probability_flow else G)


def _gaussian_logp(z, std):
  d = z[0].size
  return (-0.5 * d * jnp.log(2 * jnp.pi * std ** 2)
          - 0.5 * jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1) / std ** 2)


@register_sde("vesde")
class VESDE(SDE):
  """Variance exploding: `dx = sqrt(d sigma^2(t)/dt) dw`, `sigma(t) = sigma_min (sigma_max/sigma_min)^t`
  (the continuous limit of SMLD/NCSN)."""

  def __init__(self, sigma_min=0.01, sigma_max=50.0, N=1000):
    super().__init__(N)
    self.sigma_min, self.sigma_max = sigma_min, sigma_max
    self.discrete_sigmas = jnp.exp(jnp.linspace(jnp.log(sigma_min), jnp.log(sigma_max), N))

  def sde(self, x, t):
    sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
    diffusion = sigma * jnp.sqrt(2 * (jnp.log(self.sigma_max) - jnp.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_prob(self, x0, t):
    return x0, self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def prior_sample(self, rng, shape):
    return self.sigma_max * jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _gaussian_logp(z, self.sigma_max)

  def discretize(self, x, t):
    """SMLD chain: `x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z`."""
    i = jnp.round(t * (self.N - 1) / self.T).astype(jnp.int32)
    sigma = self.discrete_sigmas[i]
    previous = jnp.where(i == 0, 0.0, self.discrete_sigmas[jnp.maximum(i - 1, 0)])
    return jnp.zeros_like(x), jnp.sqrt(jnp.square(sigma) - jnp.square(previous))


@register_sde("vpsde")
class VPSDE(SDE):
  """Variance preserving: `dx = -(1/2) beta(t) x dt + sqrt(beta(t)) dw`, `beta(t) = beta_min + t (beta_max - beta_min)`
  (the continuous limit of DDPM)."""

  def __init__(self, beta_min=0.1, beta_max=20.0, N=1000):
    super().__init__(N)
    self.beta_0, self.beta_1 = beta_min, beta_max
    self.discrete_betas = jnp.linspace(beta_min / N, beta_max / N, N)
    self.alphas = 1.0 - self.discrete_betas

  def beta(self, t):
    return self.beta_0 + t * (self.beta_1 - self.beta_0)

  def log_mean_coeff(self, t):
    """`log m(t) = -(1/2) int_0^t beta = -(1/4) t^2 (beta_1 - beta_0) - (1/2) t beta_0`."""
    return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

  def sde(self, x, t):
    beta = self.beta(t)
    return -0.5 * per_example(beta, x) * x, jnp.sqrt(beta)

  def marginal_prob(self, x0, t):
    lmc = self.log_mean_coeff(t)
    return per_example(jnp.exp(lmc), x0) * x0, jnp.sqrt(1.0 - jnp.exp(2.0 * lmc))

  def prior_sample(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _gaussian_logp(z, 1.0)

  def discretize(self, x, t):
    """DDPM chain: `x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`."""
    i = jnp.round(t * (self.N - 1) / self.T).astype(jnp.int32)
    beta = self.discrete_betas[i]
    return (per_example(jnp.sqrt(self.alphas[i]), x) - 1.0) * x, jnp.sqrt(beta)


@register_sde("subvpsde")
class SubVPSDE(VPSDE):
  """sub-VP: `dx = -(1/2) beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw`; its marginal
  variance `(1 - m(t)^2)^2` stays below the VP one (Song et al. 2021, Eq. 29)."""

  def sde(self, x, t):
    drift, _ = super().sde(x, t)
    discount = 1.0 - jnp.exp(4.0 * self.log_mean_coeff(t))  # 1 - exp(-2 int_0^t beta)
    return drift, jnp.sqrt(self.beta(t) * discount)

  def marginal_prob(self, x0, t):
    lmc = self.log_mean_coeff(t)
    return per_example(jnp.exp(lmc), x0) * x0, 1.0 - jnp.exp(2.0 * lmc)

  def discretize(self, x, t):
    return SDE.discretize(self, x, t)  # no DDPM-like chain: Euler-Maruyama of the SDE



def get_sde(config):
  """The SDE named by `training.sde` with the noise range of `config.model` (score_sde's fields:
  `sigma_min`, `sigma_max` for VE; `beta_min`, `beta_max` for VP and sub-VP; `num_scales` = N)."""
  m = config.model
  cls = _SDES.get(config.training.sde)
  if cls is VESDE:
    return VESDE(m.sigma_min, m.sigma_max, m.num_scales)
  return cls(m.beta_min, m.beta_max, m.num_scales)
