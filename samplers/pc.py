"""Predictor-corrector samplers (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", Sec. 4.2, Algorithms 1-3 and App. G).

On the times `t_0 > t_1 > ... > t_K`, a predictor takes one step of a solver of the reverse SDE (or of
the probability-flow ODE) from `t_k` to `t_{k+1}`; a corrector then takes `n_steps_each` steps of
score-based MCMC that leave `p_{t_{k+1}}` invariant. The times are `K = N` equal steps from `T` to `eps`
('uniform'), or the levels of the SDE's discrete chain ('discrete': the times where the network was
trained by the SMLD/DDPM losses). Predictors and correctors register by name (`sampling.predictor`,
`sampling.corrector`), as in score_sde, so a fork adds one with a decorator. Every formula that depends
on the SDE is the SDE's own (sde_lib).
"""

import jax
import jax.numpy as jnp

from scorejax.registry import Registry
from scorejax.samplers.registry import check_options, register_sampler
from scorejax.sde_lib import per_example

_PREDICTORS = Registry("sampling.predictor")
_CORRECTORS = Registry("sampling.corrector")
predictor_names, get_predictor = _PREDICTORS.names, _PREDICTORS.get
corrector_names, get_corrector = _CORRECTORS.names, _CORRECTORS.get
TIME_GRIDS = ("uniform", "discrete")


def register_predictor(name, score_calls=1):
  """Register `make(sde, probability_flow) -> update(score_fn, x, t, t_next, z) -> x`, one step from
  `t` to `t_next < t` (both of shape `(batch,)`) that calls the score `score_calls` times."""

  def wrap(make):
    make.score_calls = score_calls
    return _PREDICTORS.register(name)(make)

  return wrap


def register_corrector(name, score_calls=1, noise_draws=1):
  """Register `make(sde, snr) -> update(score_fn, x, t, t_prev, z) -> x`, one MCMC step at time `t`
  (reached from `t_prev > t` by the predictor) that calls the score `score_calls` times. `z` is a standard
  normal draw of the shape of `x`, or of shape `(noise_draws, *x.shape)` where a step needs more than one."""

  def wrap(make):
    make.score_calls, make.noise_draws = score_calls, noise_draws
    return _CORRECTORS.register(name)(make)

  return wrap


# ----------------------------------------------------------------------------- predictors


@register_predictor("none", score_calls=0)
def no_predictor(sde, probability_flow):
  """Corrector-only sampling: `x` is left as it is."""
  return lambda score_fn, x, t, t_next, z: x


@register_predictor("euler_maruyama")
def euler_maruyama(sde, probability_flow):
  """Euler-Maruyama on the reverse SDE (Eq. 6) or the probability-flow ODE (Eq. 13), `dt = t_next - t < 0`:
  `x <- x + [f(x, t) - c g(t)^2 s(x, t)] dt + g(t) sqrt(-dt) z`, `c = 1` (SDE) or `1/2` (ODE, no noise)."""

  def update(score_fn, x, t, t_next, z):
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    dt = t_next - t
    return x + drift * per_example(dt, x) + per_example(diffusion * jnp.sqrt(-dt), x) * z

  return update


@register_predictor("reverse_diffusion")
def reverse_diffusion(sde, probability_flow):
  """Reverse diffusion (Eq. 46): the forward step `x_t = x_{t_next} + f + G z` (`sde.forward_step`, the
  exact kernel) run backward, `x <- x - f + G^2 s(x, t) + G z`, or `x - f + (1/2) G^2 s(x, t)` on the
  probability flow."""
  c = 0.5 if probability_flow else 1.0

  def update(score_fn, x, t, t_next, z):
    f, G = sde.forward_step(x, t, t_next)
    G = per_example(G, x)
    x = x - f + c * jnp.square(G) * score_fn(x, t)
    return x if probability_flow else x + G * z

  return update


@register_predictor("ancestral_sampling")
def ancestral_sampling(sde, probability_flow):
  """Ancestral sampling from the chain's posterior `p(x_{t_next} | x_t)` (Eq. 47, App. F): `sde.ancestral_step`."""
  if probability_flow:
    raise ValueError(
      "sampling.predictor='ancestral_sampling' has no probability-flow form; use "
      "'euler_maruyama' or 'reverse_diffusion' with sampling.probability_flow=True"
    )
  return lambda score_fn, x, t, t_next, z: sde.ancestral_step(x, score_fn(x, t), t, t_next, z)


