"""Noise schedules as a log signal-to-noise ratio `gamma(t)` (Kingma et al. 2021, "Variational Diffusion Models",
Sec. 3.1-3.2): the variance-preserving kernel `z_t = alpha_t x + sigma_t eps` with

    alpha_t^2 = sigmoid(-gamma(t)),  sigma_t^2 = sigmoid(gamma(t)),  SNR(t) = alpha_t^2 / sigma_t^2 = exp(-gamma(t)),

`gamma` increasing from `gamma(0) = gamma_min` (least noise) to `gamma(1) = gamma_max`. Every score SDE here has
one: `gamma(t) = 2 log(std(t) / m(t)) = 2 log sigma(t)`, the log of its equivalent VE noise level squared
(sde_lib.py), and two SDEs with the same `gamma` are one model up to the scaling of `x` (Kingma et al. 2021,
Sec. 5.1; Karras et al. 2022, Sec. 3). The VE SDE's `gamma` is linear in `t`, VDM's fixed schedule.

A schedule is any traceable `gamma(t)` of `t` of any shape; `GammaSDE` makes it a score SDE for the samplers and
the probability-flow likelihood. The learned schedule (a Flax module whose parameters live in the model's tree)
is `models/vdm.py: LearnedSchedule`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax import sde_lib
from scorejax.sde_lib import per_example


def alpha_sigma(gamma):
  """`(alpha, sigma)` of the log-SNR `gamma`: `alpha^2 = sigmoid(-gamma)`, `sigma^2 = sigmoid(gamma)` (VDM, Eq. 3)."""
  return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def snr(gamma):
  """`SNR = alpha^2 / sigma^2 = exp(-gamma)`."""
  return jnp.exp(-gamma)


def gamma_and_slope(gamma, t):
  """`(gamma(t), gamma'(t))` by forward mode, each of the shape of `t`: `gamma` maps `t` elementwise."""
  t = jnp.asarray(t, jnp.float32)
  return jax.jvp(gamma, (t,), (jnp.ones_like(t),))


def linear_gamma(gamma_min, gamma_max):
  """VDM's fixed schedule `gamma(t) = gamma_min + (gamma_max - gamma_min) t` (Kingma et al. 2021, App. B;
  `NoiseSchedule_FixedLinear`): `SNR` falls geometrically in `t`. It is the VE SDE's own schedule, `sigma(t) =
  sigma_min (sigma_max / sigma_min)^t`, with `gamma_min = 2 log sigma_min`, `gamma_max = 2 log sigma_max`."""
  return lambda t: gamma_min + (gamma_max - gamma_min) * jnp.asarray(t, jnp.float32)


class SDESchedule:
  """The log-SNR of a score SDE over `[t_min, t_max]`, rescaled to `u in [0, 1]`:

      gamma(u) = 2 log sigma(time(u)),  time(u) = t_min + (t_max - t_min) u,

  `sigma(t) = std(t) / m(t)` the SDE's noise level (sde_lib.SDE.noise_level). VP and sub-VP start at `gamma = -inf`
  (`sigma(0) = 0`): their schedule starts at a `t_min > 0`, as their likelihoods do (`eval.eps`)."""

  def __init__(self, sde, t_min, t_max):
    self.sde, self.t_min, self.t_max = sde, float(t_min), float(t_max)

  @classmethod
  def between(cls, sde, gamma_min, gamma_max):
    """The stretch of `sde`'s schedule that runs from `gamma_min` to `gamma_max` (`time_of_noise_level`): its
    shape, with the endpoints of another schedule."""
    t_min, t_max = (float(sde.time_of_noise_level(np.exp(0.5 * g), xp=np)) for g in (gamma_min, gamma_max))
    return cls(sde, t_min, t_max)

  def time(self, u):
    return self.t_min + (self.t_max - self.t_min) * jnp.asarray(u, jnp.float32)

  def __call__(self, u):
    return 2.0 * jnp.log(self.sde.noise_level(self.time(u)))


def _bisect(f, target, lo, hi, steps=60):
  """The `t in [lo, hi]` with `f(t) = target` for an increasing `f`, elementwise over `target`, by bisection."""
  lo, hi = jnp.full(jnp.shape(target), lo, jnp.float32), jnp.full(jnp.shape(target), hi, jnp.float32)

  def step(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = f(mid) < target
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, steps, step, (lo, hi))
  return 0.5 * (lo + hi)


class GammaSDE(sde_lib.SDE):
  """The variance-preserving SDE whose kernel has the log-SNR `gamma(t)` (Kingma et al. 2021, Sec. 3.1, App. A;
  Song et al. 2021, Eq. 11 with `beta(t)` below):

      m(t) = alpha_t = sqrt(sigmoid(-gamma)),  std(t) = sigma_t = sqrt(sigmoid(gamma)),
      dx = -(1/2) beta(t) x dt + sqrt(beta(t)) dw,  beta(t) = -2 d log alpha_t / dt = gamma'(t) sigmoid(gamma(t)),

  (`g^2 = d sigma^2/dt - 2 f sigma^2 = beta` makes it variance preserving). Its prior is `N(0, I)`. `gamma` is any
  increasing traceable function on `[0, 1]`: fixed (`linear_gamma`, `SDESchedule`) or a learned schedule bound to
  its parameters (models/vdm.py), which makes the SDE a function of the parameters, built inside the program.
  `N` is the number of steps of the samplers that ask for one."""

  def __init__(self, gamma, N=1000):
    super().__init__(N)
    self.gamma = gamma

  def sde(self, x, t):
    g, slope = gamma_and_slope(self.gamma, t)
    beta = slope * jax.nn.sigmoid(g)
    return -0.5 * per_example(beta, x) * x, jnp.sqrt(beta)

  def marginal_prob(self, x0, t):
    alpha, sigma = alpha_sigma(self.gamma(jnp.asarray(t, jnp.float32)))
    return per_example(alpha, x0) * x0, sigma

  def noise_level(self, t):
    """`sigma(t) = std / m = exp(gamma(t) / 2)`."""
    return jnp.exp(0.5 * self.gamma(jnp.asarray(t, jnp.float32)))

  def time_of_noise_level(self, sigma, xp=jnp):
    """The `t in [0, 1]` with `gamma(t) = 2 log sigma`, by bisection (`gamma` is increasing); clipped to the ends."""
    t = _bisect(self.gamma, 2.0 * jnp.log(jnp.asarray(sigma, jnp.float32)), 0.0, self.T)
    return np.asarray(t) if xp is np else t

  def prior_sample(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    d = z[0].size
    return -0.5 * d * jnp.log(2 * jnp.pi) - 0.5 * jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1)
