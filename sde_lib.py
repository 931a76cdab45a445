"""Noise schedules for score-based models: NCSN's geometric noise levels and the score SDEs (VE, VP,
sub-VP) as small pure objects, each owning every formula that depends on which SDE it is.

Losses and samplers ask the SDE (its marginals, its discrete chain and the times of its levels, the time
of a noise level, the forward, ancestral and Tweedie steps, the Langevin step sizes) and never test its
type; a new SDE is one class here.
"""

import inspect
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

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


def per_example(v, x):
  """Broadcast a scalar or a per-example `(batch,)` array against `x` of shape `(batch, ...)`."""
  v = jnp.asarray(v, x.dtype)
  return v if v.ndim == 0 else jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


def _mean_norm(v):
  """`||v||` averaged over the batch, as score_sde does: a per-example ratio `||z|| / ||s||` explodes
  where the score vanishes (near a mode), which in low dimension happens to many examples."""
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1)))


# ----------------------------------------------------------------------------- score SDEs
# Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations".
# A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, T] carries data to a tractable prior; given the
# score s(x, t) = grad log p_t(x), the reverse-time SDE dx = [f - g^2 s] dt + g dw_bar and the
# probability-flow ODE dx/dt = f - (1/2) g^2 s carry the prior back to data (Eq. 6 and 13).
# Every SDE here is linear: its kernel is x_t = m(t) x_0 + std(t) z, and x_t / m(t) = x_0 + sigma(t) z
# with the equivalent VE noise level sigma(t) = std(t) / m(t) (Karras et al. 2022, Sec. 3).