# ----------------------------------------------------------------------------- correctors


def langevin_update(x, score, z, step_size):
  """`x + eps s + sqrt(2 eps) z` with a per-example step `eps` of shape `(batch,)`."""
  return x + per_example(step_size, x) * score + per_example(jnp.sqrt(2.0 * step_size), x) * z


@register_corrector("none", score_calls=0)
def no_corrector(sde, snr):
  """Predictor-only sampling."""
  return lambda score_fn, x, t, t_prev, z: x


@register_corrector("langevin")
def langevin(sde, snr):
  """Langevin corrector (Song et al. 2021, Algorithms 4-5): `x <- x + eps s + sqrt(2 eps) z` with the
  step `eps` set by the signal-to-noise ratio `snr` (`sde.langevin_step_size`)."""

  def update(score_fn, x, t, t_prev, z):
    score = score_fn(x, t)
    return langevin_update(x, score, z, sde.langevin_step_size(t, t_prev, snr, z, score))

  return update


@register_corrector("ald")
def annealed_langevin(sde, snr):
  """Annealed Langevin corrector (score_sde's `AnnealedLangevinDynamics`): the step follows the noise
  level instead of the score's norm (`sde.ald_step_size`), as in Song & Ermon 2019."""

  def update(score_fn, x, t, t_prev, z):
    return langevin_update(x, score_fn(x, t), z, sde.ald_step_size(t, t_prev, snr))

  return update


@register_corrector("resample", noise_draws=2)
def resample(sde, snr):
  """RePaint's resampling (Lugmayr et al. 2022, Alg. 1, one jump of one step): back up to `t_prev` with
  the exact forward kernel, `x' = x + f + G z_1` (`sde.forward_step`), then down to `t` again with the
  ancestral step (`sde.ancestral_step`). Where the ancestral step is the true reverse kernel it leaves
  `p_t` invariant; under a constraint it lets the free part of `x` agree with the known part, which
  plain replacement at each step leaves out of step. `snr` is unused."""
  del snr

  def update(score_fn, x, t, t_prev, z):
    f, G = sde.forward_step(x, t_prev, t)
    x = x + f + per_example(G, x) * z[0]
    return sde.ancestral_step(x, score_fn(x, t_prev), t_prev, t, z[1])

  return update


# ----------------------------------------------------------------------------- the sampler


def pc_times(sde, time_grid, eps):
  """The predictor's times, decreasing: `N + 1` equal steps' ends from `T` to `eps` ('uniform'), or
  the `N` levels of the SDE's discrete chain from the noisiest down ('discrete', `N - 1` steps)."""
  if time_grid == "uniform":
    return jnp.linspace(sde.T, eps, sde.N + 1)
  if time_grid == "discrete":
    return sde.discrete_times[::-1]
  raise ValueError(f"unknown sampling.time_grid {time_grid!r}; valid choices: {', '.join(TIME_GRIDS)}")


def pc_nfe(predictor, corrector, num_steps, n_steps_each, noise_removal):
  """Score evaluations of `predictor_corrector`: `K (p + n_steps_each c) + [noise_removal]` for `K`
  steps, with `p`, `c` the predictor's and corrector's score calls per step (1, or 0 for 'none')."""
  p, c = get_predictor(predictor).score_calls, get_corrector(corrector).score_calls
  return num_steps * (p + n_steps_each * c) + int(noise_removal)


