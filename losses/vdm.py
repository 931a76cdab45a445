"""The continuous-time variational bound of Variational Diffusion Models (Kingma et al. 2021, "Variational Diffusion
Models", Sec. 3.5, 5 and App. E; google-research/vdm `model_vdm.py`), over a noise prediction model and a log-SNR
schedule `gamma(t)` (schedules.py):

    -log p(x) <= L(x) = L_recon + L_prior + L_diff,
    L_recon = E_{q(z_0|x)} [-log p(x | z_0)],   L_prior = KL(q(z_1 | x) || N(0, I)),
    L_diff  = (1/2) E_{t ~ U(0,1), eps} [gamma'(t) || eps - eps_hat(z_t, gamma_t) ||^2]
            = (1/2) E_t [-SNR'(t) || x - x_hat(z_t, t) ||^2]          (VDM, Eq. 17),

`z_t = alpha_t x + sigma_t eps`, `alpha_t^2 = sigmoid(-gamma_t)`, `sigma_t^2 = sigmoid(gamma_t)`. `L_diff` is
`(1/2) int_{SNR_min}^{SNR_max} E ||x - x_hat(z_v, v)||^2 dv` in the SNR `v` itself: given a denoiser of `(z, SNR)`,
it depends on the schedule through its endpoints only (VDM, Sec. 5.1), while the variance of its one-sample estimator
depends on the whole shape (Sec. 5.3). `p(x | z_0)` is VDM's decoder: a categorical over the data's levels per pixel
for discrete data, which makes `L` a code length for the data themselves (no dequantization), or a Gaussian for
continuous data. The losses never see a network: the noise prediction model is `eps_fn(z, t, gamma)`; `Denoiser`
pairs it with its schedule, and `score_denoiser` makes one of a `score_fn` and its SDE.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.losses.registry import register_loss
from scorejax.schedules import SDESchedule, alpha_sigma, gamma_and_slope, linear_gamma
from scorejax.sde_lib import per_example

SCHEDULE_GRADIENTS = ("vlb", "variance")


class Denoiser(NamedTuple):
  """VDM's model: `eps_fn(z, t, gamma) -> eps_hat`, the noise in `z = alpha x + sigma eps` (variance-preserving
  variables) at time `t` and log-SNR `gamma = gamma(t)`, and the schedule `gamma(t)` on `t in [0, 1]`. A learned
  schedule bound to its parameters (models/vdm.py `schedule_fn`) makes the bound a function of them."""

  eps_fn: Callable
  gamma: Callable


SCORE_TIMES = ("sde", "log_snr")


def score_denoiser(score_fn, sde, t_min, t_max=None, times="sde"):
  """The `Denoiser` of a `score_fn(x, t)` of any score SDE over its times `[t_min, t_max]` (`t_max`: `sde.T`). The
  SDE's own variables are `x_t = m x + std eps = (m / alpha) z_t` (the same log-SNR, so `std / m = sigma / alpha`),
  and `eps_hat = -std(t) s(x_t, t)` (Song et al. 2021, Eq. 4; Kingma et al. 2021, Sec. 5.1: models of the same SNR
  are one model).

  `times` is the schedule the bound's `u in [0, 1]` runs on, between the same two log-SNRs `gamma(t_min)` and
  `gamma(t_max)`: 'sde', the SDE's own times rescaled (`schedules.SDESchedule`), or 'log_snr', uniform in log-SNR
  (`schedules.linear_gamma`; the network is asked at `t = sde.time_of_noise_level(exp(gamma / 2))`). Both give the
  same bound, which depends on the schedule's endpoints only (VDM, Sec. 5.1); the variance of its one-sample
  estimator does not (Sec. 5.3). The VP SDE's own times put a weight `gamma'(t) ~ 1 / t` on the first of them,
  uniform log-SNR a constant one."""
  if times not in SCORE_TIMES:
    raise ValueError(f"unknown times {times!r} for the bound of a score model; valid choices: {', '.join(SCORE_TIMES)}")
  schedule = SDESchedule(sde, t_min, sde.T if t_max is None else t_max)
  if times == "log_snr":
    ends = schedule(jnp.asarray([0.0, 1.0], jnp.float32))
    time_of = lambda u, gamma: sde.time_of_noise_level(jnp.exp(0.5 * gamma))
    schedule_fn = linear_gamma(ends[0], ends[1])
  else:
    time_of = lambda u, gamma: schedule.time(u)
    schedule_fn = schedule

  def eps_fn(z, u, gamma):
    t = time_of(u, gamma)
    m, std = sde.marginal_coefficients(t)
    alpha, _ = alpha_sigma(gamma)
    return -per_example(std, z) * score_fn(per_example(m / alpha, z) * z, t)

  return Denoiser(eps_fn, schedule_fn)


def sample_times(rng, n, low_discrepancy=True):
  """`n` times in `[0, 1)`: uniform, or VDM's low-discrepancy sampler `t_i = (u + i / n) mod 1` with one `u ~ U(0, 1)`
  (Kingma et al. 2021, App. I.1; `antithetic_time_sampling`): each `t_i` is uniform, so the bound's estimate stays
  unbiased, and the batch covers `[0, 1)` evenly, which lowers the variance of its mean."""
  if low_discrepancy:
    return jnp.mod(jax.random.uniform(rng, ()) + jnp.arange(n, dtype=jnp.float32) / n, 1.0)
  return jax.random.uniform(rng, (n,))


def _sum(v):
  return jnp.sum(jnp.reshape(v, (v.shape[0], -1)), axis=-1)


def prior_kl(x, gamma_1):
  """`KL(q(z_1 | x) || N(0, I)) = (1/2) sum_i (alpha_1^2 x_i^2 + sigma_1^2 - 1 - log sigma_1^2)`
  `= (1/2) sum_i (alpha_1^2 (x_i^2 - 1) + softplus(-gamma_1))` nats per example (VDM, Eq. 9, `loss_klz`)."""
  return 0.5 * _sum(jax.nn.sigmoid(-gamma_1) * (jnp.square(x) - 1.0) + jax.nn.softplus(-gamma_1))


def level_grid(levels, centered=False):
  """The values of `levels` equally spaced data levels in model space: `k / (levels - 1)` in `[0, 1]`, or
  `2 k / (levels - 1) - 1` (`centered`): pixel counts `k` as `datasets.preprocess` scales them (8-bit images:
  256 levels; the digits: 17)."""
  grid = jnp.arange(levels, dtype=jnp.float32) / (levels - 1)
  return 2.0 * grid - 1.0 if centered else grid


def decoder_log_probs(z_hat, gamma_0, grid):
  """VDM's discrete decoder (Kingma et al. 2021, App. C; `EncDec.decode`): for each dimension, a categorical over the
  `grid` values `x_k`, `log p(x_k | z_0) = log softmax_k(-(z_hat - x_k)^2 / (2 exp(gamma_0)))` with `z_hat = z_0 /
  alpha_0`: the posterior over the levels of one dimension of `z_hat = x + exp(gamma_0 / 2) eps` with uniform levels.
  Returns `(..., levels)`."""
  return jax.nn.log_softmax(-0.5 * jnp.square(z_hat[..., None] - grid) * jnp.exp(-gamma_0), axis=-1)


def discrete_reconstruction(x, z_hat, gamma_0, grid):
  """`-log p(x | z_0) = -sum_i log p(x_i | z_0)` nats per example under `decoder_log_probs`, `x` on `grid`
  (each value's nearest level is its level)."""
  levels = jnp.argmin(jnp.abs(x[..., None] - grid), axis=-1)
  log_p = jnp.take_along_axis(decoder_log_probs(z_hat, gamma_0, grid), levels[..., None], axis=-1)[..., 0]
  return -_sum(log_p)


def gaussian_reconstruction(x, z_hat, gamma_0):
  """`-log N(x; z_hat, exp(gamma_0) I)` nats per example: the decoder of continuous data, the limit of the discrete
  one as the levels become dense (a density, not a probability)."""
  return 0.5 * _sum(jnp.square(x - z_hat) * jnp.exp(-gamma_0) + gamma_0 + math.log(2.0 * math.pi))


def diffusion_integrand(eps_fn, x, t, eps, gamma, slope):
  """`(1/2) gamma'(t) || eps - eps_hat(z_t, t, gamma_t) ||^2`, `z_t = alpha_t x + sigma_t eps`, nats per example:
  the one-sample estimate of `L_diff` at `t` (VDM, Eq. 17)."""
  alpha, sigma = alpha_sigma(gamma)
  z = per_example(alpha, x) * x + per_example(sigma, x) * eps
  return 0.5 * slope * _sum(jnp.square(eps - eps_fn(z, t, gamma)))


def with_squared_gradient(fn, *args):
  """`L = fn(*args)`, a per-example loss `(batch,)`, whose cotangent reaches `args` multiplied by `2 L_i` per example
  and everything else `fn` uses (what it closes over) unchanged. With `mean_i L_i` the loss, the parameters upstream
  of `args` get the gradient of `mean_i L_i^2`, the estimator's second moment, and those closed over the gradient
  of `mean_i L_i`: VDM's variance minimisation (Kingma et al. 2021, Sec. 5.3: `d E[L^2] / d eta = E[2 L dL / d eta]`),
  in the one backward pass of the loss. Exact when example `i` of `args` reaches only `L_i` (networks without
  batch statistics)."""
  converted, consts = jax.closure_convert(fn, *args)
  return _scaled_call(converted, len(args), tuple(args), tuple(consts))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _scaled_call(fn, num_args, args, consts):
  return fn(*args, *consts)


def _scaled_fwd(fn, num_args, args, consts):
  out, pullback = jax.vjp(fn, *args, *consts)
  return out, (out, pullback)


def _scaled_bwd(fn, num_args, residuals, cotangent):
  out, pullback = residuals
  grads = pullback(cotangent)
  scaled = tuple(2.0 * out * g for g in grads[:num_args])
  return scaled, tuple(grads[num_args:])


_scaled_call.defvjp(_scaled_fwd, _scaled_bwd)


class BoundTerms(NamedTuple):
  """The three terms of the bound, nats per example `(batch,)`."""

  recon: jnp.ndarray
  prior: jnp.ndarray
  diffusion: jnp.ndarray

  def total(self):
    return self.recon + self.prior + self.diffusion


def bound_terms(denoiser, x, rng, grid=None, low_discrepancy=True, schedule_gradient="vlb"):
  """One-sample estimates of `L_recon`, `L_prior` and `L_diff` for each example of `x` (model space), nats (VDM,
  Eq. 8-9, 17; `VDM.__call__`). `grid`: the data's levels (`level_grid`) for the discrete decoder, or None for
  continuous data (`gaussian_reconstruction`). Times from `sample_times`.

  `schedule_gradient='variance'`: the schedule's shape `s(t) = (gamma(t) - gamma(0)) / (gamma(1) - gamma(0))` gets the
  gradient of the second moment of the diffusion term, in bits per dimension (`with_squared_gradient`), and its
  endpoints `gamma(0)`, `gamma(1)` that of the bound, on which they act (Kingma et al. 2021, Sec. 5.3); 'vlb': every
  parameter the gradient of the bound (google-research/vdm's code)."""
  if schedule_gradient not in SCHEDULE_GRADIENTS:
    raise ValueError(f"unknown schedule gradient {schedule_gradient!r}; valid choices: {', '.join(SCHEDULE_GRADIENTS)}")
  rng_t, rng_eps, rng_0 = jax.random.split(rng, 3)
  gamma_0, gamma_1 = denoiser.gamma(jnp.asarray([0.0, 1.0], jnp.float32))
  # Reconstruction: z_0 / alpha_0 = x + exp(gamma_0 / 2) eps_0.
  z_hat = x + jnp.exp(0.5 * gamma_0) * jax.random.normal(rng_0, x.shape, x.dtype)
  if grid is None:
    recon = gaussian_reconstruction(x, z_hat, gamma_0)
  else:
    recon = discrete_reconstruction(x, z_hat, gamma_0, grid)
  t = sample_times(rng_t, x.shape[0], low_discrepancy)
  eps = jax.random.normal(rng_eps, x.shape, x.dtype)
  gamma, slope = gamma_and_slope(denoiser.gamma, t)
  if schedule_gradient == "variance":
    nats_per_bit = math.prod(x.shape[1:]) * math.log(2.0)
    width = gamma_1 - gamma_0

    def diffusion_bits(shape, shape_slope):
      integrand = diffusion_integrand(denoiser.eps_fn, x, t, eps, gamma_0 + width * shape, width * shape_slope)
      return integrand / nats_per_bit

    diffusion = nats_per_bit * with_squared_gradient(diffusion_bits, (gamma - gamma_0) / width, slope / width)
  else:
    diffusion = diffusion_integrand(denoiser.eps_fn, x, t, eps, gamma, slope)
  return BoundTerms(recon, prior_kl(x, gamma_1), diffusion)


def bits_per_dim(nats, x):
  """Nats per example to bits per dimension of `x`'s examples: `nats / (D ln 2)`."""
  return nats / (math.prod(x.shape[1:]) * math.log(2.0))


def vdm_loss(denoiser, x, rng, grid=None, low_discrepancy=True, schedule_gradient="vlb"):
  """The bound in bits per dimension averaged over the batch (VDM's training loss, `bpd`): `bound_terms`, summed."""
  terms = bound_terms(denoiser, x, rng, grid, low_discrepancy, schedule_gradient)
  return jnp.mean(bits_per_dim(terms.total(), x))


class BoundResult(NamedTuple):
  mean: float  # the bound in bits per dimension, over every example and repeat
  recon: float  # its three terms, bits per dimension
  prior: float
  diffusion: float
  per_example: np.ndarray  # (num_repeats * N,) bits per dimension


def evaluate_bound(denoiser_of, params, counts, rng, batch_size=None, num_repeats=1, levels=256, centered=False):
  """Bits per dimension of integer data `counts` in `{0..levels-1}` by the bound with the discrete decoder: a code
  length for the data themselves, no dequantization (Kingma et al. 2021, Sec. 6; beside the probability-flow bits/dim
  of dequantized data, samplers/likelihood.py `evaluate_bpd`). The data are scaled as `datasets.preprocess` does
  (`k / (levels - 1)`, `centered`: `2 k / (levels - 1) - 1`); `denoiser_of(params)` is the model's `Denoiser`
  (a learned schedule's, or `score_denoiser` of a score model). `levels=0`: `counts` are continuous data in model
  space, bounded with the Gaussian decoder (`gaussian_reconstruction`): a bound on `-log p(x)`, a density, in bits
  per dimension. Each of `num_repeats` passes over the data (in `batch_size` batches, one compiled program per batch
  shape) draws fresh times and noise, low-discrepancy within a batch: the mean is an unbiased estimate of the bound.
  Returns a `BoundResult`."""
  if levels != 0 and not (isinstance(levels, (int, np.integer)) and levels >= 2):
    raise ValueError(f"the data's number of levels must be an integer >= 2 (0: continuous data), got {levels!r}")
  grid = level_grid(levels, centered) if levels else None

  def bits(p, k, key):
    x = k if grid is None else grid[k]
    return [bits_per_dim(v, x) for v in bound_terms(denoiser_of(p), x, key, grid)]

  program = jax.jit(bits)
  counts = np.asarray(counts, np.float32 if grid is None else np.int32)
  size = batch_size or counts.shape[0]
  parts = []
  for repeat in range(num_repeats):
    for i, lo in enumerate(range(0, counts.shape[0], size)):
      key = jax.random.fold_in(jax.random.fold_in(rng, repeat), i)
      parts.append(program(params, jnp.asarray(counts[lo : lo + size]), key))
  recon, prior, diffusion = (np.concatenate([np.asarray(p[j], np.float64) for p in parts]) for j in range(3))
  total = recon + prior + diffusion
  return BoundResult(float(total.mean()), float(recon.mean()), float(prior.mean()), float(diffusion.mean()), total)


@register_loss("vdm")
def build_vdm_loss(sde, *, eps, data_levels, centered, low_discrepancy, schedule_gradient):
  """VDM's bound (`training.loss='vdm'`) as `loss(model, x, rng)` in bits per dimension, `model` a `Denoiser` (a
  learned schedule: its parameters in the model's tree, models/vdm.py) or a `score_fn(x, t)` of `sde`, whose own
  schedule over `[eps, T]` is then the bound's (`score_denoiser`). `data_levels`: the number of levels of the data
  (the discrete decoder on `level_grid(data_levels, centered)`), or 0 for continuous data. `low_discrepancy`:
  `sample_times`; `schedule_gradient`: 'vlb' or 'variance' (`bound_terms`)."""
  if not 0 <= eps < sde.T:
    raise ValueError(f"training.eps must be a finite number in [0, {sde.T:g}), got {eps!r}")
  if not float(sde.noise_level(jnp.float32(eps))) > 0:  # VP and sub-VP start noiseless: gamma(0) = -inf
    raise ValueError(f"training.eps must be > 0 for {type(sde).__name__}: its noise level at t = {eps!r} is 0")
  if schedule_gradient not in SCHEDULE_GRADIENTS:
    raise ValueError(
      f"unknown training.schedule_gradient {schedule_gradient!r}; valid choices: {', '.join(SCHEDULE_GRADIENTS)}"
    )
  if not isinstance(low_discrepancy, (bool, np.bool_)):
    raise ValueError(f"training.low_discrepancy must be True or False, got {low_discrepancy!r}")
  if data_levels != 0 and not (isinstance(data_levels, int) and data_levels >= 2):
    raise ValueError(f"the data's number of levels must be an integer >= 2 (0: continuous data), got {data_levels!r}")
  grid = level_grid(data_levels, centered) if data_levels else None

  def loss_fn(model, x, rng):
    denoiser = model if isinstance(model, Denoiser) else score_denoiser(model, sde, eps)
    return vdm_loss(denoiser, x, rng, grid, low_discrepancy, schedule_gradient)

  return loss_fn