class SDE:
  """Base class. `t` has shape `(batch,)` (or is a scalar where said); `x` has shape `(batch, ...)`.

  Subclasses give `sde`, `marginal_prob`, `time_of_noise_level`, the prior, and, where the SDE is the
  limit of a discrete chain (SMLD for VE, DDPM for VP), `_chain_sigmas`. Everything else is derived
  here from the kernel `(m(t), std(t))`.
  """

  T = 1.0
  # The variance of an ancestral step: "posterior", that of q(x_s | x_t, x_0) (SMLD, score_sde's VE
  # ancestral sampler), or "forward", the forward step's own variance (DDPM's sigma_t^2 = beta_t choice,
  # Ho et al. 2020, Sec. 3.2, score_sde's VP one). The two share the mean.
  ancestral_variance = "posterior"
  has_discrete_chain = False  # whether the SDE is the limit of a discrete chain of N levels (SMLD, DDPM)

  def __init__(self, N: int):
    self.N = N  # number of levels of the discrete chain, and of steps of the discrete samplers

  # --------------------------------------------------------------- the SDE and its kernel
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

  def time_of_noise_level(self, sigma, xp=jnp):
    """The time `t` at which `noise_level(t) = sigma` (any shape); `xp=np` evaluates it in NumPy."""
    raise NotImplementedError

  def prior_sample(self, rng, shape):
    raise NotImplementedError

  def prior_logp(self, z):
    raise NotImplementedError

  # --------------------------------------------------------------- the discrete chain
  def _chain_sigmas(self) -> np.ndarray:
    """The chain's `N` noise levels in float64, increasing, as equivalent VE noise levels."""
    raise ValueError(
      f"{type(self).__name__} has no discrete chain; discrete training and sampling on "
      f"its levels need training.sde 'vesde' (SMLD) or 'vpsde' (DDPM)"
    )

  @property
  def discrete_sigmas(self):
    """`sigma_0 < ... < sigma_{N-1}`, the noise of each level of the discrete chain in `x / m`, shape `(N,)`."""
    return jnp.asarray(self._chain_sigmas(), jnp.float32)

  @property
  def discrete_times(self):
    """`t_i` with `noise_level(t_i) = sigma_i` for each level of the chain, shape `(N,)`, increasing: the
    time at which a network is told about level `i`, so that it sees the level's own noise (computed in
    float64). At these times the continuous kernel equals the chain's: `m(t_i)^2 = alpha_bar_i` for DDPM."""
    return jnp.asarray(self.time_of_noise_level(self._chain_sigmas(), xp=np), jnp.float32)

  def level_index(self, t):
    """The level of the discrete chain at time `t` as a fractional index: exactly `i` at `discrete_times[i]`,
    linear in `t` between two levels."""
    return jnp.interp(t, self.discrete_times, jnp.arange(self.N, dtype=jnp.float32))

  # --------------------------------------------------------------- score_sde's conditioning
  def score_sde_label(self, t, continuous: bool):
    """The label that score_sde's networks take at time `t` (its `models/utils.get_score_fn`), for networks
    trained there continuously or on the discrete chain; shape of `t`. It depends on the SDE."""
    raise ValueError(f"{type(self).__name__} has no score_sde conditioning")

  # --------------------------------------------------------------- steps between two times
  def transition(self, t, s):
    """The exact kernel from time `s` up to `t > s`: `x_t = a x_s + G z` with `a = m(t) / m(s)`,
    `G^2 = std(t)^2 - a^2 std(s)^2`. For VE it is the SMLD step `G^2 = sigma(t)^2 - sigma(s)^2`; for VP the
    DDPM step `a = sqrt(1 - b)`, `G^2 = b`. Returns `(a, G^2)`, each of the shape of `t`."""
    (m_t, std_t), (m_s, std_s) = self.marginal_coefficients(t), self.marginal_coefficients(s)
    a = m_t / m_s
    return a, jnp.maximum(jnp.square(std_t) - jnp.square(a * std_s), 0.0)

  def forward_step(self, x, t, t_next):
    """`(f, G)` of the forward step from `t_next` up to `t`, `x_t = x_{t_next} + f + G z`:
    `f = (a - 1) x`, from `transition` (Song et al. 2021, Eq. 45-46, App. E, on any grid)."""
    a, var = self.transition(t, t_next)
    return (per_example(a, x) - 1.0) * x, jnp.sqrt(var)

  def ancestral_step(self, x, score, t, t_next, z):
    """One ancestral step from `t` down to `t_next` (Song et al. 2021, Eq. 47, App. F), given the score
    at `(x, t)`: the mean of `q(x_{t_next} | x_t, x_0)` at Tweedie's `x_0`, `(x + G^2 s) / a`, plus noise of
    variance `ancestral_variance`: VE `x + (s^2 - s'^2) score` and `s'^2 (s^2 - s'^2) / s^2` (SMLD),
    VP `(x + b score) / sqrt(1 - b)` and `b` (Ho et al. 2020, Eq. 11)."""
    a, var = self.transition(t, t_next)
    if self.ancestral_variance == "posterior":
      std_next, std = self.marginal_coefficients(t_next)[1], self.marginal_coefficients(t)[1]
      noise_var = var * jnp.square(std_next / std)
    else:
      noise_var = var
    return (x + per_example(var, x) * score) / per_example(a, x) + per_example(jnp.sqrt(noise_var), x) * z

  def tweedie_denoise(self, score_fn, x, t):
    """Tweedie's formula `E[x_0 | x_t] = (x_t + std(t)^2 s(x_t, t)) / m(t)` (Efron 2011): removes the
    noise `std(t)` left at the last time; for VE (`m = 1`) it is `x + sigma^2 s`."""
    scale, std = self.marginal_coefficients(t)
    return (x + per_example(jnp.square(std), x) * score_fn(x, t)) / per_example(scale, x)

  def noise_level_score(self, score_fn):
    """`score(x_hat, sigma)`: the score of `x_hat = x / m(t) = x_0 + sigma z` (Karras et al. Eq. 4),
    `grad_{x_hat} log p(x_hat; sigma) = m(t) s(m(t) x_hat, t)` at `t = time_of_noise_level(sigma)`: every
    SDE as the VE one, for the samplers that work on noise levels (EDM, annealed Langevin, CAS)."""

    def score(x_hat, sigma):
      t = self.time_of_noise_level(sigma)
      scale = per_example(self.marginal_coefficients(t)[0], x_hat)
      return scale * score_fn(scale * x_hat, t)

    return score

  def run_in_noise_levels(self, sampler, score_fn, x_init, sigma_end, denoised):
    """Run `sampler(score, x_hat) -> x_hat`, written for the VE variables `x_hat = x / m(t) = x_0 + sigma z`
    and a score `score(x_hat, sigma)` (EDM, annealed Langevin, CAS), on this SDE: from `x_init ~ p_T`,
    through `noise_level_score`. Returns the sample in `x`: `x_hat` itself where it is denoised (then
    `E[x_0 | x]`, in which `m` plays no part), else `m(t) x_hat` at its last level `sigma_end`."""
    x_hat = sampler(self.noise_level_score(score_fn), x_init / self.marginal_coefficients(jnp.asarray(self.T))[0])
    if denoised:
      return x_hat
    return self.marginal_coefficients(self.time_of_noise_level(jnp.asarray(sigma_end)))[0] * x_hat

  # --------------------------------------------------------------- Langevin step sizes
  def langevin_alpha(self, t, t_prev):
    """score_sde's `alpha_i`: the fraction `a^2 = m(t_prev)^2 / m(t)^2` of the signal's power that the
    chain keeps in its step from `t` up to `t_prev`: 1 for VE, `1 - beta_i` for VP's DDPM chain. Taken on
    the sampler's own grid, it lies in (0, 1] for every number of steps."""
    return jnp.square(self.transition(t_prev, t)[0])

  def langevin_step_size(self, t, t_prev, snr, noise, score):
    """The Langevin corrector's step (Song et al. 2021, Algorithm 4-5): `eps = 2 alpha (snr ||z|| / ||s||)^2`,
    norms averaged over the batch; `noise` and `score` are the arrays `z` and `s`."""
    return 2.0 * self.langevin_alpha(t, t_prev) * jnp.square(snr * _mean_norm(noise) / _mean_norm(score))

  def ald_step_size(self, t, t_prev, snr):
    """The annealed Langevin corrector's step (score_sde's `AnnealedLangevinDynamics`):
    `eps = 2 alpha (snr std(t))^2`, proportional to the noise variance as in Song & Ermon 2019."""
    return 2.0 * self.langevin_alpha(t, t_prev) * jnp.square(snr * self.marginal_coefficients(t)[1])

  # --------------------------------------------------------------- reverse time
  def reverse(self, score_fn, probability_flow: bool = False):
    """The reverse-time SDE, or with `probability_flow` the ODE with the same marginals.

    drift = f(x, t) - c g(t)^2 score_fn(x, t), c = 1 (SDE) or 1/2 (ODE); diffusion = g(t) or 0.
    """
    return ReverseSDE(self, score_fn, probability_flow)

  def probability_flow_drift(self, score_fn):
    """The probability-flow ODE `dx/dt = f(x, t) - (1/2) g(t)^2 score_fn(x, t)` (Song et al. 2021,
    Eq. 13) as `drift(x, t)` with a scalar `t`: its trajectories carry `p_T` to `p_0` with the same
    marginals `p_t` as the forward SDE (when `score_fn` is the true score)."""
    reverse = self.reverse(score_fn, probability_flow=True)

    def drift(x, t):
      return reverse.sde(x, jnp.full((x.shape[0],), t, x.dtype))[0]

    return drift