def predictor_corrector(
  score_fn,
  x_init,
  rng,
  sde,
  times,
  predictor,
  corrector,
  snr,
  n_steps_each,
  probability_flow,
  noise_removal,
  constraint=None,
):
  """Predictor-corrector sampling (Song et al. 2021, Algorithm 1) on the decreasing `times` (see
  `pc_times`): at each step the predictor from `t_k` to `t_{k+1}`, then `n_steps_each` corrector steps
  at `t_{k+1}`. With `noise_removal`, a last Tweedie step `(x + std^2 s(x, t_K)) / m(t_K)` returns
  `E[x_0 | x_{t_K}]`, for every SDE (one more score call); on the discrete chains it is their last step
  to data without noise (score_sde's `denoise`).

  `constraint(x, t, z) -> x`, if given, follows the predictor and every corrector step, with `t = t_{k+1}`
  and a fresh `z ~ N(0, I)`, and the Tweedie step with `t = 0`, `z = 0` (score_sde's inpainter and
  colorizer: control/constraints.py); what it means is not this sampler's business.

  One `lax.scan` over the steps (the corrector steps a `fori_loop` inside); call it inside `jax.jit`.
  Returns the final `x`. Step `i` draws its predictor's noise from `fold_in(fold_in(rng, i), 0)` and
  that of its corrector step `j` from `fold_in(fold_in(rng, i), j + 1)`; a constraint's noise after them
  from the `n_steps_each + 1` keys that follow.
  """
  predict = get_predictor(predictor)(sde, probability_flow)
  make_corrector = get_corrector(corrector)
  correct = make_corrector(sde, snr)
  times = jnp.asarray(times, x_init.dtype)
  batch = x_init.shape[0]
  num_steps = times.shape[0] - 1
  # Every step's keys, hashed before the loop in one vectorized call: inside it, each `fold_in` is a
  # threefry hash that XLA's CPU backend runs as a loop of ~90 scalar kernels, a fixed cost per step
  # (8% of an Euler-Maruyama step of 64 points, bench/samplers.py). The same keys, so the same noise and
  # samples (to float rounding, where XLA fuses the program differently).
  corrector_steps = n_steps_each if make_corrector.score_calls else 0
  num_keys = 1 + corrector_steps
  fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  all_keys = num_keys * (1 if constraint is None else 2)
  keys = jax.vmap(lambda i: fold(jax.random.fold_in(rng, i), jnp.arange(all_keys)))(jnp.arange(num_steps))
  draws = make_corrector.noise_draws

  def step(x, inputs):
    i, step_keys = inputs
    noise = lambda j, shape=x.shape: jax.random.normal(step_keys[j], shape, x.dtype)
    t, t_next = jnp.full((batch,), times[i]), jnp.full((batch,), times[i + 1])

    def constrained(x, j):
      return x if constraint is None else constraint(x, t_next, noise(num_keys + j))

    def corrector_step(j, x):
      z = noise(j + 1) if draws == 1 else noise(j + 1, (draws,) + x.shape)
      return constrained(correct(score_fn, x, t_next, t, z), j + 1)

    x = constrained(predict(score_fn, x, t, t_next, noise(0)), 0)
    return jax.lax.fori_loop(0, corrector_steps, corrector_step, x), None

  x, _ = jax.lax.scan(step, x_init, (jnp.arange(num_steps), keys))
  if noise_removal:
    x = sde.tweedie_denoise(score_fn, x, jnp.full((batch,), times[-1], x.dtype))
    if constraint is not None:
      x = constraint(x, jnp.zeros((batch,), x.dtype), jnp.zeros_like(x))
  return x


@register_sampler("pc")
def build_pc(sde, *, predictor, corrector, snr, n_steps_each, probability_flow, noise_removal, eps, time_grid):
  """Predictor-corrector sampling: `predictor`, `corrector`, `snr`, `n_steps_each`, `probability_flow`,
  `noise_removal`, `eps` (end time of the uniform grid), `time_grid` ('uniform' or 'discrete'). Its
  `sample_fn` also takes a `constraint` (see `predictor_corrector`)."""
  check_options(sde, snr=(snr, ">= 0"), n_steps_each=(n_steps_each, "non-negative integer"), eps=eps)
  get_predictor(predictor)(sde, probability_flow)  # invalid choices fail here
  get_corrector(corrector)
  times = pc_times(sde, time_grid, eps)
  options = dict(
    predictor=predictor,
    corrector=corrector,
    snr=snr,
    n_steps_each=n_steps_each,
    probability_flow=probability_flow,
    noise_removal=noise_removal,
  )
  nfe = pc_nfe(predictor, corrector, times.shape[0] - 1, n_steps_each, noise_removal)

  def sample_fn(score_fn, x_init, rng, constraint=None):
    return predictor_corrector(score_fn, x_init, rng, sde, times, **options, constraint=constraint), nfe

  return sample_fn