class ReverseSDE:
  def __init__(self, forward: SDE, score_fn, probability_flow: bool):
    self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
    self.N, self.T = forward.N, forward.T

  def sde(self, x, t):
    drift, diffusion = self.forward.sde(x, t)
    c = 0.5 if self.probability_flow else 1.0
    drift = drift - c * per_example(jnp.square(diffusion), x) * self.score_fn(x, t)
    return drift, (jnp.zeros_like(diffusion) if self.probability_flow else diffusion)


def _gaussian_logp(z, std):
  d = z[0].size
  return -0.5 * d * jnp.log(2 * jnp.pi * std**2) - 0.5 * jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=1) / std**2


@register_sde("vesde")
class VESDE(SDE):
  """Variance exploding: `dx = sqrt(d sigma^2(t)/dt) dw`, `sigma(t) = sigma_min (sigma_max/sigma_min)^t`
  (the continuous limit of SMLD/NCSN)."""

  has_discrete_chain = True

  def __init__(self, sigma_min, sigma_max, N):
    super().__init__(N)
    self.sigma_min, self.sigma_max = sigma_min, sigma_max

  def sde(self, x, t):
    sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
    diffusion = sigma * jnp.sqrt(2 * (jnp.log(self.sigma_max) - jnp.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_prob(self, x0, t):
    return x0, self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def time_of_noise_level(self, sigma, xp=jnp):
    """`t = log(sigma / sigma_min) / log(sigma_max / sigma_min)`."""
    return xp.log(xp.asarray(sigma) / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

  def score_sde_label(self, t, continuous: bool):
    """Continuous: the noise level `sigma(t)` itself (NCSN++ cont. embeds `log sigma` and divides by `sigma`).
    Discrete: the level's index in SMLD's decreasing order `sigma_max .. sigma_min`, `round((T - t)(N - 1))`,
    which is `N - 1 - i` at `discrete_times[i] = i / (N - 1)`."""
    if continuous:
      return self.marginal_coefficients(t)[1]
    return jnp.round((self.T - t) * (self.N - 1))

  def prior_sample(self, rng, shape):
    return self.sigma_max * jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _gaussian_logp(z, self.sigma_max)

  def _chain_sigmas(self):
    """SMLD's geometric levels from `sigma_min` to `sigma_max` (Song & Ermon 2019), where
    `t_i = i / (N - 1)`; the chain `x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z`."""
    return np.geomspace(self.sigma_min, self.sigma_max, self.N)


@register_sde("vpsde")
class VPSDE(SDE):
  """Variance preserving: `dx = -(1/2) beta(t) x dt + sqrt(beta(t)) dw`, `beta(t) = beta_min + t (beta_max - beta_min)`
  (the continuous limit of DDPM)."""

  ancestral_variance = "forward"
  has_discrete_chain = True

  def __init__(self, beta_min, beta_max, N):
    super().__init__(N)
    self.beta_0, self.beta_1 = beta_min, beta_max

  @property
  def discrete_betas(self):
    """DDPM's `beta_i = beta_min / N + i / (N - 1) (beta_max - beta_min) / N`, shape `(N,)`: the chain
    `x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`."""
    return jnp.asarray(np.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N), jnp.float32)

  def beta(self, t):
    return self.beta_0 + t * (self.beta_1 - self.beta_0)

  def log_mean_coeff(self, t):
    """`log m(t) = -(1/2) int_0^t beta = -(1/4) t^2 (beta_1 - beta_0) - (1/2) t beta_0`."""
    return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

  def sde(self, x, t):
    beta = self.beta(t)
    return -0.5 * per_example(beta, x) * x, jnp.sqrt(beta)

  def marginal_prob(self, x0, t):
    lmc = self.log_mean_coeff(t)  # std^2 = 1 - m^2, as -expm1: exact where m is close to 1
    return per_example(jnp.exp(lmc), x0) * x0, jnp.sqrt(-jnp.expm1(2.0 * lmc))

  def _time_of_log_mean(self, integral, xp):
    """The `t` with `int_0^t beta = integral`: the positive root of `beta_0 t + (beta_1 - beta_0) t^2 / 2`,
    written without cancellation."""
    beta_0, beta_d = self.beta_0, self.beta_1 - self.beta_0
    return 2.0 * integral / (beta_0 + xp.sqrt(beta_0**2 + 2.0 * beta_d * integral))

  def time_of_noise_level(self, sigma, xp=jnp):
    """`m = 1 / sqrt(1 + sigma^2)` (`std^2 = 1 - m^2`), so `int_0^t beta = -2 log m = log(1 + sigma^2)`."""
    return self._time_of_log_mean(xp.log1p(xp.square(xp.asarray(sigma))), xp)

  def score_sde_label(self, t, continuous: bool):
    """Continuous: `999 t` (score_sde's time label, whatever N). Discrete: the index `i` of DDPM's level
    (`level_index`), the label that level was trained with. score_sde itself feeds `(N - 1) t`, because its
    chain puts level `i` at `t = i / (N - 1)`; here level `i` lies at `discrete_times[i]`, the time of its
    own noise level, so the index is what keeps label and noise together."""
    if continuous:
      return 999.0 * t
    return self.level_index(t)

  def prior_sample(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _gaussian_logp(z, 1.0)

  def _chain_sigmas(self):
    """DDPM's levels: `sigma_i = sqrt((1 - alpha_bar_i) / alpha_bar_i)`, `alpha_bar_i = prod_{j <= i} (1 - beta_j)`
    (Ho et al. 2020), computed in float64 as `sqrt(expm1(-log alpha_bar_i))`."""
    if self.beta_1 >= self.N:
      raise ValueError(
        f"DDPM's chain needs beta_i = beta(t) / N < 1: beta_max={self.beta_1} with N={self.N} "
        f"levels has no chain; raise model.num_scales above {self.beta_1:g}"
      )
    betas = np.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N)
    return np.sqrt(np.expm1(-np.cumsum(np.log1p(-betas))))


@register_sde("subvpsde")
class SubVPSDE(VPSDE):
  """sub-VP: `dx = -(1/2) beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw`; its marginal
  variance `(1 - m(t)^2)^2` stays below the VP one (Song et al. 2021, Eq. 29). It has no discrete chain."""

  has_discrete_chain = False
  _chain_sigmas = SDE._chain_sigmas

  def score_sde_label(self, t, continuous: bool):
    """`999 t`: score_sde treats every sub-VP network as continuous."""
    return 999.0 * t

  def sde(self, x, t):
    drift, _ = super().sde(x, t)
    discount = -jnp.expm1(4.0 * self.log_mean_coeff(t))  # 1 - exp(-2 int_0^t beta)
    return drift, jnp.sqrt(self.beta(t) * discount)

  def marginal_prob(self, x0, t):
    lmc = self.log_mean_coeff(t)
    return per_example(jnp.exp(lmc), x0) * x0, -jnp.expm1(2.0 * lmc)

  def time_of_noise_level(self, sigma, xp=jnp):
    """`std = 1 - m^2` gives `m = 2 / (sigma + sqrt(sigma^2 + 4))`, so `int_0^t beta = -2 log m
    = 2 asinh(sigma / 2)` (the form exact for small `sigma`)."""
    return self._time_of_log_mean(2.0 * xp.arcsinh(0.5 * xp.asarray(sigma)), xp)


def get_sde(name, **params):
  """The SDE registered as `name` (`training.sde`), built from the `params` its constructor names
  (`sigma_min`, `sigma_max`, `beta_min`, `beta_max`, `N`), all of them checked (a config's noise ranges are
  valid whichever SDE it trains)."""
  cls = _SDES.get(name)
  names = inspect.signature(cls.__init__).parameters
  _check_sde_params(**params)
  return cls(**{k: v for k, v in params.items() if k in names})


def _is_positive(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_sde_params(N, **noise_range):
  """`ValueError` naming the config field (score_sde's names) unless `N` is a positive integer and each noise
  range (`sigma_min < sigma_max`, `beta_min < beta_max`) is finite, positive and increasing."""
  if not (isinstance(N, numbers.Integral) and not isinstance(N, bool) and N >= 1):
    raise ValueError(f"model.num_scales must be a positive integer, got {N!r}")
  for name, value in noise_range.items():
    if not _is_positive(value):
      raise ValueError(f"model.{name} must be a finite number > 0, got {value!r}")
  for low, high in (("sigma_min", "sigma_max"), ("beta_min", "beta_max")):
    if low in noise_range and not noise_range[low] < noise_range[high]:
      raise ValueError(f"need 0 < model.{low} < model.{high}, got {noise_range[low]} and {noise_range[high]}")
